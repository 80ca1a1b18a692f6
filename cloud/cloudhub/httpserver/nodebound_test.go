package httpserver_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/cloud/cloudhub/httpserver"
	"github.com/tether-edge/tether/cloud/cloudhub/revocation"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/security/certs"
	rev "github.com/tether-edge/tether/pkg/security/revocation"
	"github.com/tether-edge/tether/pkg/security/token"
)

// rejoinJWT is the JWT of a re-join token for node, issued at `at`.
func rejoinJWT(t *testing.T, b *certificate.Bundle, node string, ttl time.Duration, at time.Time) string {
	t.Helper()
	keyDER, err := b.CAKeyDER()
	if err != nil {
		t.Fatal(err)
	}
	full, err := token.CreateRejoin(b.CA.Raw, keyDER, node, ttl, at)
	if err != nil {
		t.Fatal(err)
	}
	_, jwtPart, err := token.Parse(full)
	if err != nil {
		t.Fatal(err)
	}
	return jwtPart
}

// signed is a node certificate issued at `at` without going through the
// service: what an edge node that joined earlier holds.
func (e *env) signed(t *testing.T, node string, at time.Time) *tls.Certificate {
	t.Helper()
	key, csr := csrFor(t, node)
	der, err := certs.SignNodeCSR(e.bundle.CA, e.bundle.CAKey, csr, node, nil, validity, at)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// legacy is a KubeEdge < 1.12 edge certificate, which names no node.
func (e *env) legacy(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242),
		Subject:      pkix.Name{CommonName: certs.LegacyCommonName, Organization: []string{certs.LegacyOrganization}},
		NotBefore:    testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.bundle.CA, key.Public(), e.bundle.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type certRequest struct {
	node   string
	bearer string           // JWT or full token; "" for none
	cert   *tls.Certificate // client certificate; nil for none
}

func (e *env) request(t *testing.T, r certRequest) (int, string, *tls.Certificate) {
	t.Helper()
	key, csr := csrFor(t, r.node)
	h := map[string]string{"NodeName": r.node}
	if r.bearer != "" {
		h["Authorization"] = "Bearer " + r.bearer
	}
	status, body := do(t, e.client(t, r.cert), http.MethodGet, e.url+"/edge.crt", h, csr)
	if status != http.StatusOK {
		return status, string(body), nil
	}
	return status, "", &tls.Certificate{Certificate: [][]byte{body}, PrivateKey: key}
}

func (e *env) listFloor(t *testing.T, node string) (rev.NodeFloor, bool) {
	t.Helper()
	cm, err := e.kube.CoreV1().ConfigMaps(rev.Namespace).Get(context.Background(), rev.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return rev.NodeFloor{}, false
	}
	l, _ := rev.Decode(cm.Data)
	return l.Floor(node)
}

// Each rule of node-bound credentials, one request each, on a fresh server.
func TestNodeBoundRules(t *testing.T) {
	expiredRejoin := func(e *env) string { return rejoinJWT(t, e.bundle, "joined", time.Hour, testNow.Add(-2*time.Hour)) }
	tests := []struct {
		name       string
		req        func(e *env) certRequest
		wantStatus int
		wantReason string // label of tether_cloudhub_cert_refusals_total
		wantMsg    string
	}{
		{"token for a new node", func(e *env) certRequest { return certRequest{node: "edge-new", bearer: e.jwt} }, 200, "", ""},
		{"token for a kubelet node", func(e *env) certRequest { return certRequest{node: "kubelet1", bearer: e.jwt} },
			403, "kubelet_node", "node kubelet1 is a kubelet node, not an edge node"},
		{"full token for a kubelet node", func(e *env) certRequest { return certRequest{node: "kubelet1", bearer: e.full} },
			403, "kubelet_node", "kubelet node"},
		{"token for an edge node that joined", func(e *env) certRequest { return certRequest{node: "joined", bearer: e.jwt} },
			403, "edge_node_exists", `edge node joined has already joined; to replace it, run "keadm gettoken --rejoin joined" on the cloud`},
		{"re-join token for another node", func(e *env) certRequest {
			return certRequest{node: "edge-new", bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)}
		}, 403, "rejoin_token_other_node", `the re-join token is for node "joined", not "edge-new"`},
		{"re-join token of an edge node used for another edge node", func(e *env) certRequest {
			return certRequest{node: "joined", bearer: rejoinJWT(t, e.bundle, "other", time.Hour, testNow)}
		}, 403, "rejoin_token_other_node", `is for node "other"`},
		{"re-join token for a kubelet node", func(e *env) certRequest {
			return certRequest{node: "kubelet1", bearer: rejoinJWT(t, e.bundle, "kubelet1", time.Hour, testNow)}
		}, 403, "kubelet_node", "kubelet node"},
		{"expired re-join token", func(e *env) certRequest { return certRequest{node: "joined", bearer: expiredRejoin(e)} },
			401, "bad_token", "token expired"},
		{"re-join token for its node", func(e *env) certRequest {
			return certRequest{node: "joined", bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)}
		}, 200, "", ""},
		{"re-join token for a node that is gone", func(e *env) certRequest {
			return certRequest{node: "edge-new", bearer: rejoinJWT(t, e.bundle, "edge-new", time.Hour, testNow)}
		}, 200, "", ""},
		{"legacy certificate for an edge node that joined", func(e *env) certRequest { return certRequest{node: "joined", cert: e.legacy(t)} },
			403, "edge_node_exists", "already joined"},
		{"legacy certificate for a new node", func(e *env) certRequest { return certRequest{node: "edge-new", cert: e.legacy(t)} }, 200, "", ""},
		{"revoked certificate falls back to a token: rule 1 still holds", func(e *env) certRequest {
			c := e.signed(t, "joined", testNow.Add(-time.Hour))
			if err := e.rev.RevokeNode(context.Background(), "joined", testNow.Add(-time.Minute), rev.ReasonKeadm); err != nil {
				t.Fatal(err)
			}
			return certRequest{node: "joined", cert: c, bearer: e.jwt}
		}, 403, "edge_node_exists", "already joined"},
		{"node certificate of a kubelet node name (rotation)", func(e *env) certRequest {
			return certRequest{node: "kubelet1", cert: e.signed(t, "kubelet1", testNow.Add(-time.Hour))}
		}, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			status, body, _ := e.request(t, tt.req(e))
			if status != tt.wantStatus || !strings.Contains(body, tt.wantMsg) {
				t.Fatalf("/edge.crt = %d %q, want %d containing %q", status, body, tt.wantStatus, tt.wantMsg)
			}
			if status != http.StatusOK && (strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n")) {
				t.Errorf("refusal %q is not one line", body)
			}
			got := counter(t, e.reg, "tether_cloudhub_cert_refusals_total", "reason")
			for reason, n := range got {
				want := 0.0
				if reason == tt.wantReason {
					want = 1
				}
				if n != want {
					t.Errorf("refusals{reason=%s} = %v, want %v", reason, n, want)
				}
			}
			if _, ok := got["kubelet_node"]; !ok {
				t.Error("refusal series are not pre-created")
			}
		})
	}
}

