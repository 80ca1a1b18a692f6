package certificate

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tether-edge/tether/edge/edgehub/internal/fakecloud"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

const testNode = "edge-1"

func testConfig(t *testing.T, cloud *fakecloud.Cloud) Config {
	dir := t.TempDir()
	return Config{
		NodeName:       testNode,
		CAFile:         filepath.Join(dir, "ca", "rootCA.crt"),
		CertFile:       filepath.Join(dir, "certs", "server.crt"),
		KeyFile:        filepath.Join(dir, "certs", "server.key"),
		Token:          cloud.Token,
		HTTPServer:     cloud.HTTPServer(),
		RequestTimeout: 10 * time.Second,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustNew(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func TestBootstrapHappyPath(t *testing.T) {
	cloud := fakecloud.New(t)
	cfg := testConfig(t, cloud)
	var hooks atomic.Int32
	cfg.OnBootstrapped = func() { hooks.Add(1) }
	m := mustNew(t, cfg)

	if err := m.Ensure(testCtx(t)); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if n := hooks.Load(); n != 1 {
		t.Errorf("OnBootstrapped called %d times, want 1", n)
	}
	ca, err := certs.ReadCertFile(cfg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca.Raw, cloud.CADER) {
		t.Error("CA file does not hold the cloud's CA")
	}
	cert, _, err := certs.LoadPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatalf("written pair: %v", err)
	}
	if cert.Subject.CommonName != "system:node:"+testNode {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	if got := m.Certificate(); got == nil || !got.Equal(cert) {
		t.Error("manager does not hold the written certificate")
	}
	st, err := os.Stat(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("key mode %v, want 0600", perm)
	}
	req := <-cloud.CertRequests
	_, jwtPart, _ := token.Parse(cloud.Token)
	if req.Via != "token" || req.NodeName != testNode || req.Authorization != "Bearer "+jwtPart {
		t.Errorf("cert request via=%q node=%q auth=%q, want token auth with the JWT part only", req.Via, req.NodeName, req.Authorization)
	}
	if _, err := m.ClientTLSConfig(); err != nil {
		t.Errorf("ClientTLSConfig: %v", err)
	}
}

func TestBootstrapFailures(t *testing.T) {
	cloud := fakecloud.New(t)
	otherCA, otherKey, err := certs.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherKeyDER, _ := certs.MarshalKeyDER(otherKey)
	foreignToken, err := token.Create(otherCA.Raw, otherKeyDER, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-3 * time.Hour)
	expiredToken, err := token.Create(cloud.CADER, cloud.CAKeyDER(), time.Hour, past)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		// now, when set, is the edge's clock.
		now         time.Time
		reject      int
		wantIs      error
		wantText    []string
		permanent   bool
		wantCAFetch bool
	}{
		{
			name: "CA hash mismatch", token: foreignToken, wantIs: token.ErrCAHashMismatch, permanent: true, wantCAFetch: true,
			wantText: []string{token.HashCA(otherCA.Raw)[:12], token.HashCA(cloud.CADER)},
		},
		{name: "expired token", token: expiredToken, wantIs: token.ErrExpired, permanent: true, wantText: []string{"keadm gettoken"}},
		{name: "malformed token", token: "not-a-token", wantIs: token.ErrMalformed, permanent: true},
		{
			// The edge clock is behind, so only the server sees the expiry.
			name: "server rejects token", token: expiredToken, now: past, wantIs: ErrRejected, permanent: true, wantCAFetch: true,
			wantText: []string{"HTTP 401", "token expired"},
		},
		{
			name: "server error is transient", token: cloud.Token, reject: http.StatusInternalServerError, wantCAFetch: true,
			wantText: []string{"HTTP 500", "signer unavailable"},
		},
		{name: "no token", token: "", wantIs: ErrNoCredentials, permanent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, cloud)
			cfg.Token = tc.token
			if !tc.now.IsZero() {
				cfg.Now = func() time.Time { return tc.now }
			}
			var hooks atomic.Int32
			cfg.OnBootstrapped = func() { hooks.Add(1) }
			if tc.reject != 0 {
				cloud.RejectCerts(tc.reject, "signer unavailable", 1)
				t.Cleanup(func() { cloud.RejectCerts(0, "", 0) })
			}
			caBefore, _ := cloud.Requests()

			err := mustNew(t, cfg).Ensure(testCtx(t))
			if err == nil {
				t.Fatal("Ensure succeeded, want error")
			}
			t.Logf("error: %v", err)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tc.wantIs)
			}
			for _, s := range tc.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if got := IsPermanent(err); got != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v (%v)", got, tc.permanent, err)
			}
			if caAfter, _ := cloud.Requests(); (caAfter > caBefore) != tc.wantCAFetch {
				t.Errorf("CA fetched = %v, want %v", caAfter > caBefore, tc.wantCAFetch)
			}
			if hooks.Load() != 0 {
				t.Error("OnBootstrapped called after a failure")
			}
			if _, err := os.Stat(cfg.CertFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("certificate file written despite failure (stat: %v)", err)
			}
			if tc.wantIs == token.ErrCAHashMismatch {
				if _, err := os.Stat(cfg.CAFile); !errors.Is(err, os.ErrNotExist) {
					t.Error("untrusted CA was written to disk")
				}
			}
		})
	}
}

