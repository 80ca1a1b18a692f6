package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
)

func run(t *testing.T, ctx context.Context, args ...string) (stdout string, err error) {
	t.Helper()
	cmd := NewEdgeCoreCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestPrintConfigs(t *testing.T) {
	for _, flag := range []string{"--defaultconfig", "--minconfig"} {
		t.Run(flag, func(t *testing.T) {
			out, err := run(t, t.Context(), flag)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "edgecore.yaml")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := v1alpha2.Load(path); err != nil {
				t.Errorf("printed config does not load: %v\n%s", err, out)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--config", missing}, "loading config " + missing + ": no such file or directory (start from `edgecore --minconfig`, or join with `keadm join`)"},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"extra"}, `unknown command "extra" for "edgecore"`},
		{[]string{"--defaultconfig", "--minconfig"}, "[defaultconfig minconfig] were all set"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := run(t, t.Context(), tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("nothing should be printed besides the error, got %q", out)
			}
		})
	}
}