// A re-join replaces the node: its older certificates are revoked (for
// rotation, and in the list every cloudcore reads), the new one works.
func TestRejoinRevokesOlderCertificates(t *testing.T) {
	e := newEnv(t)
	old := e.signed(t, "joined", testNow.Add(-time.Hour))
	if status, body, _ := e.request(t, certRequest{node: "joined", cert: old}); status != 200 {
		t.Fatalf("rotation before the re-join: %d %s", status, body)
	}
	e.clock.Add(90 * time.Second)
	status, body, fresh := e.request(t, certRequest{node: "joined", bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)})
	if status != 200 {
		t.Fatalf("re-join: %d %s", status, body)
	}
	f, ok := e.listFloor(t, "joined")
	if !ok || !f.Before.Equal(e.clock.Now()) || f.Reason != rev.ReasonRejoined {
		t.Fatalf("floor in the ConfigMap = %+v (%v), want the re-join time", f, ok)
	}
	status, body, _ = e.request(t, certRequest{node: "joined", cert: old})
	if status != http.StatusForbidden || !strings.Contains(body, rev.RuleNode) {
		t.Errorf("rotation with the replaced certificate = %d %q, want 403 naming %s", status, body, rev.RuleNode)
	}
	if status, body, _ := e.request(t, certRequest{node: "joined", cert: fresh}); status != 200 {
		t.Errorf("rotation with the re-joined certificate = %d %q", status, body)
	}
	// The same token again, a second later: it replaces the node once more.
	e.clock.Add(time.Second)
	status, _, again := e.request(t, certRequest{node: "joined", bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)})
	if status != 200 {
		t.Fatal("second re-join refused")
	}
	if status, _, _ := e.request(t, certRequest{node: "joined", cert: fresh}); status != http.StatusForbidden {
		t.Errorf("certificate of the first re-join still rotates after the second: %d", status)
	}
	if status, _, _ := e.request(t, certRequest{node: "joined", cert: again}); status != 200 {
		t.Errorf("certificate of the second re-join: %d", status)
	}
}

