package framework

import (
	"context"
	"testing"
	"time"

	edgecerts "github.com/tether-edge/tether/edge/edgehub/certificate"
	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
)

// BootstrapEdge trades cfg's join token for its node certificate now, into the files edgecore reads, as edgecore
// does on its first start. Tests that stand in for Edged and create the node's Node object call it first: a join
// token only obtains a certificate for a node name that is free, never for an existing Node.
func BootstrapEdge(t testing.TB, cfg *edgecfg.EdgeCore) {
	t.Helper()
	hub := cfg.Modules.EdgeHub
	m, err := edgecerts.New(edgecerts.Config{
		NodeName: cfg.NodeName(), Token: hub.Token, HTTPServer: hub.HTTPServer,
		CAFile: hub.TLSCAFile, CertFile: hub.TLSCertFile, KeyFile: hub.TLSPrivateKeyFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Ensure(ctx); err != nil {
		t.Fatalf("bootstrapping the certificate of node %s: %v", cfg.NodeName(), err)
	}
}
