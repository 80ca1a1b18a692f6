package v1alpha2

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/util/configload"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgecore.yaml")
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

func TestDefaults(t *testing.T) {
	c := NewDefaultEdgeCore()
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("defaults do not validate: %v", errs.ToAggregate())
	}
	host, _ := os.Hostname()
	if got := c.NodeName(); got != strings.ToLower(host) {
		t.Errorf("node name = %q, want lower-cased hostname %q", got, host)
	}
	e := c.Modules.Edged
	if e.PodSandboxImage != "tether/pause:3.10" || e.TailoredKubeletConfig.ContainerRuntimeEndpoint != "unix:///run/containerd/containerd.sock" {
		t.Errorf("unexpected edged defaults: %+v %+v", e, e.TailoredKubeletConfig)
	}
	if c.Modules.EventBus.MQTTMode != MQTTModeExternal {
		t.Errorf("mqttMode default = %d, want external", c.Modules.EventBus.MQTTMode)
	}
}

func TestRoundTrip(t *testing.T) {
	for name, obj := range map[string]*EdgeCore{
		"default": NewDefaultEdgeCore(),
		// The min config is a subset of the defaults, so it loads to them.
		"min": NewMinEdgeCore(),
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
			if want := NewDefaultEdgeCore(); !reflect.DeepEqual(got, want) {
				t.Errorf("loaded config differs from defaults\n got: %s\nwant: %s", marshal(t, got), marshal(t, want))
			}
		})
	}
	min := marshal(t, NewMinEdgeCore())
	for _, absent := range []string{"metaManager:", "serviceBus:", "eventBusTLS:"} {
		if strings.Contains(min, absent) {
			t.Errorf("min config should leave out %s:\n%s", absent, min)
		}
	}
}

