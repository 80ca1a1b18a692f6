package certificate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/security/certs"
)

var testNow = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// testConfig points every file option at paths that do not exist yet.
func testConfig(t *testing.T) v1alpha1.CloudHub {
	t.Helper()
	dir := t.TempDir()
	return v1alpha1.CloudHub{
		TLSCAFile:               filepath.Join(dir, "ca", "rootCA.crt"),
		TLSCAKeyFile:            filepath.Join(dir, "ca", "rootCA.key"),
		TLSCertFile:             filepath.Join(dir, "certs", "server.crt"),
		TLSPrivateKeyFile:       filepath.Join(dir, "certs", "server.key"),
		AdvertiseAddress:        []string{"10.0.0.1"},
		DNSNames:                []string{"cloud.example.com", ""},
		EdgeCertSigningDuration: 365,
		TokenRefreshDuration:    12,
	}
}

type pair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) pair {
	t.Helper()
	c, k, err := certs.NewCA(testNow)
	if err != nil {
		t.Fatal(err)
	}
	return pair{c, k}
}

func newServer(t *testing.T, ca pair, at time.Time, addrs, dns []string) pair {
	t.Helper()
	c, k, err := certs.NewServerCert(ca.cert, ca.key, addrs, dns, at)
	if err != nil {
		t.Fatal(err)
	}
	return pair{c, k}
}

func keyDER(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := certs.MarshalKeyDER(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func secretObj(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}, Data: data}
}

func caSecret(t *testing.T, p pair) *corev1.Secret {
	return secretObj(CASecretName, map[string][]byte{CADataKey: p.cert.Raw, CAKeyDataKey: keyDER(t, p.key)})
}

func serverSecret(t *testing.T, p pair) *corev1.Secret {
	return secretObj(ServerSecretName, map[string][]byte{ServerCertDataKey: p.cert.Raw, ServerKeyDataKey: keyDER(t, p.key)})
}

func writePair(t *testing.T, certFile, keyFile string, p pair) {
	t.Helper()
	if err := certs.SavePair(certFile, keyFile, p.cert.Raw, p.key); err != nil {
		t.Fatal(err)
	}
}

