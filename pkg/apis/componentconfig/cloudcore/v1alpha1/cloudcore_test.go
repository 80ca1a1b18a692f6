package v1alpha1

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-edge/tether/pkg/util/configload"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloudcore.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func marshal(t *testing.T, obj any) string {
	t.Helper()
	out, err := configload.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestDefaultsValidate(t *testing.T) {
	if errs := NewDefaultCloudCore().Validate(); len(errs) > 0 {
		t.Fatalf("defaults do not validate: %v", errs.ToAggregate())
	}
}

func TestRoundTrip(t *testing.T) {
	for name, obj := range map[string]*CloudCore{
		"default": NewDefaultCloudCore(),
		// The min config is a subset of the defaults, so it loads to them.
		"min": NewMinCloudCore(),
	} {
		t.Run(name, func(t *testing.T) {
			text := marshal(t, obj)
			if !strings.HasPrefix(text, "apiVersion: "+APIVersion+"\nkind: "+Kind+"\n") {
				t.Errorf("apiVersion and kind should lead the document:\n%s", text)
			}
			got, err := Load(writeConfig(t, text))
			if err != nil {
				t.Fatal(err)
			}
			if want := NewDefaultCloudCore(); !reflect.DeepEqual(got, want) {
				t.Errorf("loaded config differs from defaults\n got: %s\nwant: %s", marshal(t, got), marshal(t, want))
			}
		})
	}
	if min, def := marshal(t, NewMinCloudCore()), marshal(t, NewDefaultCloudCore()); len(min) >= len(def)/2 {
		t.Errorf("min config (%d bytes) should be much shorter than the default (%d bytes)", len(min), len(def))
	}
}

func TestLoadKubeEdgeConfig(t *testing.T) {
	c, err := Load("testdata/kubeedge-cloudcore.yaml")
	if err != nil {
		t.Fatal(err)
	}
	hub := c.Modules.CloudHub
	if hub.NodeLimit != 1000 || !reflect.DeepEqual(hub.AdvertiseAddress, []string{"192.168.1.10"}) {
		t.Errorf("cloudHub not read: nodeLimit=%d advertiseAddress=%v", hub.NodeLimit, hub.AdvertiseAddress)
	}
	if got := c.Modules.EdgeController.Load["UpdateRuleStatusWorkers"]; got != 4 {
		t.Errorf("edgeController.load keeps KubeEdge's keys: got %d", got)
	}
	if got := c.Modules.EdgeController.Buffer["updatePodStatus"]; got != 1024 {
		t.Errorf("edgeController.buffer.updatePodStatus = %d", got)
	}
	if c.KubeAPIConfig.KubeConfig != "/root/.kube/config" || c.KubeAPIConfig.QPS != 5000 {
		t.Errorf("kubeAPIConfig not read: %+v", c.KubeAPIConfig)
	}
}

func TestPartialFileKeepsDefaults(t *testing.T) {
	c, err := Load(writeConfig(t, `apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
modules:
  cloudHub:
    advertiseAddress: [10.0.0.1]
    websocket:
      port: 20000
  edgeController:
    buffer:
      podEvent: 7
  deviceController:   # all children commented out: keep the defaults
`))
	if err != nil {
		t.Fatal(err)
	}
	hub := c.Modules.CloudHub
	if hub.WebSocket.Port != 20000 || !hub.WebSocket.Enable || hub.WebSocket.Address != "0.0.0.0" {
		t.Errorf("websocket = %+v, want port overridden and the rest defaulted", *hub.WebSocket)
	}
	if hub.HTTPS.Port != DefaultHTTPSPort || hub.TLSCAFile != DefaultCAFile {
		t.Errorf("untouched cloudHub fields lost their defaults: %+v", hub)
	}
	if b := c.Modules.EdgeController.Buffer; b["podEvent"] != 7 || b["updatePodStatus"] != 1024 {
		t.Errorf("buffer keys should override one by one, got %v", b)
	}
	if c.Modules.DeviceController == nil || !c.Modules.DeviceController.Enable {
		t.Errorf("null section should keep its default, got %+v", c.Modules.DeviceController)
	}
}

