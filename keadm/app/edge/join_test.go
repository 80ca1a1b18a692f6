package edge

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
)

const fakeEdgecoreEnv = "KEADM_TEST_FAKE_EDGECORE"

// TestMain doubles as a fake edgecore: a copy of this test binary named edgecore, started by join, loads the
// config it is given and reports itself connected on the metrics endpoint until SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv(fakeEdgecoreEnv) != "" && filepath.Base(os.Args[0]) == "edgecore" {
		os.Exit(fakeEdgecore())
	}
	os.Exit(m.Run())
}

func fakeEdgecore() int {
	fs := flag.NewFlagSet("edgecore", flag.ContinueOnError)
	config := fs.String("config", "", "")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cfg, err := v1alpha2.Load(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.MetricsServer.BindAddress)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "fake edgecore started for node", cfg.NodeName())
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "# TYPE tether_edgehub_connected gauge\ntether_edgehub_connected 1")
		}))
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return 0
}

// fakeEdgecoreBinary copies this test binary to a file named edgecore.
func fakeEdgecoreBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "edgecore")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeEdgecoreEnv, "1")
	return bin
}

func keadm(t *testing.T, root, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	layout := &paths.Layout{Root: root}
	cmd := &cobra.Command{Use: "keadm", SilenceErrors: true, SilenceUsage: true}
	reset := &cobra.Command{Use: "reset"}
	reset.AddCommand(NewResetCommand(layout))
	cmd.AddCommand(NewJoinCommand(layout), NewDebugCommand(layout), reset)
	var out, errw bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errw)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errw.String(), err
}

func freeAddr(t *testing.T) string { return closedAddr(t) }

