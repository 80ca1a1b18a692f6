package app

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tether-edge/tether/pkg/version"
)

func TestKeadm(t *testing.T) {
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"version"}, "keadm " + version.Get().String() + "\n", ""},
		{nil, "Usage:", ""},
		{[]string{"--bogus"}, "", "unknown flag: --bogus"},
		{[]string{"joni"}, "", `unknown command "joni" for "keadm"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := NewKeadmCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("got (%q, %v), want output containing %q", out.String(), err, tt.wantOut)
			}
		})
	}
}
