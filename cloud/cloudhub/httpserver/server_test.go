package httpserver_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/cloud/cloudhub/httpserver"
	"github.com/tether-edge/tether/cloud/cloudhub/revocation"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

var testNow = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

const validity = 48 * time.Hour

func fixedNow() time.Time { return testNow }

type env struct {
	bundle *certificate.Bundle
	kube   *fake.Clientset
	reg    *prometheus.Registry
	server *httpserver.Server
	rev    *revocation.Manager
	clock  *clock
	url    string
	jwt    string // a valid bearer token
	full   string // the full keadm token
}

// clock is the settable time of the server and the revocation list.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

func newBundle(t testing.TB, kube *fake.Clientset) *certificate.Bundle {
	t.Helper()
	dir := t.TempDir()
	b, err := certificate.Prepare(context.Background(), kube, v1alpha1.CloudHub{
		TLSCAFile:        filepath.Join(dir, "none"),
		TLSCAKeyFile:     filepath.Join(dir, "none"),
		AdvertiseAddress: []string{"127.0.0.1"},
	}, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newToken(t testing.TB, b *certificate.Bundle, ttl time.Duration, at time.Time) (full, jwtPart string) {
	t.Helper()
	keyDER, err := b.CAKeyDER()
	if err != nil {
		t.Fatal(err)
	}
	full, err = token.Create(b.CA.Raw, keyDER, ttl, at)
	if err != nil {
		t.Fatal(err)
	}
	if _, jwtPart, err = token.Parse(full); err != nil {
		t.Fatal(err)
	}
	return full, jwtPart
}

const edgeRole = "node-role.kubernetes.io/edge"

// The cluster of every env: an ordinary kubelet node and an edge node that
// has joined.
func clusterNodes() []runtime.Object {
	return []runtime.Object{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kubelet1", UID: "uid-kubelet1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "joined", UID: "uid-joined", Labels: map[string]string{edgeRole: ""}}},
	}
}

// newEnv serves the handler over real TLS with the bundle's configuration,
// as Run does, with a running revocation list that watches Node deletions.
func newEnv(t *testing.T) *env {
	t.Helper()
	kube := fake.NewClientset(clusterNodes()...)
	e := &env{bundle: newBundle(t, kube), kube: kube, reg: prometheus.NewRegistry(), clock: &clock{now: testNow}}
	e.full, e.jwt = newToken(t, e.bundle, 24*time.Hour, testNow)
	nodes := informers.NewSharedInformerFactory(kube, 0)
	var err error
	e.rev, err = revocation.New(revocation.Options{Kube: kube, NodeInformer: nodes.Core().V1().Nodes().Informer(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.rev.Run(ctx) }()
	nodes.Start(ctx.Done())
	nodes.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() { cancel(); <-done; nodes.Shutdown() })
	for deadline := time.Now().Add(10 * time.Second); !e.rev.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("revocation list not loaded")
		}
	}
	e.server = httpserver.New(httpserver.Options{
		Bundle: e.bundle, Kube: kube, CertValidity: validity, Now: e.clock.Now, Registerer: e.reg, Revocation: e.rev,
	})
	ts := httptest.NewUnstartedServer(e.server.Handler())
	ts.TLS = e.bundle.ServerTLSConfig(tls.RequestClientCert)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