// A non-default value must survive print-and-reload, zero values included:
// nothing may be dropped as "empty" and then silently re-defaulted.
func TestNonDefaultValuesRoundTrip(t *testing.T) {
	c := NewDefaultEdgeCore()
	c.Modules.EventBus.MQTTMode = MQTTModeInternal
	c.Modules.EdgeHub.RotateCertificates = false
	c.Modules.Edged.TailoredKubeletConfig.ReadOnlyPort = 0
	c.Modules.Edged.TailoredKubeletConfig.RegisterNode = false
	c.Modules.Edged.NodeLabels = map[string]string{"site": "factory-7"}
	got, err := Load(writeConfig(t, marshal(t, c)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip changed the config\n got: %s\nwant: %s", marshal(t, got), marshal(t, c))
	}
}

func TestLoadKubeEdgeConfig(t *testing.T) {
	c, err := Load("testdata/kubeedge-edgecore.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := c.Modules.Edged
	if e.HostnameOverride != "edge-node-1" || e.NodeIP != "192.168.1.21" || e.PodSandboxImage != "kubeedge/pause:3.6" {
		t.Errorf("edged not read: %+v", e)
	}
	k := e.TailoredKubeletConfig
	if k.CgroupDriver != "systemd" || k.NodeStatusUpdateFrequency.Duration != 10*time.Second || !reflect.DeepEqual(k.ClusterDNS, []string{"169.254.96.16"}) {
		t.Errorf("tailoredKubeletConfig not read: %+v", k)
	}
	if got := c.Modules.EdgeHub.WebSocket.Server; got != "192.168.1.10:10000" {
		t.Errorf("websocket server = %q", got)
	}
}

func TestLoadErrors(t *testing.T) {
	const head = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"mqttMode", head + "modules: {eventBus: {mqttMode: 3}}",
			"modules.eventBus.mqttMode: Invalid value: 3: must be 0 (internal broker), 1 (both) or 2 (external broker)"},
		{"mqttQOS", head + "modules: {eventBus: {mqttQOS: 5}}",
			"modules.eventBus.mqttQOS: Invalid value: 5: must be 0, 1 or 2"},
		{"broker without port", head + "modules: {eventBus: {mqttServerExternal: 'tcp://broker'}}",
			`modules.eventBus.mqttServerExternal: Invalid value: "tcp://broker": must include a port`},
		{"broker scheme", head + "modules: {eventBus: {mqttMode: 0, mqttServerInternal: 'http://127.0.0.1:1884'}}",
			`modules.eventBus.mqttServerInternal: Invalid value: "http://127.0.0.1:1884": must be a URL with scheme tcp, ssl,`},
		{"unused broker not checked", head + "modules: {eventBus: {mqttMode: 2, mqttServerInternal: junk}}", ""},
		{"unimplemented security setting on", head + "modules: {edged: {tailoredKubeletConfig: {protectKernelDefaults: true}}}",
			"modules.edged.tailoredKubeletConfig.protectKernelDefaults: security setting is turned on, but Tether does not implement it"},
		{"unimplemented security setting off", head + "modules: {edged: {tailoredKubeletConfig: {protectKernelDefaults: false}}}", ""},
		{"heartbeat", head + "modules: {edgeHub: {heartbeat: 0}}",
			"modules.edgeHub.heartbeat: Invalid value: 0: must be greater than 0"},
		{"httpServer scheme", head + "modules: {edgeHub: {httpServer: 'http://10.0.0.1:10002'}}",
			`modules.edgeHub.httpServer: Invalid value: "http://10.0.0.1:10002": must be a URL with scheme https`},
		{"httpServer port", head + "modules: {edgeHub: {httpServer: 'https://10.0.0.1:99999'}}",
			"port must be between 1 and 65535"},
		{"websocket server", head + "modules: {edgeHub: {websocket: {server: '10.0.0.1'}}}",
			`modules.edgeHub.websocket.server: Invalid value: "10.0.0.1": must be host:port`},
		{"websocket port", head + "modules: {edgeHub: {websocket: {server: '10.0.0.1:0'}}}",
			"port must be between 1 and 65535"},
		{"quic only", head + "modules: {edgeHub: {websocket: {enable: false}, quic: {enable: true}}}",
			"edgeHub connects to cloudcore over websocket only"},
		{"node name", head + "modules: {edged: {hostnameOverride: Edge_Node}}",
			`modules.edged.hostnameOverride: Invalid value: "Edge_Node": a lowercase RFC 1123 subdomain`},
		{"empty node name", head + "modules: {edged: {hostnameOverride: ''}}",
			"modules.edged.hostnameOverride: Required value"},
		{"node IP", head + "modules: {edged: {nodeIP: 10.0.0}}",
			`modules.edged.nodeIP: Invalid value: "10.0.0": must be a valid IP address`},
		{"node label", head + "modules: {edged: {nodeLabels: {'bad key!': x}}}",
			"modules.edged.nodeLabels[bad key!]"},
		{"cri endpoint", head + "modules: {edged: {tailoredKubeletConfig: {containerRuntimeEndpoint: /run/containerd/containerd.sock}}}",
			"modules.edged.tailoredKubeletConfig.containerRuntimeEndpoint"},
		{"cgroup driver", head + "modules: {edged: {tailoredKubeletConfig: {cgroupDriver: cgroupfs2}}}",
			`Unsupported value: "cgroupfs2": supported values: "cgroupfs", "systemd"`},
		{"cluster DNS", head + "modules: {edged: {tailoredKubeletConfig: {clusterDNS: [dns.local]}}}",
			`modules.edged.tailoredKubeletConfig.clusterDNS[0]: Invalid value: "dns.local"`},
		{"duration syntax", head + "modules: {edged: {tailoredKubeletConfig: {nodeStatusUpdateFrequency: ten}}}",
			`modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency: time: invalid duration "ten"`},
		{"duration zero", head + "modules: {edged: {tailoredKubeletConfig: {nodeStatusUpdateFrequency: 0s}}}",
			"nodeStatusUpdateFrequency: Invalid value: \"0s\": must be greater than 0"},
		{"relative db", head + "database: {dataSource: edgecore.db}",
			`database.dataSource: Invalid value: "edgecore.db": must be an absolute path`},
		{"db driver", head + "database: {driverName: mysql}",
			`database.driverName: Unsupported value: "mysql"`},
		{"serviceBus port", head + "modules: {serviceBus: {enable: true, port: 70000}}",
			"modules.serviceBus.port: Invalid value: 70000"},
		{"unknown field", head + "modules: {edged: {tailoredKubeletConfig: {maxPod: 5}}}",
			`unknown field "modules.edged.tailoredKubeletConfig.maxPod"`},
		{"wrong kind", "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudCore\n",
			`[apiVersion: Unsupported value: "cloudcore.config.kubeedge.io/v1alpha1": supported values: "edgecore.config.kubeedge.io/v1alpha2", kind: Unsupported value: "CloudCore"`},
		{"v1.7 config", "apiVersion: edgecore.config.kubeedge.io/v1alpha1\nkind: EdgeCore\n",
			`apiVersion: Unsupported value: "edgecore.config.kubeedge.io/v1alpha1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, err := Load(path)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
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

func TestEnabledModules(t *testing.T) {
	got := NewDefaultEdgeCore().EnabledModules()
	want := []string{"edged", "edgeHub", "eventBus", "metaManager", "deviceTwin"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EnabledModules() = %v, want %v", got, want)
	}
}
