//go:build integration

// Package integration holds tests that run the project against a real kube-apiserver and etcd.
package integration

import (
	"os"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