func getSecret(t *testing.T, kube *fake.Clientset, name string) map[string][]byte {
	t.Helper()
	s, err := kube.CoreV1().Secrets(Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	return s.Data
}

// checkBundle verifies invariants every successful Prepare must hold and that
// the Secrets hold exactly the bundle's material.
func checkBundle(t *testing.T, kube *fake.Clientset, cfg v1alpha1.CloudHub, b *Bundle) {
	t.Helper()
	if err := fitServerCert(b.ServerCert.Leaf, b.CA, cfg, testNow); err != nil {
		t.Errorf("server certificate unusable: %v", err)
	}
	if !bytes.Equal(b.ServerCert.Certificate[0], b.ServerCert.Leaf.Raw) {
		t.Error("ServerCert.Certificate[0] differs from Leaf")
	}
	ca := getSecret(t, kube, CASecretName)
	if !bytes.Equal(ca[CADataKey], b.CA.Raw) || !bytes.Equal(ca[CAKeyDataKey], keyDER(t, b.CAKey)) {
		t.Error("casecret does not hold the bundle's CA")
	}
	srv := getSecret(t, kube, ServerSecretName)
	key := b.ServerCert.PrivateKey.(*ecdsa.PrivateKey)
	if !bytes.Equal(srv[ServerCertDataKey], b.ServerCert.Leaf.Raw) || !bytes.Equal(srv[ServerKeyDataKey], keyDER(t, key)) {
		t.Error("cloudcoresecret does not hold the bundle's server certificate")
	}
}

func TestPrepareSources(t *testing.T) {
	caA, caB := newCA(t), newCA(t)
	addrs, dns := []string{"10.0.0.1"}, []string{"cloud.example.com"}
	srvA, srvB := newServer(t, caA, testNow, addrs, dns), newServer(t, caB, testNow, addrs, dns)

	tests := []struct {
		name string
		// setup writes files and returns pre-existing API objects.
		setup      func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object
		wantCA     *x509.Certificate // nil: newly generated
		wantServer *x509.Certificate // nil: newly issued
		check      func(t *testing.T, kube *fake.Clientset)
	}{
		{
			name:  "generate",
			setup: func(*testing.T, v1alpha1.CloudHub) []runtime.Object { return nil },
		},
		{
			name: "generate with existing namespace and unrelated secret keys",
			setup: func(*testing.T, v1alpha1.CloudHub) []runtime.Object {
				return []runtime.Object{
					&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
					secretObj(CASecretName, map[string][]byte{"other": []byte("x")}),
				}
			},
			check: func(t *testing.T, kube *fake.Clientset) {
				if string(getSecret(t, kube, CASecretName)["other"]) != "x" {
					t.Error("unrelated secret key was dropped")
				}
			},
		},
		{
			name: "secrets",
			setup: func(t *testing.T, _ v1alpha1.CloudHub) []runtime.Object {
				return []runtime.Object{caSecret(t, caA), serverSecret(t, srvA)}
			},
			wantCA: caA.cert, wantServer: srvA.cert,
		},
		{
			name: "files",
			setup: func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, caB)
				writePair(t, cfg.TLSCertFile, cfg.TLSPrivateKeyFile, srvB)
				return nil
			},
			wantCA: caB.cert, wantServer: srvB.cert,
		},
		{
			name: "files win over secrets",
			setup: func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, caB)
				writePair(t, cfg.TLSCertFile, cfg.TLSPrivateKeyFile, srvB)
				return []runtime.Object{caSecret(t, caA), serverSecret(t, srvA)}
			},
			wantCA: caB.cert, wantServer: srvB.cert,
		},
		{
			name: "CA file without key file falls back to secret",
			setup: func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object {
				writePair(t, cfg.TLSCAFile, filepath.Join(t.TempDir(), "unused.key"), caB)
				return []runtime.Object{caSecret(t, caA), serverSecret(t, srvA)}
			},
			wantCA: caA.cert, wantServer: srvA.cert,
		},
		{
			name: "CA from file, server cert from secret",
			setup: func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, caA)
				return []runtime.Object{serverSecret(t, srvA)}
			},
			wantCA: caA.cert, wantServer: srvA.cert,
		},
		{
			name: "stale server file is skipped for a fitting secret",
			setup: func(t *testing.T, cfg v1alpha1.CloudHub) []runtime.Object {
				writePair(t, cfg.TLSCertFile, cfg.TLSPrivateKeyFile, srvB)
				return []runtime.Object{caSecret(t, caA), serverSecret(t, srvA)}
			},
			wantCA: caA.cert, wantServer: srvA.cert,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			kube := fake.NewClientset(tc.setup(t, cfg)...)
			b, err := Prepare(context.Background(), kube, cfg, fixedNow)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			checkBundle(t, kube, cfg, b)
			switch {
			case tc.wantCA != nil && !b.CA.Equal(tc.wantCA):
				t.Error("CA is not the expected one")
			case tc.wantCA == nil && (b.CA.Equal(caA.cert) || b.CA.Equal(caB.cert) || b.CA.Subject.CommonName != certs.CACommonName):
				t.Errorf("want a newly generated CA, got %q", b.CA.Subject)
			}
			if _, err := kube.CoreV1().Namespaces().Get(context.Background(), Namespace, metav1.GetOptions{}); tc.wantCA == nil && err != nil {
				t.Errorf("namespace for new secrets: %v", err)
			}
			switch {
			case tc.wantServer != nil && !b.ServerCert.Leaf.Equal(tc.wantServer):
				t.Error("server certificate is not the expected one")
			case tc.wantServer == nil && (b.ServerCert.Leaf.Equal(srvA.cert) || b.ServerCert.Leaf.Equal(srvB.cert)):
				t.Error("want a newly issued server certificate")
			}
			if tc.check != nil {
				tc.check(t, kube)
			}
		})
	}
}