func TestLoadErrors(t *testing.T) {
	const head = "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudCore\n"
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"port out of range", head + "modules: {cloudHub: {websocket: {port: 70000}}}",
			"modules.cloudHub.websocket.port: Invalid value: 70000: must be between 1 and 65535"},
		{"https port zero", head + "modules: {cloudHub: {https: {port: 0}}}",
			"modules.cloudHub.https.port: Invalid value: 0: must be between 1 and 65535"},
		{"port clash", head + "modules: {cloudHub: {https: {port: 10000}}}",
			"modules.cloudHub.https.port: Invalid value: 10000: already used by modules.cloudHub.websocket.port"},
		{"no advertiseAddress", head + "modules: {cloudHub: {advertiseAddress: []}}",
			"modules.cloudHub.advertiseAddress: Required value"},
		{"bad advertiseAddress", head + "modules: {cloudHub: {advertiseAddress: [10.0.0.300]}}",
			`modules.cloudHub.advertiseAddress[0]: Invalid value: "10.0.0.300": must be a valid IP address`},
		{"wildcard advertiseAddress", head + "modules: {cloudHub: {advertiseAddress: [0.0.0.0]}}",
			`modules.cloudHub.advertiseAddress[0]: Invalid value: "0.0.0.0": must be an address edge nodes can reach`},
		{"bad listen address", head + "modules: {cloudHub: {websocket: {address: localhost}}}",
			`modules.cloudHub.websocket.address: Invalid value: "localhost": must be a valid IP address`},
		{"no transport", head + "modules: {cloudHub: {websocket: {enable: false}}}",
			"websocket or quic must be enabled"},
		{"relative cert", head + "modules: {cloudHub: {tlsCertFile: certs/server.crt}}",
			`modules.cloudHub.tlsCertFile: Invalid value: "certs/server.crt": must be an absolute path`},
		{"cert is a directory", head + "modules: {cloudHub: {tlsCAFile: " + t.TempDir() + "}}",
			"is a directory, expected a file"},
		{"cert parent is a file", head + "modules: {cloudHub: {tlsCAKeyFile: " + notDir + "/ca.key}}",
			"parent " + notDir + " is not a directory"},
		{"bad unix socket", head + "modules: {cloudHub: {unixsocket: {address: /var/lib/kubeedge/kubeedge.sock}}}",
			"must be a unix:///absolute/path socket address"},
		{"bad dns name", head + "modules: {cloudHub: {dnsNames: [Cloud_Core]}}",
			`modules.cloudHub.dnsNames[0]: Invalid value: "Cloud_Core"`},
		{"zero interval", head + "modules: {cloudHub: {keepaliveInterval: 0}}",
			"modules.cloudHub.keepaliveInterval: Invalid value: 0: must be greater than 0"},
		{"zero buffer", head + "modules: {edgeController: {buffer: {podEvent: 0}}}",
			"modules.edgeController.buffer[podEvent]: Invalid value: 0: must be greater than 0"},
		{"bad content type", head + "kubeAPIConfig: {contentType: text/plain}",
			`kubeAPIConfig.contentType: Unsupported value: "text/plain"`},
		{"bad master", head + "kubeAPIConfig: {master: 'ftp://x'}",
			`kubeAPIConfig.master: Invalid value: "ftp://x": must be a URL with scheme https or http`},
		{"bad monitor address", head + "commonConfig: {monitorServer: {bindAddress: '9091'}}",
			`commonConfig.monitorServer.bindAddress: Invalid value: "9091": must be ip:port or :port`},
		{"monitor address by name", head + "commonConfig: {monitorServer: {bindAddress: 'localhost:9091'}}",
			"host must be an IP address or empty"},
		{"several errors", head + "modules: {cloudHub: {nodeLimit: -1, writeTimeout: 0}}",
			"[modules.cloudHub.nodeLimit: Invalid value: -1: must be greater than 0, modules.cloudHub.writeTimeout: Invalid value: 0"},
		{"authorization mode other than node", head + "modules: {cloudHub: {authorization: {enable: true, modes: [{node: {enable: true}}, {}]}}}",
			"modules.cloudHub.authorization.modes[1]: Invalid value: \"{}\": only the node mode is implemented"},
		{"unknown authorization mode", head + "modules: {cloudHub: {authorization: {enable: true, modes: [{rbac: {enable: true}}]}}}",
			`unknown field "modules.cloudHub.authorization.modes[0].rbac"`},
		{"unknown field", head + "modules: {cloudHub: {websocket: {prot: 1}}}",
			`unknown field "modules.cloudHub.websocket.prot"`},
		{"unknown module", head + "modules: {edgeMesh: {enable: true}}",
			`unknown field "modules.edgeMesh"`},
		{"case matters", head + "modules: {cloudhub: {enable: true}}",
			`unknown field "modules.cloudhub"`},
		{"wrong type", head + "modules: {cloudHub: {websocket: {port: ten}}}",
			"modules.cloudHub.websocket.port: Invalid type: got string, want int32"},
		{"duplicate key", head + "kind: CloudCore\n", `"kind" already set in map`},
		{"wrong kind", "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: EdgeCore\n",
			`kind: Unsupported value: "EdgeCore": supported values: "CloudCore"`},
		{"wrong apiVersion", "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: CloudCore\n",
			`apiVersion: Unsupported value: "edgecore.config.kubeedge.io/v1alpha2"`},
		{"missing kind", "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\n",
			`kind: Required value: must be "CloudCore"`},
		{"empty file", "# nothing\n", "file is empty"},
		{"not a mapping", "- a\n- b\n", "top level must be a mapping"},
		{"bad yaml", head + "modules: [\n", "parsing YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.want)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.HasPrefix(msg, "loading config "+path+": ") {
				t.Errorf("error should name the file: %s", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q\ndoes not contain %q", msg, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := Load(path)
	if err == nil || err.Error() != "loading config "+path+": no such file or directory" {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error should wrap fs.ErrNotExist: %v", err)
	}
}

func TestValidateNilSections(t *testing.T) {
	c := NewMinCloudCore()
	errs := c.Validate()
	got := errs.ToAggregate().Error()
	for _, want := range []string{"commonConfig: Required value", "modules.edgeController: Required value", "modules.cloudHub.quic: Required value"} {
		if !strings.Contains(got, want) {
			t.Errorf("validating a min config in code: %q lacks %q", got, want)
		}
	}
}

func TestEnabledModules(t *testing.T) {
	c := NewDefaultCloudCore()
	c.Modules.DeviceController.Enable = false
	if got, want := c.EnabledModules(), []string{"cloudHub", "edgeController", "syncController"}; !reflect.DeepEqual(got, want) {
		t.Errorf("EnabledModules() = %v, want %v", got, want)
	}
}
