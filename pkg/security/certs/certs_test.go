package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	ca, key, err := NewCA(testNow)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca, key
}

// csrWith builds a CSR with an arbitrary subject to exercise policy checks.
func csrWith(t testing.TB, subj pkix.Name) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subj}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestNewCA(t *testing.T) {
	ca, key := mustCA(t)
	if ca.Subject.CommonName != "KubeEdge" || !ca.IsCA || !ca.BasicConstraintsValid {
		t.Errorf("subject %q IsCA=%v BasicConstraintsValid=%v", ca.Subject.CommonName, ca.IsCA, ca.BasicConstraintsValid)
	}
	wantKU := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	if ca.KeyUsage != wantKU {
		t.Errorf("KeyUsage = %v, want %v", ca.KeyUsage, wantKU)
	}
	if ca.SerialNumber.Int64() != 1024 {
		t.Errorf("serial = %v, want 1024", ca.SerialNumber)
	}
	if pk, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() || !key.PublicKey.Equal(pk) {
		t.Errorf("public key is %T, want the P-256 CA key", ca.PublicKey)
	}
	if years := ca.NotAfter.Sub(testNow).Hours() / 24 / 365; years < 99 || years > 101 {
		t.Errorf("validity %.1f years, want ~100", years)
	}
	if !ca.NotBefore.Before(testNow) {
		t.Errorf("NotBefore %v should be backdated before %v", ca.NotBefore, testNow)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestNewServerCert(t *testing.T) {
	ca, caKey := mustCA(t)
	tests := []struct {
		name      string
		advertise []string
		dns       []string
		wantIPs   []string
		wantDNS   []string
		wantErr   bool
	}{
		{"ips and dns", []string{"10.0.0.1", "192.168.1.2"}, []string{"cloudcore.kubeedge"}, []string{"10.0.0.1", "192.168.1.2"}, []string{"cloudcore.kubeedge"}, false},
		{"hostname advertise and ipv6", []string{"lb.example.com", "", " ", "fd00::1", "[fd00::2]"}, nil, []string{"fd00::1", "fd00::2"}, []string{"lb.example.com"}, false},
		{"duplicates collapse", []string{"10.0.0.1", "10.0.0.1"}, []string{"a", "a"}, []string{"10.0.0.1"}, []string{"a"}, false},
		{"nothing", []string{""}, nil, nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, key, err := NewServerCert(ca, caKey, tc.advertise, tc.dns, testNow)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewServerCert: %v", err)
			}
			var gotIPs []string
			for _, ip := range cert.IPAddresses {
				gotIPs = append(gotIPs, ip.String())
			}
			if !slices.Equal(gotIPs, tc.wantIPs) || !slices.Equal(cert.DNSNames, tc.wantDNS) {
				t.Errorf("SANs IP=%v DNS=%v, want IP=%v DNS=%v", gotIPs, cert.DNSNames, tc.wantIPs, tc.wantDNS)
			}
			if cert.Subject.CommonName != "KubeEdge" || !slices.Equal(cert.Subject.Organization, []string{"KubeEdge"}) {
				t.Errorf("subject = %v", cert.Subject)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage = %v", cert.ExtKeyUsage)
			}
			if !key.PublicKey.Equal(cert.PublicKey) || key.Curve != elliptic.P256() {
				t.Error("returned key does not match certificate or is not P-256")
			}
			if years := cert.NotAfter.Sub(testNow).Hours() / 24 / 365; years < 99 {
				t.Errorf("validity %.1f years, want ~100", years)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			for _, host := range append(tc.wantIPs, tc.wantDNS...) {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: testNow}); err != nil {
					t.Errorf("verify for %s: %v", host, err)
				}
			}
		})
	}
}

