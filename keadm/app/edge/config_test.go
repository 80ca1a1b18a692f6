package edge

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/cloud/edgecontroller"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
)

func TestApplySet(t *testing.T) {
	tests := []struct {
		set   string
		check func(*v1alpha2.EdgeCore) any
		want  any
		err   string
	}{
		{"modules.edged.nodeIP=1.2.3.4", func(c *v1alpha2.EdgeCore) any { return c.Modules.Edged.NodeIP }, "1.2.3.4", ""},
		{"metricsServer.bindAddress=", func(c *v1alpha2.EdgeCore) any { return c.MetricsServer.BindAddress }, "", ""},
		{"modules.edgeHub.heartbeat=5", func(c *v1alpha2.EdgeCore) any { return c.Modules.EdgeHub.Heartbeat }, int32(5), ""},
		{"modules.eventBus.mqttMode=1", func(c *v1alpha2.EdgeCore) any { return c.Modules.EventBus.MQTTMode }, v1alpha2.MQTTModeBoth, ""},
		{"modules.serviceBus.enable=true", func(c *v1alpha2.EdgeCore) any { return c.Modules.ServiceBus.Enable }, true, ""},
		{"modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency=3s",
			func(c *v1alpha2.EdgeCore) any {
				return c.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency.Duration
			}, 3 * time.Second, ""},
		{"modules.edged.tailoredKubeletConfig.clusterDNS=10.0.0.10, 10.0.0.11",
			func(c *v1alpha2.EdgeCore) any { return c.Modules.Edged.TailoredKubeletConfig.ClusterDNS }, []string{"10.0.0.10", "10.0.0.11"}, ""},
		{"modules.edged.tailoredKubeletConfig.clusterDNS=",
			func(c *v1alpha2.EdgeCore) any { return c.Modules.Edged.TailoredKubeletConfig.ClusterDNS }, []string{}, ""},
		{"modules.edged.nodeLabels=a=1,b=2", func(c *v1alpha2.EdgeCore) any { return c.Modules.Edged.NodeLabels }, map[string]string{"a": "1", "b": "2"}, ""},
		{"modules.edged.nodeLabels.zone=north", func(c *v1alpha2.EdgeCore) any { return c.Modules.Edged.NodeLabels["zone"] }, "north", ""},
		{"featureGates.Foo=true", func(c *v1alpha2.EdgeCore) any { return c.FeatureGates["Foo"] }, true, ""},
		// The value keeps everything after the first '=': a URL with a query string survives.
		{"modules.edgeHub.httpServer=https://a:1/?x=y", func(c *v1alpha2.EdgeCore) any { return c.Modules.EdgeHub.HTTPServer }, "https://a:1/?x=y", ""},

		{"modules.edged.nodeIp=1.2.3.4", nil, nil, `--set modules.edged.nodeIp=1.2.3.4: unknown field "nodeIp" in modules.edged (did you mean "nodeIP"?)`},
		{"modules.edge.enable=true", nil, nil, `unknown field "edge" in modules; known fields: deviceTwin, edgeHub, edged, eventBus, metaManager, serviceBus`},
		{"bogus=1", nil, nil, `unknown field "bogus" in the config; known fields: apiVersion, database, featureGates, kind, metricsServer, modules`},
		{"modules.edgeHub.heartbeat=fast", nil, nil, `modules.edgeHub.heartbeat wants a 32-bit integer, got "fast"`},
		{"modules.edgeHub.heartbeat=99999999999", nil, nil, "wants a 32-bit integer"},
		{"modules.serviceBus.enable=yes", nil, nil, `modules.serviceBus.enable wants true or false, got "yes"`},
		{"modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency=10", nil, nil, "wants a duration such as 10s"},
		{"modules.edged=x", nil, nil, "modules.edged is a section; set one of its fields: enable, hostnameOverride"},
		{"modules.edged.nodeIP.x=1", nil, nil, "modules.edged.nodeIP is a string, not a section"},
		{"modules.edged.nodeLabels=a", nil, nil, `modules.edged.nodeLabels wants k=v[,k=v...], got "a"`},
		{"noequals", nil, nil, `--set "noequals": want key=value`},
		{"=x", nil, nil, "want key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.set, func(t *testing.T) {
			cfg := v1alpha2.NewDefaultEdgeCore()
			err := applySet(cfg, tt.set)
			wantErr(t, err, tt.err)
			if tt.check != nil && err == nil {
				if got := tt.check(cfg); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %#v, want %#v", got, tt.want)
				}
			}
		})
	}
}

