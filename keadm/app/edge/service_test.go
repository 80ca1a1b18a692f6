package edge

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// startFakeEdgecore runs a process whose argv[0] is .../edgecore (a copy of sleep) and returns its PID.
func startFakeEdgecore(t *testing.T) string {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), "edgecore")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return strconv.Itoa(cmd.Process.Pid)
}

// The unit keadm installs is the one in build/tools (go:embed cannot reach it, so there are two copies).
func TestUnitMatchesBuildTools(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "build", "tools", "edgecore.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unit, want) {
		t.Fatal("keadm/app/edge/edgecore.service differs from build/tools/edgecore.service: copy the latter over the former")
	}
	for _, line := range []string{"Type=simple", "ExecStart=/usr/local/bin/edgecore", "Restart=always", "RestartSec=10",
		"KillMode=process", "WantedBy=multi-user.target"} {
		if !strings.Contains(string(unit), "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
}

// systemd-analyze verify rejects unknown keys and bad values. It also requires ExecStart to exist, so the copy
// it checks points at a binary that does; everything else is verified as shipped.
func TestUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	exe, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true binary")
	}
	path := filepath.Join(t.TempDir(), unitName)
	text := strings.Replace(string(unit), "ExecStart=/usr/local/bin/edgecore", "ExecStart="+exe, 1)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestStopEdgecore(t *testing.T) {
	l := paths.Layout{Root: t.TempDir()}
	ctx := context.Background()
	if what, err := stopEdgecore(ctx, l); err != nil || what != "" {
		t.Fatalf("nothing running: got (%q, %v)", what, err)
	}
	pid := startFakeEdgecore(t)
	writeTestFile(t, pidFile(l), pid+"\n")
	n, _ := strconv.Atoi(pid)
	if got, ok := runningEdgecore(pidFile(l)); !ok || got != n {
		t.Fatalf("runningEdgecore = (%d, %v), want (%s, true)", got, ok, pid)
	}
	what, err := stopEdgecore(ctx, l)
	if err != nil || what != "stopped edgecore (pid "+pid+")" {
		t.Fatalf("got (%q, %v)", what, err)
	}
	if alive(n) || exists(pidFile(l)) {
		t.Errorf("process alive %v, PID file left %v", alive(n), exists(pidFile(l)))
	}
}

func TestStartBackground(t *testing.T) {
	l := paths.Layout{Root: t.TempDir()}
	script := filepath.Join(t.TempDir(), "edgecore")
	writeTestFile(t, script, "#!/bin/sh\necho \"started with $*\"\necho 'fatal: no cloud' >&2\nexit 3\n")
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := startBackground(l, script, "/etc/x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Errorf("exit %v, want status 3", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("script did not exit")
	}
	if got := lastLogLine(logFile(l)); got != "fatal: no cloud" {
		t.Errorf("last log line %q", got)
	}
	log, _ := os.ReadFile(logFile(l))
	if !strings.Contains(string(log), "started with --config /etc/x.yaml") {
		t.Errorf("log %q lacks the command line", log)
	}
	if data, _ := os.ReadFile(pidFile(l)); strings.TrimSpace(string(data)) != strconv.Itoa(s.pid) {
		t.Errorf("PID file %q, want %d", data, s.pid)
	}
}

func TestInstallBinary(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeTestFile(t, src, "binary")
	dst := filepath.Join(dir, "root", "usr", "local", "bin", "edgecore")
	if copied, err := installBinary(src, dst); err != nil || !copied {
		t.Fatalf("got (%v, %v)", copied, err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed %v, %v", fi, err)
	}
	// Installing the installed binary over itself is a no-op, not a truncation.
	if copied, err := installBinary(dst, dst); err != nil || copied {
		t.Fatalf("same file: got (%v, %v)", copied, err)
	}
	if data, _ := os.ReadFile(dst); string(data) != "binary" {
		t.Errorf("content %q", data)
	}
}

// systemd only manages the real host: a unit under another root is not one systemd would load.
func TestUseSystemd(t *testing.T) {
	if useSystemd(paths.Layout{Root: t.TempDir()}, false) {
		t.Error("systemd chosen for a --root other than /")
	}
	if useSystemd(paths.Layout{Root: "/"}, true) {
		t.Error("systemd chosen despite --no-systemd")
	}
	old := systemdRunDir
	systemdRunDir = t.TempDir()
	t.Cleanup(func() { systemdRunDir = old })
	if !useSystemd(paths.Layout{Root: "/"}, false) || !useSystemd(paths.Layout{}, false) {
		t.Error("systemd not chosen on a systemd host with root /")
	}
}