func TestCSRRoundTrip(t *testing.T) {
	ca, caKey := mustCA(t)
	key, csrDER, err := NewNodeCSR("edge-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	s := csr.Subject
	if !slices.Equal(s.Country, []string{"CN"}) || !slices.Equal(s.Province, []string{"Zhejiang"}) ||
		!slices.Equal(s.Locality, []string{"Hangzhou"}) || !slices.Equal(s.Organization, []string{"system:nodes"}) ||
		s.CommonName != "system:node:edge-1" {
		t.Errorf("CSR subject = %v", s)
	}

	tests := []struct {
		name     string
		usages   []x509.ExtKeyUsage
		validity time.Duration
		wantEKU  []x509.ExtKeyUsage
		wantLife time.Duration
	}{
		{"defaults", nil, 0, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DefaultNodeCertValidity},
		{"server and client", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, 48 * time.Hour,
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, 48 * time.Hour},
		{"capped by CA lifetime", nil, 200 * 365 * 24 * time.Hour, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ca.NotAfter.Sub(testNow)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der, err := SignNodeCSR(ca, caKey, csrDER, "edge-1", tc.usages, tc.validity, testNow)
			if err != nil {
				t.Fatalf("SignNodeCSR: %v", err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if !key.PublicKey.Equal(cert.PublicKey) {
				t.Error("certificate key differs from CSR key")
			}
			if !slices.Equal(cert.ExtKeyUsage, tc.wantEKU) {
				t.Errorf("ExtKeyUsage = %v, want %v", cert.ExtKeyUsage, tc.wantEKU)
			}
			if got := cert.NotAfter.Sub(testNow); got != tc.wantLife {
				t.Errorf("lifetime = %v, want %v", got, tc.wantLife)
			}
			if name, err := NodeNameFromCert(cert); err != nil || name != "edge-1" {
				t.Errorf("NodeNameFromCert = %q, %v", name, err)
			}
			if err := VerifyNodeClientCert(ca, cert, "edge-1", testNow); err != nil {
				t.Errorf("VerifyNodeClientCert: %v", err)
			}
		})
	}
}

func TestSignNodeCSRRejects(t *testing.T) {
	ca, caKey := mustCA(t)
	_, good, err := NewNodeCSR("edge-1")
	if err != nil {
		t.Fatal(err)
	}
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 0xff // corrupt the signature

	tests := []struct {
		name    string
		csr     []byte
		node    string
		usages  []x509.ExtKeyUsage
		wantErr error
	}{
		{"garbage", []byte("not a csr"), "edge-1", nil, ErrMalformedCSR},
		{"empty", nil, "edge-1", nil, ErrMalformedCSR},
		{"truncated", good[:len(good)/2], "edge-1", nil, ErrMalformedCSR},
		{"bad signature", tampered, "edge-1", nil, ErrMalformedCSR},
		{"other node", good, "edge-2", nil, ErrCSRRejected},
		{"empty node", good, "", nil, ErrCSRRejected},
		{"wrong O", csrWith(t, pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"KubeEdge"}}), "edge-1", nil, ErrCSRRejected},
		{"extra O", csrWith(t, pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"system:nodes", "system:masters"}}), "edge-1", nil, ErrCSRRejected},
		{"wrong CN", csrWith(t, pkix.Name{CommonName: "edge-1", Organization: []string{"system:nodes"}}), "edge-1", nil, ErrCSRRejected},
		{"forbidden usage", good, "edge-1", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, ErrCSRRejected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SignNodeCSR(ca, caKey, tc.csr, tc.node, tc.usages, 0, testNow)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestVerifyNodeClientCert(t *testing.T) {
	ca, caKey := mustCA(t)
	otherCA, otherKey := mustCA(t)
	sign := func(ca *x509.Certificate, key *ecdsa.PrivateKey, subj pkix.Name, eku x509.ExtKeyUsage) *x509.Certificate {
		t.Helper()
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: ca.SerialNumber, Subject: subj, NotBefore: testNow, NotAfter: testNow.Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{eku},
		}, ca, k.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	node := pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"system:nodes"}}
	legacy := pkix.Name{CommonName: "kubeedge.io", Organization: []string{"KubeEdge"}}
	serverCert, _, err := NewServerCert(ca, caKey, []string{"10.0.0.1"}, nil, testNow)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cert *x509.Certificate
		node string
		now  time.Time
		ok   bool
	}{
		{"node cert", sign(ca, caKey, node, x509.ExtKeyUsageClientAuth), "edge-1", testNow, true},
		{"legacy cert", sign(ca, caKey, legacy, x509.ExtKeyUsageClientAuth), "edge-1", testNow, true},
		{"wrong node", sign(ca, caKey, node, x509.ExtKeyUsageClientAuth), "edge-2", testNow, false},
		{"empty node", sign(ca, caKey, pkix.Name{CommonName: "system:node:", Organization: []string{"system:nodes"}}, x509.ExtKeyUsageClientAuth), "", testNow, false},
		{"wrong O", sign(ca, caKey, pkix.Name{CommonName: "system:node:edge-1", Organization: []string{"KubeEdge"}}, x509.ExtKeyUsageClientAuth), "edge-1", testNow, false},
		{"other CA", sign(otherCA, otherKey, node, x509.ExtKeyUsageClientAuth), "edge-1", testNow, false},
		{"server-only usage", sign(ca, caKey, node, x509.ExtKeyUsageServerAuth), "edge-1", testNow, false},
		{"expired", sign(ca, caKey, node, x509.ExtKeyUsageClientAuth), "edge-1", testNow.Add(2 * time.Hour), false},
		{"cloudcore server cert", serverCert, "edge-1", testNow, false},
		{"CA itself", ca, "edge-1", testNow, false},
		{"nil", nil, "edge-1", testNow, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyNodeClientCert(ca, tc.cert, tc.node, tc.now)
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrUnauthorizedCert) {
				t.Fatalf("err = %v, want ErrUnauthorizedCert", err)
			}
		})
	}
}