func TestRenderConfig(t *testing.T) {
	root := t.TempDir()
	l := paths.Layout{Root: root}
	o := &joinOptions{
		cloudAddr: "10.0.0.1:10000", certPort: 10002, token: " tok.a.b.c\n", nodeName: "edge1",
		runtimeEndpoint: "unix:///run/k3s/containerd.sock", labels: map[string]string{"zone": "north"}, withMQTT: true,
	}
	cfg, err := renderConfig(l, o, "systemd", "127.0.0.1:20356")
	if err != nil {
		t.Fatal(err)
	}
	e, k, hub, bus := cfg.Modules.Edged, cfg.Modules.Edged.TailoredKubeletConfig, cfg.Modules.EdgeHub, cfg.Modules.EventBus
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"node", e.HostnameOverride, "edge1"},
		{"labels", e.NodeLabels, map[string]string{"zone": "north"}},
		{"rootDirectory", e.RootDirectory, filepath.Join(root, "var/lib/kubelet")},
		{"podLogsDir", k.PodLogsDir, filepath.Join(root, "var/log/pods")},
		{"runtime", k.ContainerRuntimeEndpoint, "unix:///run/k3s/containerd.sock"},
		{"image service", k.ImageServiceEndpoint, "unix:///run/k3s/containerd.sock"},
		{"cgroup driver", k.CgroupDriver, "systemd"},
		{"token", hub.Token, "tok.a.b.c"},
		{"httpServer", hub.HTTPServer, "https://10.0.0.1:10002"},
		{"websocket", hub.WebSocket.Server, "10.0.0.1:10000"},
		{"CA", hub.TLSCAFile, filepath.Join(root, "etc/kubeedge/ca/rootCA.crt")},
		{"cert", hub.TLSCertFile, filepath.Join(root, "etc/kubeedge/certs/server.crt")},
		{"key", hub.TLSPrivateKeyFile, filepath.Join(root, "etc/kubeedge/certs/server.key")},
		{"mqtt CA", bus.TLS.TLSMQTTCAFile, filepath.Join(root, "etc/kubeedge/ca/rootCA.crt")},
		{"mqtt mode", bus.MQTTMode, v1alpha2.MQTTModeInternal},
		{"embedded broker", bus.MQTTServerInternal, "tcp://127.0.0.1:1883"},
		{"database", cfg.Database.DataSource, filepath.Join(root, "var/lib/kubeedge/edgecore.db")},
		{"metrics", cfg.MetricsServer.BindAddress, "127.0.0.1:20356"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}

	// What is written is what edgecore loads, unchanged.
	path := l.EdgeCoreConfig()
	if err := writeConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	loaded, err := v1alpha2.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, cfg) {
		t.Errorf("loaded config differs from the rendered one:\n%+v\n%+v", loaded, cfg)
	}
	if fi, err := statMode(path); err != nil || fi != 0o600 {
		t.Errorf("config mode %v (%v), want 0600: it holds the token", fi, err)
	}
}

