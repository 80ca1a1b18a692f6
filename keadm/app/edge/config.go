package edge

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/util/configload"
)

// Files under the layout that edgecore's config names; reset removes the same ones.
func caFile(l paths.Layout) string   { return filepath.Join(l.CADir(), "rootCA.crt") }
func certFile(l paths.Layout) string { return filepath.Join(l.CertsDir(), "server.crt") }
func keyFile(l paths.Layout) string  { return filepath.Join(l.CertsDir(), "server.key") }
func dbFile(l paths.Layout) string   { return filepath.Join(l.StateDir(), "edgecore.db") }

// withMQTTBroker is where --with-mqtt's embedded broker listens.
const withMQTTBroker = "tcp://127.0.0.1:1883"

// renderConfig builds edgecore.yaml from the defaults, the join flags and then the --set overrides, so that
// --set always wins. Every path lands under the layout's root. metricsAddr is where keadm will watch the
// connection come up; --set metricsServer.bindAddress replaces it.
func renderConfig(l paths.Layout, o *joinOptions, cgroupDriver, metricsAddr string) (*v1alpha2.EdgeCore, error) {
	host, _, err := net.SplitHostPort(o.cloudAddr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("--cloudcore-ipport %q: want host:port, e.g. 192.168.1.10:10000", o.cloudAddr)
	}
	cfg := v1alpha2.NewDefaultEdgeCore()
	cfg.Database.DataSource = dbFile(l)
	cfg.MetricsServer.BindAddress = metricsAddr

	e := cfg.Modules.Edged
	if o.nodeName != "" {
		e.HostnameOverride = o.nodeName
	}
	maps.Copy(e.NodeLabels, o.labels)
	if o.noAutonomy {
		e.NodeLabels[autonomyLabel] = "false"
	}
	e.RootDirectory = l.KubeletDir()
	k := e.TailoredKubeletConfig
	k.ContainerRuntimeEndpoint = o.runtimeEndpoint
	k.ImageServiceEndpoint = o.runtimeEndpoint
	k.CgroupDriver = cgroupDriver
	k.PodLogsDir = l.PodLogsDir()

	hub := cfg.Modules.EdgeHub
	hub.Token = strings.TrimSpace(o.token)
	hub.HTTPServer = "https://" + net.JoinHostPort(host, strconv.Itoa(o.certPort))
	hub.WebSocket.Server = o.cloudAddr
	hub.TLSCAFile, hub.TLSCertFile, hub.TLSPrivateKeyFile = caFile(l), certFile(l), keyFile(l)

	bus := cfg.Modules.EventBus
	bus.TLS.TLSMQTTCAFile, bus.TLS.TLSMQTTCertFile, bus.TLS.TLSMQTTPrivateKeyFile = caFile(l), certFile(l), keyFile(l)
	if o.withMQTT {
		// Edge hosts often have no broker. KubeEdge's --with-mqtt starts one on 1883, the port mappers dial by
		// default, so the embedded broker takes that port rather than its usual 1884.
		bus.MQTTMode = v1alpha2.MQTTModeInternal
		bus.MQTTServerInternal = withMQTTBroker
	}

	for _, kv := range o.sets {
		if err := applySet(cfg, kv); err != nil {
			return nil, err
		}
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("the edgecore config these flags produce is invalid: %w", errs.ToAggregate())
	}
	return cfg, nil
}

// defaultMetricsAddr keeps edgecore's usual metrics port when it is free, and otherwise takes a free loopback
// port, so a second node under another --root still gets an endpoint keadm can watch.
func defaultMetricsAddr() string {
	if ln, err := net.Listen("tcp", v1alpha2.DefaultMetricsAddress); err == nil {
		_ = ln.Close()
		return v1alpha2.DefaultMetricsAddress
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return v1alpha2.DefaultMetricsAddress
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeConfig writes the config atomically and private to root: it holds the join token until edgecore has
// traded it for a certificate.
func writeConfig(path string, cfg *v1alpha2.EdgeCore) error {
	data, err := configload.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("rendering %s: %w", path, err)
	}
	return daemon.WriteFileAtomic(path, data, 0o600)
}

// loadConfigLenient reads an existing edgecore.yaml for reset: over the defaults for this layout, without
// validation, because a half-broken config must not stop a reset. ok is false when there is no usable file.
func loadConfigLenient(l paths.Layout) (cfg *v1alpha2.EdgeCore, ok bool, err error) {
	cfg = v1alpha2.NewDefaultEdgeCore()
	data, err := os.ReadFile(l.EdgeCoreConfig())
	if errors.Is(err, os.ErrNotExist) {
		return cfg, false, nil
	}
	if err != nil {
		return cfg, false, fmt.Errorf("reading %s: %w", l.EdgeCoreConfig(), err)
	}
	if _, err := configload.Decode(data, cfg, configload.Type{APIVersion: v1alpha2.APIVersion, Kind: v1alpha2.Kind}); err != nil {
		// Unknown KubeEdge keys make the strict decode fail; a plain decode still finds what reset needs.
		cfg = v1alpha2.NewDefaultEdgeCore()
		if err2 := yaml.Unmarshal(data, cfg); err2 != nil {
			return cfg, false, fmt.Errorf("parsing %s: %w", l.EdgeCoreConfig(), err)
		}
	}
	return cfg, true, nil
}
