package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEraseToken(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{
			name: "token erased, comments kept",
			in:   "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  edgeHub:\n    # from keadm gettoken\n    token: abc.def.ghi.jkl\n    heartbeat: 15\n",
			want: "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  edgeHub:\n    # from keadm gettoken\n    token: \"\"\n    heartbeat: 15\n",
		},
		{
			name: "no token: file untouched",
			in:   "kind: EdgeCore\nmodules:\n  edgeHub:\n    heartbeat: 15 # seconds\n",
			want: "kind: EdgeCore\nmodules:\n  edgeHub:\n    heartbeat: 15 # seconds\n",
		},
		{name: "broken yaml", in: "modules: [\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgecore.yaml")
			if err := os.WriteFile(path, []byte(tt.in), 0o600); err != nil {
				t.Fatal(err)
			}
			err := eraseToken(path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("eraseToken = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Errorf("file =\n%s\nwant\n%s", got, tt.want)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600 kept", st.Mode().Perm())
			}
		})
	}
	if err := eraseToken(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("eraseToken on a missing file succeeded")
	}
}