func TestPrepareReissuesServerCert(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	tests := []struct {
		name       string
		stored     pair
		addrs, dns []string // configuration at startup
		reissue    bool
	}{
		{"unchanged", newServer(t, ca, testNow, []string{"10.0.0.1"}, []string{"cloud.example.com"}), []string{"10.0.0.1"}, []string{"cloud.example.com", ""}, false},
		{"advertise address changed", newServer(t, ca, testNow, []string{"10.0.0.1"}, nil), []string{"10.0.0.2"}, nil, true},
		{"advertise address added", newServer(t, ca, testNow, []string{"10.0.0.1"}, nil), []string{"10.0.0.1", "10.0.0.2"}, nil, true},
		{"dns name added", newServer(t, ca, testNow, []string{"10.0.0.1"}, nil), []string{"10.0.0.1"}, []string{"lb.example.com"}, true},
		{"hostname advertise address", newServer(t, ca, testNow, []string{"lb.example.com"}, nil), []string{"lb.example.com"}, nil, false},
		{"bracketed IPv6", newServer(t, ca, testNow, []string{"fd00::1"}, nil), []string{"[fd00::1]"}, nil, false},
		{"wildcard covers name", newServer(t, ca, testNow, []string{"10.0.0.1"}, []string{"*.example.com"}), []string{"10.0.0.1"}, []string{"cloud.example.com"}, false},
		{"signed by another CA", newServer(t, otherCA, testNow, []string{"10.0.0.1"}, nil), []string{"10.0.0.1"}, nil, true},
		{"expired", newServer(t, ca, testNow.Add(-certs.LongValidity-time.Hour), []string{"10.0.0.1"}, nil), []string{"10.0.0.1"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AdvertiseAddress, cfg.DNSNames = tc.addrs, tc.dns
			kube := fake.NewClientset(caSecret(t, ca), serverSecret(t, tc.stored))
			b, err := Prepare(context.Background(), kube, cfg, fixedNow)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			checkBundle(t, kube, cfg, b)
			if got := !b.ServerCert.Leaf.Equal(tc.stored.cert); got != tc.reissue {
				t.Errorf("re-issued = %v, want %v", got, tc.reissue)
			}
			for _, a := range tc.addrs {
				if err := b.ServerCert.Leaf.VerifyHostname(a); err != nil {
					t.Errorf("SAN %s: %v", a, err)
				}
			}
		})
	}
}