func TestRejoinNotRecordedIsNotGranted(t *testing.T) {
	e := newEnv(t)
	old := e.signed(t, "joined", testNow.Add(-time.Hour))
	e.kube.PrependReactor("*", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcdserver: request timed out")
	})
	status, body, _ := e.request(t, certRequest{node: "joined", bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)})
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "cannot revoke its older certificates") {
		t.Fatalf("re-join without a revocation write = %d %q, want 503", status, body)
	}
	if status, _, _ := e.request(t, certRequest{node: "joined", cert: old}); status != 200 {
		t.Errorf("the old node must keep working when the re-join failed: %d", status)
	}
}

func TestRotationRefusesRevoked(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stolen := e.signed(t, "joined", testNow.Add(-time.Hour))
	sibling := e.signed(t, "joined", testNow.Add(-time.Hour))
	leaf, _ := x509.ParseCertificate(stolen.Certificate[0])
	if _, err := rev.RevokeSerial(ctx, e.kube, rev.SerialHex(leaf.SerialNumber),
		rev.SerialEntry{Node: "joined", RevokedAt: testNow, NotAfter: leaf.NotAfter, Reason: "stolen"}, testNow); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "serial revocation seen", func() bool { return e.rev.CheckNode(leaf, "joined") != nil })
	status, body, _ := e.request(t, certRequest{node: "joined", cert: stolen})
	if status != http.StatusForbidden || !strings.Contains(body, rev.RuleSerial) || !strings.Contains(body, "stolen") {
		t.Errorf("rotation with a revoked serial = %d %q", status, body)
	}
	if status, _, _ := e.request(t, certRequest{node: "joined", cert: sibling}); status != 200 {
		t.Errorf("another certificate of the node: %d", status)
	}
	// A re-join token still lets the node back.
	status, body, _ = e.request(t, certRequest{node: "joined", cert: stolen, bearer: rejoinJWT(t, e.bundle, "joined", time.Hour, testNow)})
	if status != 200 {
		t.Errorf("revoked certificate with a re-join token = %d %q", status, body)
	}
	if got := counter(t, e.reg, "tether_cloudhub_cert_refusals_total", "reason")[rev.RuleSerial]; got != 1 {
		t.Errorf("refusals{reason=%s} = %v", rev.RuleSerial, got)
	}
}

