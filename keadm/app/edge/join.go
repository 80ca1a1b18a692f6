package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
)

// preflightTimeout bounds each network check; a firewall that drops packets would otherwise hang the join.
const preflightTimeout = 5 * time.Second

type joinOptions struct {
	cloudAddr       string
	certPort        int
	token           string
	nodeName        string
	runtimeEndpoint string
	cgroupDriver    string
	labels          map[string]string
	noAutonomy      bool // --autonomy=false
	withMQTT        bool
	sets            []string
	edgecoreBinary  string
	noSystemd       bool
	force           bool
	wait            time.Duration
	kubeConfig      string
}

func (o *joinOptions) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVarP(&o.cloudAddr, "cloudcore-ipport", "e", "", "cloudcore's websocket address, host:port (port 10000 by default on the cloud); required")
	fs.IntVarP(&o.certPort, "certport", "s", v1alpha2.DefaultHTTPSPort, "cloudcore's certificate port on the same host")
	fs.StringVarP(&o.token, "token", "t", "", "join token, as printed by keadm gettoken on the cloud; required")
	fs.StringVarP(&o.nodeName, "edgenode-name", "i", defaultNodeName(), "node name; must not be taken in the cluster")
	fs.StringVarP(&o.runtimeEndpoint, "remote-runtime-endpoint", "p", v1alpha2.DefaultCRIEndpoint, "CRI socket of the container runtime")
	fs.StringVar(&o.cgroupDriver, "cgroupdriver", "", "cgroupfs or systemd; default: what containerd's config.toml sets (SystemdCgroup), else systemd on systemd-booted cgroup-v2-only hosts, else cgroupfs")
	fs.StringToStringVarP(&o.labels, "labels", "l", nil, "node labels, k=v,k2=v2")
	fs.Var(negatedBool{&o.noAutonomy}, "autonomy", "keep this node's pods through cloud outages of any length; false lets Kubernetes evict them "+
		"after its unreachable toleration (default 300 s), by labelling the node "+autonomyLabel+"=false")
	fs.Lookup("autonomy").NoOptDefVal = "true"
	fs.BoolVar(&o.withMQTT, "with-mqtt", false, "run edgecore's embedded MQTT broker (eventBus.mqttMode 0) instead of using an external one")
	fs.StringArrayVar(&o.sets, "set", nil, "edgecore.yaml override, dotted path=value (repeatable), e.g. modules.edged.nodeIP=10.0.0.5 or metricsServer.bindAddress=")
	fs.StringVar(&o.edgecoreBinary, "edgecore-binary", "", "edgecore binary to install; default: edgecore next to keadm, else on PATH")
	fs.BoolVar(&o.noSystemd, "no-systemd", false, "run edgecore in the background with a PID file even where systemd runs")
	fs.BoolVar(&o.force, "force", false, "join even if this host already joined, edgecore runs, or the node name is taken")
	fs.DurationVar(&o.wait, "wait", 2*time.Minute, "how long to wait for edgecore to connect (and the node to be Ready with --kube-config); 0 returns at once")
	fs.StringVar(&o.kubeConfig, "kube-config", "", "optional kubeconfig: also wait for the Node to be Ready in the API server")
	_ = cmd.MarkFlagRequired("cloudcore-ipport")
	_ = cmd.MarkFlagRequired("token")
}

// autonomyLabel is cloud/edgecontroller.AutonomyLabel: edge nodes without it (or with "true") keep their pods
// through outages of any length.
const autonomyLabel = "node.tether.io/autonomy"

// negatedBool is a boolean flag that defaults to true and is stored as its negation, so a zero joinOptions keeps
// the default.
type negatedBool struct{ off *bool }

func (b negatedBool) String() string {
	if b.off == nil {
		return "true"
	}
	return strconv.FormatBool(!*b.off)
}

func (b negatedBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*b.off = !v
	return nil
}

func (negatedBool) Type() string { return "bool" }

func defaultNodeName() string {
	h, _ := os.Hostname()
	return strings.ToLower(strings.TrimSpace(h))
}

