package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr bool
	}{
		{name: "defaults", want: options{port: 8089, namespace: "default", device: "counter", property: "status"}},
		{name: "env", env: map[string]string{"COUNTER_WEB_PORT": "9000", "COUNTER_DEVICE_NAME": "c2",
			"COUNTER_DEVICE_NAMESPACE": "demo", "COUNTER_WEB_ADDRESS": "127.0.0.1"},
			want: options{address: "127.0.0.1", port: 9000, namespace: "demo", device: "c2", property: "status"}},
		{name: "flags win over env", args: []string{"--port", "8080", "--kubeconfig", "/k", "--device", "d"},
			env:  map[string]string{"COUNTER_WEB_PORT": "9000", "COUNTER_DEVICE_NAME": "c2"},
			want: options{port: 8080, kubeconfig: "/k", namespace: "default", device: "d", property: "status"}},
		{name: "bad env port", env: map[string]string{"COUNTER_WEB_PORT": "x"}, wantErr: true},
		{name: "port out of range", args: []string{"--port", "70000"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parseFlags = %+v, want an error", got)
				}
				return
			}
			if err != nil || *got != tc.want {
				t.Fatalf("parseFlags = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRestConfigFromKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	const kc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := restConfig(path)
	if err != nil || cfg.Host != "https://127.0.0.1:6443" {
		t.Fatalf("restConfig = %+v, %v", cfg, err)
	}
	if _, err := restConfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("restConfig of a missing file succeeded")
	}
}