func TestNodeNameFromCert(t *testing.T) {
	tests := []struct {
		cn, want string
		ok       bool
	}{
		{"system:node:edge-1", "edge-1", true},
		{"system:node:", "", false},
		{"kubeedge.io", "", false},
		{"edge-1", "", false},
	}
	for _, tc := range tests {
		got, err := NodeNameFromCert(&x509.Certificate{Subject: pkix.Name{CommonName: tc.cn}})
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("NodeNameFromCert(CN=%q) = %q, %v", tc.cn, got, err)
		}
	}
	if _, err := NodeNameFromCert(nil); err == nil {
		t.Error("nil cert: want error")
	}
}

func TestPEMAndFiles(t *testing.T) {
	ca, caKey := mustCA(t)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "certs", "sub", "server.crt")
	keyFile := filepath.Join(dir, "keys", "server.key")
	if err := SavePair(certFile, keyFile, ca.Raw, caKey); err != nil {
		t.Fatalf("SavePair: %v", err)
	}
	for file, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", file, st.Mode().Perm(), want)
		}
	}
	gotCert, gotKey, err := LoadPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadPair: %v", err)
	}
	if !gotCert.Equal(ca) || !gotKey.Equal(caKey) {
		t.Error("round trip changed the pair")
	}
	keyPEM, _ := os.ReadFile(keyFile)
	if !slices.Equal(keyPEM[:len("-----BEGIN EC PRIVATE KEY-----")], []byte("-----BEGIN EC PRIVATE KEY-----")) {
		t.Errorf("key PEM header: %q", keyPEM[:32])
	}

	// SavePair never writes a mismatched pair; one made otherwise is detected on load.
	_, other := mustCA(t)
	if err := SavePair(certFile, keyFile, ca.Raw, other); err == nil {
		t.Error("SavePair with a key that is not the certificate's: want error")
	}
	otherPEM, _ := EncodeKeyPEM(other)
	if err := os.WriteFile(keyFile, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadPair(certFile, keyFile); err == nil {
		t.Error("LoadPair with mismatched key: want error")
	}
	if entries, _ := os.ReadDir(filepath.Dir(certFile)); len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}

	// PKCS#8 keys are accepted; garbage is not.
	p8, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := DecodeKeyPEM(append([]byte("junk\n"), pemBlock("PRIVATE KEY", p8)...)); err != nil || !k.Equal(caKey) {
		t.Errorf("DecodeKeyPEM(PKCS#8) = %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("garbage"), pemBlock("EC PRIVATE KEY", []byte{1, 2, 3})} {
		if _, err := DecodeKeyPEM(bad); err == nil {
			t.Errorf("DecodeKeyPEM(%q): want error", bad)
		}
	}
	for _, bad := range [][]byte{nil, pemBlock("EC PRIVATE KEY", ca.Raw), pemBlock("CERTIFICATE", []byte{1})} {
		if _, err := DecodeCertPEM(bad); err == nil {
			t.Errorf("DecodeCertPEM(%q): want error", bad)
		}
	}
	der, err := MarshalKeyDER(caKey)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := ParseKeyDER(der); err != nil || !k.Equal(caKey) {
		t.Errorf("ParseKeyDER round trip: %v", err)
	}
	if _, _, err := LoadPair(filepath.Join(dir, "missing.crt"), keyFile); err == nil {
		t.Error("LoadPair(missing): want error")
	}
}

func pemBlock(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}

func TestRotationDeadline(t *testing.T) {
	cert := &x509.Certificate{NotBefore: testNow, NotAfter: testNow.Add(1000 * time.Hour)}
	lo, hi := testNow.Add(700*time.Hour), testNow.Add(900*time.Hour)
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 1000 {
		d := RotationDeadline(cert, r)
		if d.Before(lo) || d.After(hi) {
			t.Fatalf("deadline %v outside [%v, %v]", d, lo, hi)
		}
	}
	if d := RotationDeadline(cert, nil); d.Before(lo) || d.After(hi) {
		t.Fatalf("deadline with nil rand %v outside range", d)
	}
}

func FuzzSignNodeCSR(f *testing.F) {
	ca, caKey := mustCA(f)
	_, good, err := NewNodeCSR("edge-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, csr []byte) {
		der, err := SignNodeCSR(ca, caKey, csr, "edge-1", nil, time.Hour, testNow)
		if err == nil {
			cert, perr := x509.ParseCertificate(der)
			if perr != nil {
				t.Fatalf("signed output does not parse: %v", perr)
			}
			if cert.Subject.CommonName != "system:node:edge-1" {
				t.Fatalf("signed a foreign subject %q", cert.Subject.CommonName)
			}
		}
	})
}