func TestRenderConfigSetWins(t *testing.T) {
	o := &joinOptions{cloudAddr: "10.0.0.1:10000", certPort: 10002, token: "t", nodeName: "edge1",
		runtimeEndpoint: v1alpha2.DefaultCRIEndpoint,
		sets:            []string{"modules.edged.hostnameOverride=edge2", "metricsServer.bindAddress=", "modules.edged.tailoredKubeletConfig.cgroupRoot=/x"}}
	cfg, err := renderConfig(paths.Layout{Root: "/"}, o, "cgroupfs", "127.0.0.1:10356")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName() != "edge2" || cfg.MetricsServer.BindAddress != "" || cfg.Modules.Edged.TailoredKubeletConfig.CgroupRoot != "/x" {
		t.Errorf("--set did not win: node %s, metrics %q, cgroupRoot %s", cfg.NodeName(), cfg.MetricsServer.BindAddress,
			cfg.Modules.Edged.TailoredKubeletConfig.CgroupRoot)
	}
	if cfg.Database.DataSource != "/var/lib/kubeedge/edgecore.db" || cfg.Modules.EdgeHub.TLSCAFile != v1alpha2.DefaultCAFile {
		t.Errorf("root / must give KubeEdge's paths, got %s and %s", cfg.Database.DataSource, cfg.Modules.EdgeHub.TLSCAFile)
	}

	for _, tt := range []struct {
		mutate func(*joinOptions)
		want   string
	}{
		{func(o *joinOptions) { o.cloudAddr = "10.0.0.1" }, `--cloudcore-ipport "10.0.0.1": want host:port`},
		{func(o *joinOptions) { o.sets = []string{"modules.edged.nodeIP=not-an-ip"} }, "modules.edged.nodeIP: Invalid value: \"not-an-ip\""},
		{func(o *joinOptions) { o.runtimeEndpoint = "tcp://x:1" }, "containerRuntimeEndpoint"},
		{func(o *joinOptions) { o.labels = map[string]string{"bad key!": "x"} }, "nodeLabels"},
	} {
		o := &joinOptions{cloudAddr: "10.0.0.1:10000", certPort: 10002, token: "t", nodeName: "edge1", runtimeEndpoint: v1alpha2.DefaultCRIEndpoint}
		tt.mutate(o)
		_, err := renderConfig(paths.Layout{Root: t.TempDir()}, o, "cgroupfs", "")
		wantErr(t, err, tt.want)
	}
}

func statMode(path string) (os.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}

// --autonomy is on by default and leaves the node unlabelled (so kubectl can change it later); --autonomy=false
// labels the node node.tether.io/autonomy=false through edgecore.yaml.
func TestJoinAutonomyFlag(t *testing.T) {
	if autonomyLabel != edgecontroller.AutonomyLabel {
		t.Fatalf("keadm labels %s, cloudcore reads %s", autonomyLabel, edgecontroller.AutonomyLabel)
	}
	for _, tt := range []struct {
		args []string
		want map[string]string
	}{
		{nil, map[string]string{}},
		{[]string{"--autonomy"}, map[string]string{}},
		{[]string{"--autonomy=true"}, map[string]string{}},
		{[]string{"--autonomy=false"}, map[string]string{"node.tether.io/autonomy": "false"}},
		{[]string{"--autonomy=false", "--labels", "node.tether.io/autonomy=true,zone=north"}, map[string]string{"node.tether.io/autonomy": "false", "zone": "north"}},
	} {
		o := &joinOptions{}
		cmd := &cobra.Command{Use: "join"}
		o.addFlags(cmd)
		if err := cmd.ParseFlags(append([]string{"-e", "10.0.0.1:10000", "-t", "tok", "-i", "edge1"}, tt.args...)); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		cfg, err := renderConfig(paths.Layout{Root: t.TempDir()}, o, "cgroupfs", "")
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if got := cfg.Modules.Edged.NodeLabels; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v: nodeLabels = %v, want %v", tt.args, got, tt.want)
		}
	}
	o := &joinOptions{}
	cmd := &cobra.Command{Use: "join"}
	o.addFlags(cmd)
	if err := cmd.ParseFlags([]string{"--autonomy=maybe"}); err == nil {
		t.Error("--autonomy=maybe accepted")
	}
	if f := cmd.Flags().Lookup("autonomy"); f.DefValue != "true" {
		t.Errorf("--autonomy default shows %q, want true", f.DefValue)
	}
}