func (o *joinOptions) run(ctx context.Context, cmd *cobra.Command, l paths.Layout) error {
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	start := time.Now()
	if err := checkNodeNameValid(o.nodeName); err != nil {
		return err
	}
	switch o.cgroupDriver {
	case "", v1alpha2.CgroupDriverCgroupfs, v1alpha2.CgroupDriverSystemd:
	default:
		return fmt.Errorf("--cgroupdriver %q: want cgroupfs or systemd", o.cgroupDriver)
	}
	bin, err := findEdgecore(o.edgecoreBinary)
	if err != nil {
		return err
	}
	var nodes corev1client.NodesGetter
	if o.kubeConfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", o.kubeConfig)
		if err != nil {
			return fmt.Errorf("--kube-config %s: %w", o.kubeConfig, err)
		}
		if nodes, err = corev1client.NewForConfig(rc); err != nil {
			return fmt.Errorf("--kube-config %s: %w", o.kubeConfig, err)
		}
	}
	driver := o.cgroupDriver
	if driver == "" {
		driver = detectCgroupDriver(containerdConfigsFor(o.runtimeEndpoint), systemdOwnsCgroups())
	}
	cfg, err := renderConfig(l, o, driver, defaultMetricsAddr())
	if err != nil {
		return err
	}

	// The checks look at the rendered config, so a --set override is what gets checked.
	hub := cfg.Modules.EdgeHub
	httpURL, err := url.Parse(hub.HTTPServer)
	if err != nil {
		return fmt.Errorf("httpServer %q: %w", hub.HTTPServer, err)
	}
	k := cfg.Modules.Edged.TailoredKubeletConfig
	in := &preflightInput{
		configPath:        l.EdgeCoreConfig(),
		pidPath:           edgecore(l).PIDFile(),
		force:             o.force,
		token:             hub.Token,
		now:               time.Now(),
		cloudAddr:         hub.WebSocket.Server,
		certAddr:          httpURL.Host,
		nodeName:          cfg.NodeName(),
		runtimeEndpoint:   k.ContainerRuntimeEndpoint,
		cgroupDriver:      k.CgroupDriver,
		cgroupExplicit:    o.cgroupDriver != "" || k.CgroupDriver != driver,
		containerdConfigs: containerdConfigsFor(k.ContainerRuntimeEndpoint),
		timeout:           preflightTimeout,
	}
	if bus := cfg.Modules.EventBus; bus.Enable && bus.MQTTMode != v1alpha2.MQTTModeExternal {
		in.embeddedBroker = bus.MQTTServerInternal
	}
	if httpURL.Port() == "" {
		in.certAddr = net.JoinHostPort(httpURL.Hostname(), "443")
	}
	if err := runPreflight(ctx, out, errw, in); err != nil {
		return err
	}

	if o.force {
		if err := o.takeOver(ctx, l, out); err != nil {
			return err
		}
	}
	if err := writeConfig(l.EdgeCoreConfig(), cfg); err != nil {
		return err
	}
	metrics := ""
	if a := cfg.MetricsServer.BindAddress; a != v1alpha2.DefaultMetricsAddress {
		metrics = ", metrics " + a // said only when it moved off the usual port (or is off)
		if a == "" {
			metrics = ", metrics off"
		}
	}
	fmt.Fprintf(out, "[join] wrote %s (node %s, cloudcore %s, cgroup driver %s%s)\n",
		l.EdgeCoreConfig(), cfg.NodeName(), hub.WebSocket.Server, k.CgroupDriver, metrics)
	d := edgecore(l)
	if copied, err := d.InstallBinary(bin); err != nil {
		return fmt.Errorf("installing edgecore: %w", err)
	} else if copied {
		fmt.Fprintf(out, "[join] installed %s from %s\n", d.Binary(), bin)
	}

	var exited <-chan error
	if !o.noSystemd && onSystemd(l) {
		if err := startSystemd(ctx, d); err != nil {
			return fmt.Errorf("%w; undo with keadm reset edge", err)
		}
		fmt.Fprintf(out, "[join] started %s (journalctl -u edgecore for its log)\n", d.UnitName())
	} else {
		s, err := d.Start()
		if err != nil {
			return fmt.Errorf("%w; undo with keadm reset edge", err)
		}
		exited = s.Exited
		fmt.Fprintf(out, "[join] started edgecore (pid %d), log %s\n", s.PID, d.LogFile())
	}
	if o.wait <= 0 {
		fmt.Fprintf(out, "[join] not waiting (--wait 0): node %s joins in the background\n", cfg.NodeName())
		return nil
	}
	w := &waiter{
		metricsAddr: cfg.MetricsServer.BindAddress,
		certFiles:   []string{hub.TLSCertFile, hub.TLSPrivateKeyFile},
		node:        cfg.NodeName(),
		nodes:       nodes,
		exited:      exited,
		logHint:     d.LogFile(),
	}
	if exited == nil {
		w.logHint = "journalctl -u edgecore"
	}
	reached, err := w.wait(ctx, o.wait)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "[join] node %s %s (%.1fs)\n", cfg.NodeName(), reached, time.Since(start).Seconds())
	return nil
}