// TestJoinAndReset runs join and reset through their commands against a fake cloud and a fake edgecore: the
// files land under --root, the process is started and watched, and reset leaves the root empty.
func TestJoinAndReset(t *testing.T) {
	root := t.TempDir()
	cloud := newFakeCloud(t)
	_, certPort, _ := net.SplitHostPort(cloud.addr)
	sock := unixSocket(t)
	bin := fakeEdgecoreBinary(t)
	tok := cloud.token(t, time.Since(testNow)+time.Hour)
	join := []string{"join", "--cloudcore-ipport", cloud.addr, "--certport", certPort, "--token", tok,
		"--edgenode-name", "edge1", "--remote-runtime-endpoint", "unix://" + sock, "--no-systemd",
		"--edgecore-binary", bin, "--labels", "zone=north", "--wait", "20s",
		"--set", "metricsServer.bindAddress=" + freeAddr(t)}
	l := paths.Layout{Root: root}

	out, errw, err := keadm(t, root, "", join...)
	if err != nil {
		t.Fatalf("join: %v\nstdout:\n%s\nstderr:\n%s", err, out, errw)
	}
	t.Cleanup(func() { _, _ = stopEdgecore(context.Background(), l) })
	for _, want := range []string{"[preflight] ", "checks passed", "[join] wrote " + l.EdgeCoreConfig() + " (node edge1, cloudcore " + cloud.addr,
		"[join] installed " + edgecore(l).Binary(), "[join] started edgecore (pid ", "[join] node edge1 connected to cloudcore ("} {
		if !strings.Contains(out, want) {
			t.Errorf("join output lacks %q:\n%s", want, out)
		}
	}
	cfg, err := v1alpha2.Load(l.EdgeCoreConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Modules.EdgeHub.Token != tok || cfg.Modules.Edged.NodeLabels["zone"] != "north" {
		t.Errorf("config token/labels not as joined: %+v", cfg.Modules.Edged.NodeLabels)
	}
	if _, ok := edgecore(l).FromPIDFile(); !ok {
		t.Fatal("edgecore not running after join")
	}
	if log := lastLogLine(edgecore(l).LogFile()); log != "fake edgecore started for node edge1" {
		t.Errorf("edgecore log: %q", log)
	}

	// A second join refuses, and says how to proceed.
	_, errw, err = keadm(t, root, "", join...)
	wantErr(t, err, "preflight: 1 check failed (see above); nothing was changed")
	if !strings.Contains(errw, `[preflight] edgecore is already running (pid `) || !strings.Contains(errw, `run "keadm reset edge" first, or pass --force`) {
		t.Errorf("stderr %q", errw)
	}

	// The runtime is gone by the time of the reset: pods cannot be listed, and that must not block the reset.
	_ = os.Remove(sock)
	out, _, err = keadm(t, root, "n\n", "reset", "edge")
	wantErr(t, err, "reset aborted, nothing was changed (pass --force to reset without asking)")
	if !exists(l.EdgeCoreConfig()) {
		t.Fatal("an aborted reset removed the config")
	}
	out, _, err = keadm(t, root, "y\n", "reset", "edge")
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	for _, want := range []string{"[reset] stopped edgecore (pid ", "[reset] container runtime socket " + sock + " not found: no pods to remove",
		"[reset] removed " + l.EdgeCoreConfig(), "[reset] removed " + edgecore(l).Binary(), "[reset] done"} {
		if !strings.Contains(out, want) {
			t.Errorf("reset output lacks %q:\n%s", want, out)
		}
	}
	assertEmptyDir(t, root)

	out, _, err = keadm(t, root, "", "reset", "edge", "--force")
	if err != nil || out != "[reset] nothing to remove: this host is not joined\n" {
		t.Errorf("second reset: (%q, %v)", out, err)
	}
}

// TestJoinStops covers what happens after the preflight checks when edgecore does not come up.
func TestJoinStops(t *testing.T) {
	cloud := newFakeCloud(t)
	_, certPort, _ := net.SplitHostPort(cloud.addr)
	sock := unixSocket(t)
	tok := cloud.token(t, time.Since(testNow)+time.Hour)
	script := filepath.Join(t.TempDir(), "edgecore")
	writeTestFile(t, script, "#!/bin/sh\necho 'E1126 edgecore: cannot open database: disk full' >&2\nexit 1\n")
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	_, _, err := keadm(t, root, "", "join", "--cloudcore-ipport", cloud.addr, "--certport", certPort, "--token", tok,
		"--edgenode-name", "edge1", "--remote-runtime-endpoint", "unix://"+sock, "--no-systemd", "--edgecore-binary", script,
		"--wait", "20s")
	wantErr(t, err, "edgecore exited during start (exit status 1); last log line: E1126 edgecore: cannot open database: disk full; see "+
		edgecore(paths.Layout{Root: root}).LogFile())
}

func TestWaiter(t *testing.T) {
	// A request of the timed-out wait may still be in flight when the test flips the value.
	var connected atomic.Value
	connected.Store("0")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "tether_edgehub_connected_total 9\ntether_edgehub_connected %s\n", connected.Load())
	}))
	defer srv.Close()
	w := &waiter{metricsAddr: srv.Listener.Addr().String(), node: "edge1", logHint: "the log", interval: 10 * time.Millisecond}
	_, err := w.wait(context.Background(), 100*time.Millisecond)
	wantErr(t, err, "node edge1 still not connected to cloudcore after --wait 100ms; see the log (edgecore keeps trying)")
	connected.Store("1")
	if got, err := w.wait(context.Background(), time.Second); err != nil || got != "connected to cloudcore" {
		t.Errorf("got (%q, %v)", got, err)
	}

	// Without metrics, the certificates appearing is the sign of a successful bootstrap.
	cert := filepath.Join(t.TempDir(), "server.crt")
	w = &waiter{certFiles: []string{cert}, node: "edge1", logHint: "the log", interval: 10 * time.Millisecond}
	_, err = w.wait(context.Background(), 50*time.Millisecond)
	wantErr(t, err, "still without a node certificate ("+cert+")")
	writeTestFile(t, cert, "x")
	if _, err := w.wait(context.Background(), time.Second); err != nil {
		t.Error(err)
	}
}

// assertEmptyDir fails if anything at all is left under dir.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	var left []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("left under %s: %s", dir, strings.Join(left, ", "))
	}
}
