package configflag

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/pkg/version"
)

func TestPrintIfRequested(t *testing.T) {
	def := func() any { return map[string]string{"kind": "Test", "which": "default"} }
	min := func() any { return map[string]string{"kind": "Test", "which": "min"} }
	tests := []struct {
		args    []string
		printed bool
		want    string
	}{
		{nil, false, ""},
		{[]string{"--defaultconfig"}, true, "kind: Test\nwhich: default\n"},
		{[]string{"--minconfig"}, true, "kind: Test\nwhich: min\n"},
		{[]string{"--config", "/x.yaml"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			opts := NewOptions("/etc/default.yaml")
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
			opts.AddFlags(cmd)
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			printed, err := opts.PrintIfRequested(&out, def, min)
			if err != nil || printed != tt.printed || out.String() != tt.want {
				t.Errorf("got (%v, %v, %q), want (%v, nil, %q)", printed, err, out.String(), tt.printed, tt.want)
			}
		})
	}
}

func TestInitRoot(t *testing.T) {
	cmd := &cobra.Command{Use: "tool", RunE: func(*cobra.Command, []string) error { return nil }}
	InitRoot(cmd)
	for _, name := range []string{"v", "vmodule", "log-file", "log_file"} {
		if cmd.PersistentFlags().Lookup(name) == nil {
			t.Errorf("klog flag --%s not registered", name)
		}
	}
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "tool " + version.Get().String() + "\n"; out.String() != want {
		t.Errorf("version printed %q, want %q", out.String(), want)
	}
}

func TestExecute(t *testing.T) {
	tests := []struct {
		name    string
		runErr  error
		args    []string
		code    int
		wantErr string
	}{
		{"success", nil, nil, 0, ""},
		{"failure", errors.New("loading config /x.yaml: yaml: unmarshal errors:\n  line 3: key \"kind\" already set"), nil, 1,
			"tool: error: loading config /x.yaml: yaml: unmarshal errors: line 3: key \"kind\" already set\n"},
		{"unknown flag", nil, []string{"--bogus"}, 1, "tool: error: unknown flag: --bogus\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "tool", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return tt.runErr }}
			InitRoot(cmd)
			var stdout, stderr bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			cmd.SetArgs(tt.args)
			if code := Execute(cmd); code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if stderr.String() != tt.wantErr || stdout.Len() != 0 {
				t.Errorf("stderr %q (want %q), stdout %q (want empty)", stderr.String(), tt.wantErr, stdout.String())
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                               "plain",
		"a\nb":                                "a; b",
		"errors:\n  line 1: x\n  line 2: y\n": "errors: line 1: x; line 2: y",
		"unknown command\n\nDid you mean this?\n": "unknown command; Did you mean this?",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
