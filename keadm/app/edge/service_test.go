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

	"github.com/tether-edge/tether/keadm/app/daemon"
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
	path := filepath.Join(t.TempDir(), "edgecore.service")
	text := strings.Replace(string(unit), "ExecStart=/usr/local/bin/edgecore", "ExecStart="+exe, 1)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// stopEdgecore stops the edgecore in the PID file, says so, and removes the file. The stop mechanics
// themselves are daemon's, tested there.
func TestStopEdgecore(t *testing.T) {
	l := paths.Layout{Root: t.TempDir()}
	d := edgecore(l)
	ctx := context.Background()
	if what, err := stopEdgecore(ctx, l); err != nil || what != "" {
		t.Fatalf("nothing running: got (%q, %v)", what, err)
	}
	pid := startFakeEdgecore(t)
	writeTestFile(t, d.PIDFile(), pid+"\n")
	n, _ := strconv.Atoi(pid)
	if got, ok := d.FromPIDFile(); !ok || got != n {
		t.Fatalf("FromPIDFile = (%d, %v), want (%s, true)", got, ok, pid)
	}
	what, err := stopEdgecore(ctx, l)
	if err != nil || what != "stopped edgecore (pid "+pid+")" {
		t.Fatalf("got (%q, %v)", what, err)
	}
	if daemon.Alive(n) || exists(d.PIDFile()) {
		t.Errorf("process alive %v, PID file left %v", daemon.Alive(n), exists(d.PIDFile()))
	}
}