// A deleted Node stays out until it joins again, which an ordinary token
// does at once, in the same second, despite NotBefore backdating.
func TestDeletedNodeStaysOut(t *testing.T) {
	e := newEnv(t)
	old := e.signed(t, "joined", testNow.Add(-time.Hour))
	now := e.clock.Add(1500 * time.Millisecond) // a floor in the middle of a second
	if err := e.kube.CoreV1().Nodes().Delete(context.Background(), "joined", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deletion floor", func() bool { f, ok := e.listFloor(t, "joined"); return ok && f.Before.Equal(now) })
	status, body, _ := e.request(t, certRequest{node: "joined", cert: old})
	if status != http.StatusForbidden || !strings.Contains(body, "node deleted") {
		t.Fatalf("rotation of a deleted node = %d %q", status, body)
	}
	e.clock.Add(100 * time.Millisecond) // still the floor's second
	status, body, fresh := e.request(t, certRequest{node: "joined", bearer: e.jwt})
	if status != 200 {
		t.Fatalf("join again with a token = %d %q", status, body)
	}
	leaf, _ := x509.ParseCertificate(fresh.Certificate[0])
	if issued := certs.IssuedAt(leaf); issued.Before(now) || !leaf.NotBefore.Before(now) {
		t.Errorf("new certificate issued %v (NotBefore %v), floor %v", issued, leaf.NotBefore, now)
	}
	if status, body, _ := e.request(t, certRequest{node: "joined", cert: fresh}); status != 200 {
		t.Errorf("rotation of the re-joined node = %d %q", status, body)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("revocation list not loaded", func(t *testing.T) {
		e := newEnv(t)
		kube := fake.NewClientset()
		notRunning, err := newManager(kube)
		if err != nil {
			t.Fatal(err)
		}
		srv := httpserver.New(httpserver.Options{Bundle: e.bundle, Kube: e.kube, CertValidity: validity, Now: fixedNow, Revocation: notRunning})
		rec := serve(t, srv, "joined", e.signed(t, "joined", testNow.Add(-time.Hour)), e.jwt)
		if rec != http.StatusServiceUnavailable {
			t.Errorf("rotation before the list is loaded = %d, want 503", rec)
		}
	})
	t.Run("Node lookup fails", func(t *testing.T) {
		e := newEnv(t)
		e.kube.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("etcdserver: leader changed")
		})
		status, body, _ := e.request(t, certRequest{node: "edge-new", bearer: e.jwt})
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "leader changed") {
			t.Errorf("token join while the API fails = %d %q, want 503", status, body)
		}
	})
	t.Run("no revocation configured: no re-join", func(t *testing.T) {
		kube := fake.NewClientset(clusterNodes()...)
		b := newBundle(t, kube)
		srv := httpserver.New(httpserver.Options{Bundle: b, Kube: kube, CertValidity: validity, Now: fixedNow})
		if rec := serve(t, srv, "joined", nil, rejoinJWT(t, b, "joined", time.Hour, testNow)); rec != http.StatusServiceUnavailable {
			t.Errorf("re-join without revocation = %d, want 503", rec)
		}
	})
}

// The default edge certificate lifetime for new installs is 30 days.
func TestDefaultEdgeCertValidity(t *testing.T) {
	if got := certificate.EdgeCertValidity(*v1alpha1.NewDefaultCloudCore().Modules.CloudHub); got != 30*24*time.Hour {
		t.Errorf("default edge certificate validity = %v, want 720h", got)
	}
	if certs.DefaultNodeCertValidity != 30*24*time.Hour {
		t.Errorf("certs.DefaultNodeCertValidity = %v", certs.DefaultNodeCertValidity)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func newManager(kube *fake.Clientset) (*revocation.Manager, error) {
	return revocation.New(revocation.Options{Kube: kube})
}

// serve runs one /edge.crt request through the handler, with cert as the
// TLS peer certificate; it returns the status.
func serve(t *testing.T, srv *httpserver.Server, node string, cert *tls.Certificate, bearer string) int {
	t.Helper()
	_, csr := csrFor(t, node)
	req := httptest.NewRequest(http.MethodGet, "/edge.crt", bytes.NewReader(csr))
	req.Header.Set("NodeName", node)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if cert != nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec.Code
}