// client verifies the server like an edge does; cert, when set, is sent
// whatever CAs the server asks for, as a misbehaving client might.
func (e *env) client(t *testing.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool(e.bundle.CA), Time: fixedNow}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func csrFor(t testing.TB, node string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, der, err := certs.NewNodeCSR(node)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func do(t *testing.T, c *http.Client, method, url string, header map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// issue obtains a certificate for node with the env's token.
func (e *env) issue(t *testing.T, node string) *tls.Certificate {
	t.Helper()
	key, csr := csrFor(t, node)
	status, body := do(t, e.client(t, nil), http.MethodGet, e.url+"/edge.crt",
		map[string]string{"NodeName": node, "Authorization": "Bearer " + e.jwt}, csr)
	if status != http.StatusOK {
		t.Fatalf("issue %s: %d %s", node, status, body)
	}
	return &tls.Certificate{Certificate: [][]byte{body}, PrivateKey: key}
}

func TestCACert(t *testing.T) {
	e := newEnv(t)
	status, body := do(t, e.client(t, nil), http.MethodGet, e.url+"/ca.crt", nil, nil)
	if status != http.StatusOK || !bytes.Equal(body, e.bundle.CA.Raw) {
		t.Fatalf("GET /ca.crt = %d, body equals CA DER: %v", status, bytes.Equal(body, e.bundle.CA.Raw))
	}
	// The edge pins the downloaded CA with the token hash.
	if err := token.VerifyCAHash(e.full, body); err != nil {
		t.Error(err)
	}
}

func TestEdgeCert(t *testing.T) {
	e := newEnv(t)
	edge1Cert := e.issue(t, "edge1")
	edge2Cert := e.issue(t, "edge2")
	other := newBundle(t, fake.NewClientset())
	_, otherJWT := newToken(t, other, 24*time.Hour, testNow)
	_, expiredJWT := newToken(t, e.bundle, time.Hour, testNow.Add(-2*time.Hour))
	otherKey, otherCSR := csrFor(t, "edge1")
	otherDER, err := certs.SignNodeCSR(other.CA, other.CAKey, otherCSR, "edge1", nil, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	foreignCert := &tls.Certificate{Certificate: [][]byte{otherDER}, PrivateKey: otherKey}
	_, csr1 := csrFor(t, "edge1")
	_, csr2 := csrFor(t, "edge2")
	bearer := "Bearer " + e.jwt

	tests := []struct {
		name       string
		header     map[string]string
		cert       *tls.Certificate
		body       []byte
		wantStatus int
		wantMsg    string // substring of the refusal
		wantUsages []x509.ExtKeyUsage
	}{
		{name: "token", header: map[string]string{"NodeName": "edge1", "Authorization": bearer}, body: csr1,
			wantStatus: 200, wantUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "token with usages", header: map[string]string{"NodeName": "edge1", "Authorization": bearer, "ExtKeyUsages": "[2,1]"}, body: csr1,
			wantStatus: 200, wantUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{name: "full keadm token", header: map[string]string{"NodeName": "edge1", "Authorization": "Bearer " + e.full}, body: csr1,
			wantStatus: 200, wantUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "rotation with client cert", header: map[string]string{"NodeName": "edge1"}, cert: edge1Cert, body: csr1,
			wantStatus: 200, wantUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "rotation with another node's cert", header: map[string]string{"NodeName": "edge1"}, cert: edge2Cert, body: csr1,
			wantStatus: 401, wantMsg: `does not identify node "edge1"`},
		{name: "rotation with cert from another CA", header: map[string]string{"NodeName": "edge1"}, cert: foreignCert, body: csr1,
			wantStatus: 401, wantMsg: "client certificate not authorized"},
		{name: "bad cert falls back to token", header: map[string]string{"NodeName": "edge1", "Authorization": bearer}, cert: edge2Cert, body: csr1,
			wantStatus: 200, wantUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "no credentials", header: map[string]string{"NodeName": "edge1"}, body: csr1,
			wantStatus: 401, wantMsg: "missing Authorization"},
		{name: "not bearer", header: map[string]string{"NodeName": "edge1", "Authorization": "Basic " + e.jwt}, body: csr1,
			wantStatus: 401, wantMsg: "Bearer <token>"},
		{name: "garbage token", header: map[string]string{"NodeName": "edge1", "Authorization": "Bearer abc"}, body: csr1,
			wantStatus: 401, wantMsg: "malformed token"},
		{name: "token from another CA key", header: map[string]string{"NodeName": "edge1", "Authorization": "Bearer " + otherJWT}, body: csr1,
			wantStatus: 401, wantMsg: "invalid token signature"},
		{name: "full token for another CA", header: map[string]string{"NodeName": "edge1", "Authorization": "Bearer " + strings.Repeat("0", 64) + "." + e.jwt}, body: csr1,
			wantStatus: 401, wantMsg: "CA certificate does not match token"},
		{name: "expired token", header: map[string]string{"NodeName": "edge1", "Authorization": "Bearer " + expiredJWT}, body: csr1,
			wantStatus: 401, wantMsg: "token expired at 2031-01-02T02:04:05Z"},
		{name: "missing NodeName", header: map[string]string{"Authorization": bearer}, body: csr1,
			wantStatus: 400, wantMsg: "missing NodeName header"},
		{name: "invalid NodeName", header: map[string]string{"NodeName": "Edge_1", "Authorization": bearer}, body: csr1,
			wantStatus: 400, wantMsg: "invalid NodeName header"},
		{name: "bad ExtKeyUsages", header: map[string]string{"NodeName": "edge1", "Authorization": bearer, "ExtKeyUsages": "client"}, body: csr1,
			wantStatus: 400, wantMsg: "invalid ExtKeyUsages header"},
		{name: "forbidden usage", header: map[string]string{"NodeName": "edge1", "Authorization": bearer, "ExtKeyUsages": "[4]"}, body: csr1,
			wantStatus: 403, wantMsg: "extended key usage 4 not allowed"},
		{name: "garbage body", header: map[string]string{"NodeName": "edge1", "Authorization": bearer}, body: []byte("not a CSR"),
			wantStatus: 400, wantMsg: "malformed certificate signing request"},
		{name: "empty body", header: map[string]string{"NodeName": "edge1", "Authorization": bearer},
			wantStatus: 400, wantMsg: "empty body"},
		{name: "oversized body", header: map[string]string{"NodeName": "edge1", "Authorization": bearer}, body: make([]byte, httpserver.MaxCSRBytes+1),
			wantStatus: 413, wantMsg: "CSR larger than"},
		{name: "CSR for another node", header: map[string]string{"NodeName": "edge1", "Authorization": bearer}, body: csr2,
			wantStatus: 403, wantMsg: `does not match node "edge1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, e.client(t, tc.cert), http.MethodGet, e.url+"/edge.crt", tc.header, tc.body)
			if status != tc.wantStatus {
				t.Fatalf("status = %d (%s), want %d", status, body, tc.wantStatus)
			}
			if status != http.StatusOK {
				msg := string(body)
				if !strings.Contains(msg, tc.wantMsg) || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
					t.Errorf("body = %q, want one line containing %q", msg, tc.wantMsg)
				}
				return
			}
			checkNodeCert(t, e.bundle.CA, body, "edge1", tc.wantUsages)
		})
	}

	// Two certificates were issued while setting up, plus the table's.
	want := map[string]float64{"issued": 2, "bad_request": 0, "unauthorized": 0, "forbidden": 0, "too_large": 0, "unavailable": 0, "error": 0}
	for _, tc := range tests {
		want[map[int]string{200: "issued", 400: "bad_request", 401: "unauthorized", 403: "forbidden", 413: "too_large"}[tc.wantStatus]]++
	}
	if got := counter(t, e.reg, "tether_cloudhub_cert_requests_total", "result"); !mapsEqual(got, want) {
		t.Errorf("tether_cloudhub_cert_requests_total = %v, want %v", got, want)
	}
}

func checkNodeCert(t *testing.T, ca *x509.Certificate, der []byte, node string, usages []x509.ExtKeyUsage) {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("response is not a DER certificate: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: testNow, KeyUsages: usages}); err != nil {
		t.Errorf("certificate does not verify against the CA: %v", err)
	}
	if cert.Subject.CommonName != "system:node:"+node || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("subject = %v", cert.Subject)
	}
	if !cert.NotAfter.Equal(testNow.Add(validity)) {
		t.Errorf("NotAfter = %v, want %v", cert.NotAfter, testNow.Add(validity))
	}
	if !slices.Equal(slices.Sorted(slices.Values(cert.ExtKeyUsage)), slices.Sorted(slices.Values(usages))) {
		t.Errorf("ExtKeyUsage = %v, want %v", cert.ExtKeyUsage, usages)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestNode(t *testing.T) {
	e := newEnv(t)
	e.kube.PrependReactor("get", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == "flaky" {
			return true, nil, errors.New("etcdserver: leader changed")
		}
		return false, nil, nil
	})
	tests := []struct {
		node       string
		wantStatus int
		wantBody   string
	}{
		{"kubelet1", 200, "Node founded"},
		{"joined", 200, "Node founded"},
		{"edge9", 404, "Node not found"},
		{"Not_A_Name", 404, "Node not found"},
		{"flaky", 500, "look up node \"flaky\": etcdserver: leader changed\n"},
	}
	for _, tc := range tests {
		t.Run(tc.node, func(t *testing.T) {
			status, body := do(t, e.client(t, nil), http.MethodGet, e.url+"/node/"+tc.node, nil, nil)
			if status != tc.wantStatus || string(body) != tc.wantBody {
				t.Errorf("GET /node/%s = %d %q, want %d %q", tc.node, status, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	kube := fake.NewClientset()
	b := newBundle(t, kube)
	s := httpserver.New(httpserver.Options{Bundle: b, Kube: kube, Now: fixedNow})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(b.CA), Time: fixedNow}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, b.CA.Raw) || resp.TLS == nil {
		t.Fatalf("GET /ca.crt over Serve = %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v after cancel", err)
	}
}

func TestRunErrors(t *testing.T) {
	kube := fake.NewClientset()
	b := newBundle(t, kube)
	tests := []struct {
		name string
		opts httpserver.Options
		want string
	}{
		{"no bundle", httpserver.Options{Kube: kube, Address: "127.0.0.1:0"}, "bundle"},
		{"no client", httpserver.Options{Bundle: b, Address: "127.0.0.1:0"}, "Kubernetes client"},
		{"bad address", httpserver.Options{Bundle: b, Kube: kube, Address: "127.0.0.1:notaport"}, `listen on "127.0.0.1:notaport"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := httpserver.New(tc.opts)
			err := s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want error containing %q", err, tc.want)
			}
			// The handler must not panic on a misconfigured server either.
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ca.crt", nil))
			if tc.opts.Bundle == nil && rec.Code != http.StatusInternalServerError {
				t.Errorf("handler status = %d, want 500", rec.Code)
			}
		})
	}
}

// FuzzEdgeCert feeds arbitrary bodies and headers to /edge.crt with a valid
// token: it must never panic, must answer with a client error or a
// certificate, and any certificate must be for the named node.
func FuzzEdgeCert(f *testing.F) {
	kube := fake.NewClientset()
	b := newBundle(f, kube)
	_, jwtPart := newToken(f, b, time.Hour, testNow)
	h := httpserver.New(httpserver.Options{Bundle: b, Kube: kube, CertValidity: validity, Now: fixedNow}).Handler()

	_, csr1 := csrFor(f, "edge1")
	_, csr2 := csrFor(f, "edge2")
	f.Add(csr1, "edge1", "")
	f.Add(csr1, "edge1", "[1,2]")
	f.Add(csr1, "edge1", "[4]")
	f.Add(csr1, "edge1", "[99999999999999999999]")
	f.Add(csr2, "edge1", "")
	f.Add(csr1[:len(csr1)/2], "edge1", "")
	f.Add([]byte{}, "edge1", "")
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, "edge1", "null")
	f.Add(csr1, "", "")
	f.Add(csr1, "EDGE1", "{}")

	f.Fuzz(func(t *testing.T, body []byte, node, usages string) {
		req := httptest.NewRequest(http.MethodGet, "/edge.crt", bytes.NewReader(body))
		req.Header["Nodename"] = []string{node}
		req.Header["Extkeyusages"] = []string{usages}
		req.Header.Set("Authorization", "Bearer "+jwtPart)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			cert, err := x509.ParseCertificate(rec.Body.Bytes())
			if err != nil {
				t.Fatalf("200 with a body that is not a certificate: %v", err)
			}
			if cert.Subject.CommonName != "system:node:"+node {
				t.Fatalf("issued CN %q for NodeName %q", cert.Subject.CommonName, node)
			}
			if err := cert.CheckSignatureFrom(b.CA); err != nil {
				t.Fatalf("issued certificate not signed by the CA: %v", err)
			}
		case http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
