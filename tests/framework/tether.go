package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	cloudapp "github.com/tether-edge/tether/cloud/app"
	edgeapp "github.com/tether-edge/tether/edge/app"
	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/edge/edgehub"
	cloudcfg "github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// Cloud is an in-process cloudcore against a ControlPlane, with a Recorder in the edgecontroller group so tests
// see upstream traffic and can send downstream through Bus.
type Cloud struct {
	Config *cloudcfg.CloudCore
	Bus    *beehive.Bus
	// Upstream records what reaches the edgecontroller group.
	Upstream *Recorder
	// Authorizer is cloudcore's node authorizer, for tests that wait until it sees what they created.
	Authorizer *nodeauthz.Authorizer

	cancel context.CancelFunc
	done   chan error
}

// NewCloudConfig is a cloudcore config for loopback: its certificates live in dir, its ports are free ones.
func NewCloudConfig(t testing.TB, cp *ControlPlane, dir string) *cloudcfg.CloudCore {
	cfg := cloudcfg.NewDefaultCloudCore()
	cfg.KubeAPIConfig.KubeConfig = cp.Kubeconfig
	cfg.CommonConfig.MonitorServer.BindAddress = ""
	hub := cfg.Modules.CloudHub
	hub.AdvertiseAddress = []string{"127.0.0.1"}
	hub.TLSCAFile = filepath.Join(dir, "ca", "rootCA.crt")
	hub.TLSCAKeyFile = filepath.Join(dir, "ca", "rootCA.key")
	hub.TLSCertFile = filepath.Join(dir, "certs", "server.crt")
	hub.TLSPrivateKeyFile = filepath.Join(dir, "certs", "server.key")
	hub.WebSocket.Address, hub.WebSocket.Port = "127.0.0.1", FreePort(t)
	hub.HTTPS.Address, hub.HTTPS.Port = "127.0.0.1", FreePort(t)
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("test cloudcore config invalid: %v", errs.ToAggregate())
	}
	return cfg
}

// StartCloud runs cloudcore in-process until Stop or the end of the test.
func StartCloud(t testing.TB, cfg *cloudcfg.CloudCore, opts ...cloudapp.Option) *Cloud {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cloud{Config: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	var once sync.Once
	opts = append([]cloudapp.Option{
		cloudapp.WithSyncPeriod(500 * time.Millisecond),
		cloudapp.WithAuthorizer(func(a *nodeauthz.Authorizer) { c.Authorizer = a }),
		cloudapp.WithModules(func(b *beehive.Bus) []beehive.Module {
			c.Bus = b
			c.Upstream = NewRecorder(b, "test-upstream-recorder", modules.EdgeController)
			once.Do(func() { close(ready) })
			return []beehive.Module{c.Upstream}
		}),
	}, opts...)
	go func() { c.done <- cloudapp.Run(ctx, cfg, opts...) }()
	select {
	case <-ready:
	case err := <-c.done:
		t.Fatalf("cloudcore exited during start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("cloudcore did not start within 30s")
	}
	t.Cleanup(c.Stop)
	WaitForPort(t, cfg.Modules.CloudHub.HTTPS.Port)
	WaitForPort(t, cfg.Modules.CloudHub.WebSocket.Port)
	return c
}

// Stop stops cloudcore and waits for it; safe to call twice.
func (c *Cloud) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.cancel = nil
	if err := <-c.done; err != nil && !errors.Is(err, context.Canceled) {
		panic(fmt.Sprintf("cloudcore returned %v", err))
	}
}

// WebSocketAddress is host:port of CloudHub.
func (c *Cloud) WebSocketAddress() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(c.Config.Modules.CloudHub.WebSocket.Port)))
}

// HTTPServer is the certificate service URL.
func (c *Cloud) HTTPServer() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(c.Config.Modules.CloudHub.HTTPS.Port)))
}

// Token waits for the join token cloudcore publishes in kubeedge/tokensecret.
func Token(t testing.TB, cp *ControlPlane) string {
	t.Helper()
	var tok string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			var s corev1.Secret
			if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: "kubeedge", Name: "tokensecret"}, &s); err != nil {
				return false, nil
			}
			tok = string(s.Data["tokendata"])
			return tok != "", nil
		})
	if err != nil {
		t.Fatalf("no join token in kubeedge/tokensecret: %v", err)
	}
	return tok
}

// Edge is an in-process edgecore with the AckingMeta stand-in for MetaManager.
type Edge struct {
	Config *edgecfg.EdgeCore
	Store  *EdgeStore
	Bus    *beehive.Bus

	cancel context.CancelFunc
	done   chan error
}

