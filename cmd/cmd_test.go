// Package cmd_test builds the real binaries and checks what a user and
// systemd see: output, exit codes, stderr lines and signal handling.
package cmd_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
	"github.com/tether-edge/tether/pkg/version"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "tether-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/tether-edge/tether/cmd/cloudcore",
			"github.com/tether-edge/tether/cmd/edgecore",
			"github.com/tether-edge/tether/cmd/keadm")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
			return 1
		}
		binDir = dir
		return m.Run()
	}())
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running %s: %v", bin, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"cloudcore", "version"}, {"cloudcore", "--version"}, {"edgecore", "version"}, {"edgecore", "--version"}, {"keadm", "version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := run(t, args[0], args[1:]...)
			want := args[0] + " " + version.Get().String() + "\n"
			if r.code != 0 || r.stdout != want || r.stderr != "" {
				t.Errorf("got %+v, want exit 0 and stdout %q", r, want)
			}
		})
	}
}

var loaders = map[string]func(string) error{
	"cloudcore": func(p string) error { _, err := v1alpha1.Load(p); return err },
	"edgecore":  func(p string) error { _, err := v1alpha2.Load(p); return err },
}

func TestPrintedConfigsLoad(t *testing.T) {
	for bin, load := range loaders {
		for _, flag := range []string{"--defaultconfig", "--minconfig"} {
			t.Run(bin+" "+flag, func(t *testing.T) {
				r := run(t, bin, flag)
				if r.code != 0 || r.stderr != "" {
					t.Fatalf("got %+v, want exit 0 and nothing on stderr", r)
				}
				if err := load(writeFile(t, bin+".yaml", r.stdout)); err != nil {
					t.Errorf("printed config does not load: %v", err)
				}
			})
		}
	}
}

// A failure must be one line on stderr, the way it lands in the journal.
func TestErrorsAreOneLine(t *testing.T) {
	badCloud := writeFile(t, "cloudcore.yaml", "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudCore\nmodules:\n  cloudHub:\n    websocket:\n      port: 70000\n")
	badEdge := writeFile(t, "edgecore.yaml", "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  eventBus:\n    mqttMode: 7\n")
	dupKey := writeFile(t, "dup.yaml", "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudCore\nkind: CloudCore\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cloudcore", "--config", badCloud},
			"cloudcore: error: loading config " + badCloud + ": modules.cloudHub.websocket.port: Invalid value: 70000: must be between 1 and 65535\n"},
		{[]string{"edgecore", "--config=" + badEdge},
			"edgecore: error: loading config " + badEdge + ": modules.eventBus.mqttMode: Invalid value: 7: must be 0 (internal broker), 1 (both) or 2 (external broker)\n"},
		{[]string{"cloudcore", "--config", dupKey},
			"cloudcore: error: loading config " + dupKey + `: parsing YAML: yaml: unmarshal errors: line 3: key "kind" already set in map` + "\n"},
		{[]string{"edgecore", "--config", badCloud},
			"edgecore: error: loading config " + badCloud + `: [apiVersion: Unsupported value: "cloudcore.config.kubeedge.io/v1alpha1": supported values: "edgecore.config.kubeedge.io/v1alpha2", kind: Unsupported value: "CloudCore": supported values: "EdgeCore"]` + "\n"},
		{[]string{"cloudcore", "--bogus"}, "cloudcore: error: unknown flag: --bogus\n"},
		{[]string{"edgecore", "--bogus"}, "edgecore: error: unknown flag: --bogus\n"},
		{[]string{"keadm", "--bogus"}, "keadm: error: unknown flag: --bogus\n"},
		{[]string{"keadm", "jion"}, `keadm: error: unknown command "jion" for "keadm"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := run(t, tt.args[0], tt.args[1:]...)
			if r.code == 0 {
				t.Errorf("exit code 0, want failure")
			}
			if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, tt.want) {
				t.Errorf("stderr = %q\nwant one line starting with %q", r.stderr, tt.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}

// syncBuffer collects a child's stderr while the test polls it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cloudcore needs an API server, so its signal handling is tested with the integration tests; edgecore keeps
// running without a cloud, retrying, which is the state a SIGTERM usually finds it in.
func TestSIGTERMExitsCleanly(t *testing.T) {
	for _, bin := range []string{"edgecore"} {
		t.Run(bin, func(t *testing.T) {
			cfg := writeFile(t, bin+".yaml", offlineEdgeConfig(t))
			cmd := exec.Command(filepath.Join(binDir, bin), "--config", cfg)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()

			// Signal only once the handler is installed, or the default action
			// would kill the process and the test would prove nothing.
			started := bin + ` started"`
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), started); {
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatalf("%s did not start; stderr:\n%s", bin, stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
				}
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("%s still running 5s after SIGTERM", bin)
			}
			if !strings.Contains(stderr.String(), bin+` stopped"`) {
				t.Errorf("shutdown not logged; stderr:\n%s", stderr.String())
			}
		})
	}
}

// offlineEdgeConfig points edgecore at a cloud that is not there, with a well-formed join token, so it keeps
// retrying instead of failing.
func offlineEdgeConfig(t *testing.T) string {
	ca, key, err := certs.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := certs.MarshalKeyDER(key)
	tok, err := token.Create(ca.Raw, keyDER, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return fmt.Sprintf(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
metricsServer: {bindAddress: ""}
database: {dataSource: %[1]s/edgecore.db}
modules:
  edged: {enable: false}
  edgeHub:
    token: %[2]s
    httpServer: https://127.0.0.1:1
    websocket: {server: "127.0.0.1:1"}
    tlsCaFile: %[1]s/ca.crt
    tlsCertFile: %[1]s/node.crt
    tlsPrivateKeyFile: %[1]s/node.key
`, dir, tok)
}
