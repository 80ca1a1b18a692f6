//go:build integration

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/tests/framework"
)

// The real cloudcore binary against the real API server: it starts, serves, and exits 0 on SIGTERM, as systemd
// expects.
func TestCloudCoreBinaryStopsOnSIGTERM(t *testing.T) {
	cp := framework.StartControlPlane(t)
	bin := filepath.Join(t.TempDir(), "cloudcore")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tether-edge/tether/cmd/cloudcore").CombinedOutput(); err != nil {
		t.Fatalf("building cloudcore: %v\n%s", err, out)
	}
	cfg := framework.NewCloudConfig(t, cp, t.TempDir())
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "cloudcore.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "--config", cfgPath)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	framework.Eventually(t, 30*time.Second, "cloudcore started", func() bool {
		return strings.Contains(stderr.String(), `"cloudcore started"`)
	})
	framework.WaitForPort(t, cfg.Modules.CloudHub.WebSocket.Port)
	framework.Token(t, cp) // it did real work: the join token is published
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cloudcore exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("cloudcore still running 15s after SIGTERM\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"cloudcore stopped"`) {
		t.Errorf("shutdown not logged:\n%s", stderr.String())
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