// NewEdgeConfig is an edgecore config for node, joining cloud with token, keeping its files in dir.
func NewEdgeConfig(t testing.TB, cloud *Cloud, node, token, dir string) *edgecfg.EdgeCore {
	cfg := edgecfg.NewDefaultEdgeCore()
	cfg.MetricsServer.BindAddress = ""
	cfg.Database.DataSource = filepath.Join(dir, "edgecore.db")
	cfg.Modules.Edged.HostnameOverride = node
	// Link tests stand in for MetaManager (AckingMeta) and need no container runtime or broker; tests that
	// want them turn them on.
	cfg.Modules.Edged.Enable = false
	cfg.Modules.MetaManager.Enable = false
	cfg.Modules.EventBus.Enable = false
	hub := cfg.Modules.EdgeHub
	hub.Heartbeat = 2
	hub.Token = token
	hub.HTTPServer = cloud.HTTPServer()
	hub.WebSocket.Server = cloud.WebSocketAddress()
	hub.TLSCAFile = filepath.Join(dir, "ca", "rootCA.crt")
	hub.TLSCertFile = filepath.Join(dir, "certs", "server.crt")
	hub.TLSPrivateKeyFile = filepath.Join(dir, "certs", "server.key")
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("test edgecore config invalid: %v", errs.ToAggregate())
	}
	return cfg
}

// NewEdgeNodeConfig is a whole edge node: real MetaManager (SQLite in dir) and Edged on ctd's containerd.
func NewEdgeNodeConfig(t testing.TB, cloud *Cloud, node, token, dir string, ctd *Containerd) *edgecfg.EdgeCore {
	cfg := NewEdgeConfig(t, cloud, node, token, dir)
	cfg.Modules.MetaManager.Enable = true
	e := cfg.Modules.Edged
	e.Enable = true
	e.NodeIP = "127.0.0.1"
	e.RootDirectory = filepath.Join(dir, "kubelet")
	k := e.TailoredKubeletConfig
	k.ContainerRuntimeEndpoint = ctd.Endpoint()
	k.ImageServiceEndpoint = ctd.Endpoint()
	k.PodLogsDir = filepath.Join(dir, "pod-logs")
	k.CgroupRoot = ctd.CgroupParent
	k.NodeStatusUpdateFrequency.Duration = 2 * time.Second
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("test edge node config invalid: %v", errs.ToAggregate())
	}
	return cfg
}

// StartEdgeNode runs a whole edgecore in-process (no stand-ins) until Stop or the end of the test.
func StartEdgeNode(t testing.TB, cfg *edgecfg.EdgeCore) *Edge {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Edge{Config: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		e.done <- edgeapp.Run(ctx, cfg,
			edgeapp.WithHubOptions(edgehub.WithTiming(edgehub.Timing{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second})),
			edgeapp.WithModules(func(b *beehive.Bus) []beehive.Module {
				e.Bus = b
				once.Do(func() { close(ready) })
				return nil
			}))
	}()
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("edgecore exited during start: %v", err)
	}
	// After Stop (cleanups run last-in first-out): Edged mounts secret tmpfs and subPath binds under its root
	// directory, which outlive edgecore as on a real node and would keep the test's directory from going.
	root := cfg.Modules.Edged.RootDirectory
	t.Cleanup(func() {
		if err := kuberuntime.UnmountAll(root); err != nil {
			t.Errorf("unmounting pod volumes under %s: %v", root, err)
		}
	})
	t.Cleanup(e.Stop)
	return e
}

// StartEdge runs edgecore in-process; store carries the edge's state across restarts.
func StartEdge(t testing.TB, cfg *edgecfg.EdgeCore, store *EdgeStore) *Edge {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Edge{Config: cfg, Store: store, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		e.done <- edgeapp.Run(ctx, cfg,
			edgeapp.WithHubOptions(edgehub.WithTiming(edgehub.Timing{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second})),
			edgeapp.WithModules(func(b *beehive.Bus) []beehive.Module {
				e.Bus = b
				once.Do(func() { close(ready) })
				return []beehive.Module{NewAckingMeta(b, store)}
			}))
	}()
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("edgecore exited during start: %v", err)
	}
	t.Cleanup(e.Stop)
	return e
}

// Stop stops edgecore and waits for it; safe to call twice.
func (e *Edge) Stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	<-e.done
}

// WaitForPort waits until something listens on a loopback port.
func WaitForPort(t testing.TB, port int32) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, nil
			}
			c.Close()
			return true, nil
		})
	if err != nil {
		t.Fatalf("nothing listens on %s: %v", addr, err)
	}
}

// Eventually polls cond every 100ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