// takeOver clears what a previous join left that would get in the way: a running edgecore, and certificates
// that may come from another cloud (the token gets new ones).
func (o *joinOptions) takeOver(ctx context.Context, l paths.Layout, out io.Writer) error {
	what, err := stopEdgecore(ctx, l)
	if err != nil {
		return err
	}
	if what != "" {
		fmt.Fprintf(out, "[join] --force: %s\n", what)
	}
	for _, f := range []string{caFile(l), certFile(l), keyFile(l)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--force: removing old %s: %w", f, err)
		}
	}
	return nil
}

// waiter watches a starting edgecore until it is connected to cloudcore and, given an API client, its Node is
// Ready.
type waiter struct {
	// metricsAddr serves tether_edgehub_connected; empty falls back to the certificate files appearing, which
	// is all KubeEdge's keadm waits for.
	metricsAddr string
	certFiles   []string
	node        string
	nodes       corev1client.NodesGetter
	exited      <-chan error
	logHint     string
	interval    time.Duration
}

func (w *waiter) wait(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := w.interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	state := "not connected to cloudcore"
	for {
		connected, why := w.connected(ctx)
		if connected {
			state = "connected to cloudcore"
			if w.nodes == nil {
				return state, nil
			}
			ready, why := w.ready(ctx)
			if ready {
				return state + " and Ready", nil
			}
			state += ", but " + why
		} else if why != "" {
			state = why
		}
		select {
		case err := <-w.exited:
			return "", fmt.Errorf("edgecore exited during start (%v); last log line: %s; see %s", err, lastLogLine(w.logHint), w.logHint)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("node %s still %s after --wait %s; see %s (edgecore keeps trying)", w.node, state, timeout, w.logHint)
			}
			return "", ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (w *waiter) connected(ctx context.Context) (bool, string) {
	if w.metricsAddr == "" {
		for _, f := range w.certFiles {
			if !exists(f) {
				return false, "without a node certificate (" + f + ")"
			}
		}
		return true, ""
	}
	host, port, err := net.SplitHostPort(w.metricsAddr)
	if err != nil {
		return false, ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	u := "http://" + net.JoinHostPort(host, port) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, ""
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, "" // cut short by the deadline: says nothing about edgecore
		}
		return false, "not serving metrics at " + u + " yet"
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "tether_edgehub_connected "); ok {
			return strings.TrimSpace(v) == "1", "not connected to cloudcore"
		}
	}
	return false, "not connected to cloudcore"
}

func (w *waiter) ready(ctx context.Context) (bool, string) {
	n, err := w.nodes.Nodes().Get(ctx, w.node, metav1.GetOptions{})
	if err != nil {
		return false, "Node not readable in the API server (" + oneLine([]byte(err.Error())) + ")"
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return true, ""
			}
			return false, "NotReady (" + c.Reason + ")"
		}
	}
	return false, "NotReady (no Ready condition yet)"
}