func TestPrepareErrors(t *testing.T) {
	ca := newCA(t)
	srv := newServer(t, ca, testNow, []string{"10.0.0.1"}, nil)
	garbage := []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
	tests := []struct {
		name    string
		setup   func(t *testing.T, cfg *v1alpha1.CloudHub, kube *fake.Clientset)
		wantErr string // substring; "{CAFILE}" etc. are replaced by the configured paths
		// noWrites: a CA problem must leave casecret untouched, never regenerate.
		noWrites bool
	}{
		{
			name: "corrupt CA file",
			setup: func(t *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, ca)
				mustWrite(t, cfg.TLSCAFile, garbage)
			},
			wantErr:  "{CAFILE}",
			noWrites: true,
		},
		{
			name: "corrupt CA key file",
			setup: func(t *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, ca)
				mustWrite(t, cfg.TLSCAKeyFile, []byte("garbage"))
			},
			wantErr:  "{CAKEYFILE}",
			noWrites: true,
		},
		{
			name: "CA key does not match",
			setup: func(t *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				// SavePair refuses a mismatched pair: write the other key over a good one.
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, ca)
				otherKey, err := certs.EncodeKeyPEM(srv.key)
				if err != nil {
					t.Fatal(err)
				}
				mustWrite(t, cfg.TLSCAKeyFile, otherKey)
			},
			wantErr:  "does not match",
			noWrites: true,
		},
		{
			name: "CA file is not a CA",
			setup: func(t *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				writePair(t, cfg.TLSCAFile, cfg.TLSCAKeyFile, srv)
			},
			wantErr:  "is not a CA",
			noWrites: true,
		},
		{
			name: "corrupt server file",
			setup: func(t *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				writePair(t, cfg.TLSCertFile, cfg.TLSPrivateKeyFile, srv)
				mustWrite(t, cfg.TLSCertFile, garbage)
			},
			wantErr: "{CERTFILE}",
		},
		{
			name: "corrupt CA secret",
			setup: func(t *testing.T, _ *v1alpha1.CloudHub, kube *fake.Clientset) {
				s := caSecret(t, ca)
				s.Data[CADataKey] = []byte("garbage")
				mustCreate(t, kube, s)
			},
			wantErr:  "secret kubeedge/casecret key cadata",
			noWrites: true,
		},
		{
			name: "API error reading CA secret",
			setup: func(_ *testing.T, _ *v1alpha1.CloudHub, kube *fake.Clientset) {
				kube.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("etcdserver: request timed out")
				})
			},
			wantErr:  "request timed out",
			noWrites: true,
		},
		{
			name: "API error saving secret",
			setup: func(_ *testing.T, _ *v1alpha1.CloudHub, kube *fake.Clientset) {
				kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("forbidden")
				})
			},
			wantErr: "save secret kubeedge/casecret: forbidden",
		},
		{
			name: "no SANs configured",
			setup: func(_ *testing.T, cfg *v1alpha1.CloudHub, _ *fake.Clientset) {
				cfg.AdvertiseAddress, cfg.DNSNames = nil, []string{""}
			},
			wantErr: "no advertise address",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			kube := fake.NewClientset()
			tc.setup(t, &cfg, kube)
			kube.ClearActions()
			_, err := Prepare(context.Background(), kube, cfg, fixedNow)
			want := strings.NewReplacer("{CAFILE}", cfg.TLSCAFile, "{CAKEYFILE}", cfg.TLSCAKeyFile, "{CERTFILE}", cfg.TLSCertFile).Replace(tc.wantErr)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Prepare error = %v, want it to contain %q", err, want)
			}
			for _, a := range kube.Actions() {
				if v := a.GetVerb(); tc.noWrites && (v == "create" || v == "update") {
					t.Errorf("Prepare wrote despite a CA error: %s %s", v, a.GetResource().Resource)
				}
			}
		})
	}
}

// TestPrepareIdempotent guards against restarts re-issuing certificates or
// rewriting Secrets, which would churn every watcher and edge.
func TestPrepareIdempotent(t *testing.T) {
	cfg := testConfig(t)
	kube := fake.NewClientset()
	first, err := Prepare(context.Background(), kube, cfg, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	kube.ClearActions()
	second, err := Prepare(context.Background(), kube, cfg, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if !first.CA.Equal(second.CA) || !first.ServerCert.Leaf.Equal(second.ServerCert.Leaf) {
		t.Error("second Prepare changed the CA or server certificate")
	}
	for _, a := range kube.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("second Prepare wrote: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestServerTLSConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdvertiseAddress = []string{"127.0.0.1"}
	b, err := Prepare(context.Background(), fake.NewClientset(), cfg, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	tc := b.ServerTLSConfig(tls.RequireAndVerifyClientCert)
	if tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.MinVersion != tls.VersionTLS12 || len(tc.Certificates) != 1 {
		t.Fatalf("unexpected config: auth=%v min=%x certs=%d", tc.ClientAuth, tc.MinVersion, len(tc.Certificates))
	}
	if !tc.ClientCAs.Equal(poolOf(b.CA)) {
		t.Error("ClientCAs is not the CA")
	}
	if _, err := b.ServerCert.Leaf.Verify(x509.VerifyOptions{Roots: poolOf(b.CA), CurrentTime: testNow, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("server cert does not verify for 127.0.0.1: %v", err)
	}
	if !slices.ContainsFunc(b.ServerCert.Leaf.IPAddresses, net.ParseIP("127.0.0.1").Equal) {
		t.Error("missing IP SAN")
	}
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, kube *fake.Clientset, s *corev1.Secret) {
	t.Helper()
	if _, err := kube.CoreV1().Secrets(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