func TestExistingCertificate(t *testing.T) {
	cloud := fakecloud.New(t)
	base := testConfig(t, cloud)
	if err := mustNew(t, base).Ensure(testCtx(t)); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	<-cloud.CertRequests

	tests := []struct {
		name      string
		node      string
		token     string
		now       time.Time
		wantFetch bool
		wantIs    error
	}{
		{name: "valid cert reused without contacting the server", node: testNode},
		{name: "cert of another node needs the token", node: "edge-2", wantIs: ErrNoCredentials},
		{name: "expired cert needs the token", node: testNode, now: time.Now().Add(2 * time.Hour), wantIs: ErrNoCredentials},
		{name: "cert of another node is replaced with the token", node: "edge-2", token: cloud.Token, wantFetch: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.NodeName, cfg.Token = tc.node, tc.token
			if !tc.now.IsZero() {
				cfg.Now = func() time.Time { return tc.now }
			}
			var hooks atomic.Int32
			cfg.OnBootstrapped = func() { hooks.Add(1) }
			caBefore, certBefore := cloud.Requests()
			err := mustNew(t, cfg).Ensure(testCtx(t))
			if tc.wantIs != nil {
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("Ensure error %v, want %v", err, tc.wantIs)
				}
			} else if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			caAfter, certAfter := cloud.Requests()
			if fetched := caAfter > caBefore || certAfter > certBefore; fetched != tc.wantFetch {
				t.Errorf("contacted server = %v, want %v", fetched, tc.wantFetch)
			}
			wantHooks := int32(0)
			if tc.wantFetch {
				wantHooks = 1
			}
			if got := hooks.Load(); got != wantHooks {
				t.Errorf("OnBootstrapped called %d times, want %d", got, wantHooks)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	cloud := fakecloud.New(t)
	cfg := testConfig(t, cloud)
	cfg.Rotate = true
	cfg.RotationBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 5, Cap: 8 * time.Millisecond}
	var schedules atomic.Int32
	// Rotate the first certificate at once; leave the second alone.
	cfg.RotationDeadline = func(*x509.Certificate) time.Time {
		if schedules.Add(1) == 1 {
			return time.Now()
		}
		return time.Now().Add(time.Hour)
	}
	m := mustNew(t, cfg)
	ctx := testCtx(t)
	if err := m.Ensure(ctx); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	first := m.Certificate()
	<-cloud.CertRequests

	// The first rotation attempt fails, so the backoff path runs too.
	cloud.RejectCerts(http.StatusInternalServerError, "try later", 1)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.RunRotation(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	select {
	case <-m.Rotated():
	case <-ctx.Done():
		t.Fatal("no rotation signal")
	}
	req := <-cloud.CertRequests
	if req.Via != "cert" || req.Authorization != "" || req.PeerCN != "system:node:"+testNode {
		t.Errorf("rotation request via=%q auth=%q peer=%q, want client-cert auth without token", req.Via, req.Authorization, req.PeerCN)
	}
	second := m.Certificate()
	if second.Equal(first) {
		t.Fatal("certificate unchanged after rotation")
	}
	onDisk, _, err := certs.LoadPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !onDisk.Equal(second) {
		t.Error("rotated certificate not written to disk")
	}
	if _, certCalls := cloud.Requests(); certCalls != 3 {
		t.Errorf("%d certificate calls, want 3 (bootstrap, failed rotation, rotation)", certCalls)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{NodeName: "n"}); err == nil || !strings.Contains(err.Error(), "tlsCaFile") {
		t.Errorf("New with missing files: %v", err)
	}
}

// A crash in the middle of a rotation (new key in place, certificate still the old one) must not cost the node
// its credentials: with no token left, the next start finishes the switch and uses the new pair.
func TestRestartAfterCrashMidRotation(t *testing.T) {
	cloud := fakecloud.New(t)
	cfg := testConfig(t, cloud)
	if err := mustNew(t, cfg).Ensure(testCtx(t)); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	<-cloud.CertRequests
	old, _, err := certs.LoadPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}

	// What SavePair leaves when it stops after replacing the key: the journal and the new key.
	key, csr, err := certs.NewNodeCSR(testNode)
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.SignNodeCSR(cloud.CA, cloud.CAKey, csr, testNode, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certs.PendingPairFile(cfg.CertFile), append(certs.EncodeCertPEM(der), keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := certs.LoadPair(cfg.CertFile, cfg.KeyFile); err == nil {
		t.Fatal("the files are meant to hold a mismatched pair")
	}

	cfg.Token = "" // erased after bootstrap
	m := mustNew(t, cfg)
	if err := m.Ensure(testCtx(t)); err != nil {
		t.Fatalf("Ensure after the crash: %v", err)
	}
	if got := m.Certificate(); got == nil || !bytes.Equal(got.Raw, der) || got.Equal(old) {
		t.Fatalf("certificate after the crash is not the new one")
	}
	if onDisk, _, err := certs.LoadPair(cfg.CertFile, cfg.KeyFile); err != nil || !bytes.Equal(onDisk.Raw, der) {
		t.Fatalf("pair on disk after recovery: %v", err)
	}
	if _, err := os.Stat(certs.PendingPairFile(cfg.CertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left behind: %v", err)
	}
	if caCalls, certCalls := cloud.Requests(); caCalls != 1 || certCalls != 1 {
		t.Errorf("contacted the cloud again (%d CA, %d certificate calls)", caCalls, certCalls)
	}
}
