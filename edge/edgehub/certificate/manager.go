// Package certificate obtains and renews the edge node's client certificate
// for the cloud link (spec §4.2): it reuses valid files, otherwise bootstraps
// from the join token through cloudcore's HTTPS server, and optionally
// rotates the certificate before it expires.
package certificate

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

// DefaultRequestTimeout bounds each request to cloudcore's HTTPS server.
const DefaultRequestTimeout = 30 * time.Second

// DefaultRotationBackoff retries a failed rotation after 2s, 4s, 8s, 16s,
// 32s and then every 32s, as KubeEdge does.
var DefaultRotationBackoff = wait.Backoff{Duration: 2 * time.Second, Factor: 2, Steps: 5, Cap: 32 * time.Second}

var (
	// ErrNoCredentials means there is no usable certificate and no token to
	// obtain one with.
	ErrNoCredentials = errors.New("no usable node certificate and no join token")
	// ErrRejected wraps a 4xx answer of cloudcore's certificate endpoint;
	// retrying the same request will not help.
	ErrRejected = errors.New("certificate request rejected by cloudcore")
)

// IsPermanent reports whether err needs an operator (new token, different
// cluster) rather than a retry.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrNoCredentials) || errors.Is(err, ErrRejected) ||
		errors.Is(err, token.ErrMalformed) || errors.Is(err, token.ErrExpired) ||
		errors.Is(err, token.ErrCAHashMismatch)
}

// Config says where the credentials live and how to get new ones.
type Config struct {
	NodeName string
	CAFile   string
	CertFile string
	KeyFile  string
	// Token is the join token; only needed when no valid certificate exists.
	Token string
	// HTTPServer is cloudcore's HTTPS base URL, e.g. https://cloud:10002.
	HTTPServer string
	// Rotate enables renewal before expiry (rotateCertificates).
	Rotate bool
	// OnBootstrapped is called once certificates obtained with the token are
	// on disk, so edgecore can erase the now useless token from its config.
	OnBootstrapped func()

	// Zero values below mean the defaults; tests shorten them.
	RequestTimeout   time.Duration
	RotationBackoff  wait.Backoff
	RotationDeadline func(*x509.Certificate) time.Time
	Now              func() time.Time
}

// Manager holds the node's current credentials. It is safe for concurrent use.
type Manager struct {
	cfg Config

	mu   sync.RWMutex
	ca   *x509.Certificate
	pair *tls.Certificate

	rotated chan struct{}
}

// New validates cfg. It does not touch the disk or the network.
func New(cfg Config) (*Manager, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"node name", cfg.NodeName}, {"tlsCaFile", cfg.CAFile},
		{"tlsCertFile", cfg.CertFile}, {"tlsPrivateKeyFile", cfg.KeyFile},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("certificate manager: missing %s", strings.Join(missing, ", "))
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.RotationBackoff.Duration <= 0 {
		cfg.RotationBackoff = DefaultRotationBackoff
	}
	if cfg.RotationDeadline == nil {
		cfg.RotationDeadline = func(c *x509.Certificate) time.Time { return certs.RotationDeadline(c, nil) }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.HTTPServer = strings.TrimRight(cfg.HTTPServer, "/")
	return &Manager{cfg: cfg, rotated: make(chan struct{}, 1)}, nil
}

// Ensure loads valid credentials from disk or, failing that, bootstraps them
// with the token. Errors for which IsPermanent is true will not go away by
// calling Ensure again.
func (m *Manager) Ensure(ctx context.Context) error {
	ca, cert, key, loadErr := m.loadExisting()
	if loadErr == nil {
		klog.InfoS("Using existing node certificate", "node", m.cfg.NodeName, "file", m.cfg.CertFile,
			"expires", cert.NotAfter.UTC().Format(time.RFC3339))
		m.set(ca, cert, key)
		return nil
	}
	if strings.TrimSpace(m.cfg.Token) == "" {
		return fmt.Errorf("node %q: %w: %w", m.cfg.NodeName, ErrNoCredentials, loadErr)
	}
	klog.InfoS("No usable node certificate, bootstrapping with the join token", "node", m.cfg.NodeName, "reason", loadErr.Error())
	if err := m.bootstrap(ctx); err != nil {
		return fmt.Errorf("bootstrap certificates for node %q from %s: %w", m.cfg.NodeName, m.cfg.HTTPServer, err)
	}
	if m.cfg.OnBootstrapped != nil {
		m.cfg.OnBootstrapped()
	}
	return nil
}

// loadExisting accepts the files only if they can be used to connect right
// away: CA, key and certificate readable, matching, for this node, in date
// and signed by that CA.
func (m *Manager) loadExisting() (*x509.Certificate, *x509.Certificate, *ecdsa.PrivateKey, error) {
	// A switch to a new pair that a crash interrupted is finished first (certs.SavePair): otherwise the files
	// could hold the key of one pair and the certificate of the other, and with the join token erased after
	// bootstrap the node could never connect again.
	recovered, err := certs.RecoverPair(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return nil, nil, nil, err
	}
	if recovered {
		klog.InfoS("Finished switching to the node certificate a crash interrupted", "node", m.cfg.NodeName, "file", m.cfg.CertFile)
	}
	ca, err := certs.ReadCertFile(m.cfg.CAFile)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, key, err := certs.LoadPair(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := m.checkCert(ca, cert); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", m.cfg.CertFile, err)
	}
	return ca, cert, key, nil
}

func (m *Manager) checkCert(ca, cert *x509.Certificate) error {
	if want := certs.NodeCommonNamePrefix + m.cfg.NodeName; cert.Subject.CommonName != want {
		return fmt.Errorf("certificate CN %q is not %q", cert.Subject.CommonName, want)
	}
	now := m.cfg.Now()
	if !now.Before(cert.NotAfter) {
		return fmt.Errorf("certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("certificate not valid for client auth against %s: %w", m.cfg.CAFile, err)
	}
	return nil
}

func (m *Manager) bootstrap(ctx context.Context) error {
	_, jwtPart, err := token.Parse(m.cfg.Token)
	if err != nil {
		return err
	}
	exp, err := token.Expiry(m.cfg.Token)
	if err != nil {
		return err
	}
	if now := m.cfg.Now(); !now.Before(exp) {
		return fmt.Errorf("%w at %s (now %s); create a new one with keadm gettoken",
			token.ErrExpired, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}

	caDER, err := m.fetchCA(ctx)
	if err != nil {
		return err
	}
	if err := token.VerifyCAHash(m.cfg.Token, caDER); err != nil {
		// Continuing would trust whoever answered the unverified request.
		return fmt.Errorf("refusing CA certificate from %s/ca.crt: %w (full server CA sha256 %s)",
			m.cfg.HTTPServer, err, token.HashCA(caDER))
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA certificate from %s/ca.crt: %w", m.cfg.HTTPServer, err)
	}
	if err := certs.WriteCertFile(m.cfg.CAFile, caDER); err != nil {
		return err
	}

	cert, key, err := m.requestCert(ctx, ca, jwtPart, nil)
	if err != nil {
		return err
	}
	if err := certs.SavePair(m.cfg.CertFile, m.cfg.KeyFile, cert.Raw, key); err != nil {
		return err
	}
	klog.InfoS("Obtained node certificate with the join token", "node", m.cfg.NodeName,
		"file", m.cfg.CertFile, "expires", cert.NotAfter.UTC().Format(time.RFC3339))
	m.set(ca, cert, key)
	return nil
}

// requestCert asks cloudcore to sign a fresh key, authenticating with the
// JWT or, when client is set, with that certificate (rotation).
func (m *Manager) requestCert(ctx context.Context, ca *x509.Certificate, jwtPart string, client *tls.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, csrDER, err := certs.NewNodeCSR(m.cfg.NodeName)
	if err != nil {
		return nil, nil, err
	}
	der, err := m.fetchEdgeCert(ctx, ca, csrDER, jwtPart, client)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate from %s/edge.crt: %w", m.cfg.HTTPServer, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("certificate from %s/edge.crt is not for the key just requested", m.cfg.HTTPServer)
	}
	if err := m.checkCert(ca, cert); err != nil {
		return nil, nil, fmt.Errorf("certificate from %s/edge.crt: %w", m.cfg.HTTPServer, err)
	}
	return cert, key, nil
}

func (m *Manager) set(ca, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	pair := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	m.mu.Lock()
	m.ca, m.pair = ca, pair
	m.mu.Unlock()
}

func (m *Manager) current() (*x509.Certificate, *tls.Certificate) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ca, m.pair
}

// Certificate returns the current client certificate, nil before Ensure.
func (m *Manager) Certificate() *x509.Certificate {
	_, pair := m.current()
	if pair == nil {
		return nil
	}
	return pair.Leaf
}

// ClientTLSConfig returns a TLS config that verifies the server against the
// cluster CA and presents whatever client certificate is current at
// handshake time, so a reconnect after rotation uses the new one.
func (m *Manager) ClientTLSConfig() (*tls.Config, error) {
	ca, pair := m.current()
	if pair == nil {
		return nil, errors.New("client TLS config: no certificate loaded yet")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			_, p := m.current()
			return p, nil
		},
	}, nil
}

// Rotated receives a value after each successful rotation; the hub
// reconnects so the cloud sees the new certificate.
func (m *Manager) Rotated() <-chan struct{} { return m.rotated }

// RunRotation renews the certificate at its rotation deadline until ctx is
// done. Without Rotate it only waits for ctx.
func (m *Manager) RunRotation(ctx context.Context) {
	if !m.cfg.Rotate {
		<-ctx.Done()
		return
	}
	for {
		_, pair := m.current()
		if pair == nil {
			klog.ErrorS(nil, "Certificate rotation not started: no certificate loaded", "node", m.cfg.NodeName)
			<-ctx.Done()
			return
		}
		deadline := m.cfg.RotationDeadline(pair.Leaf)
		klog.InfoS("Scheduled node certificate rotation", "node", m.cfg.NodeName, "at", deadline.UTC().Format(time.RFC3339))
		if !sleep(ctx, deadline.Sub(m.cfg.Now())) {
			return
		}
		if !m.rotateWithRetry(ctx) {
			return
		}
		select {
		case m.rotated <- struct{}{}:
		default: // a reconnect is already pending; one is enough
		}
	}
}

// rotateWithRetry returns false only when ctx ended first.
func (m *Manager) rotateWithRetry(ctx context.Context) bool {
	backoff := m.cfg.RotationBackoff
	for {
		err := m.rotate(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		delay := backoff.Step()
		klog.ErrorS(err, "Node certificate rotation failed, retrying", "node", m.cfg.NodeName, "in", delay)
		if !sleep(ctx, delay) {
			return false
		}
	}
}

func (m *Manager) rotate(ctx context.Context) error {
	ca, pair := m.current()
	cert, key, err := m.requestCert(ctx, ca, "", pair)
	if err != nil {
		return fmt.Errorf("rotate certificate of node %q: %w", m.cfg.NodeName, err)
	}
	if err := certs.SavePair(m.cfg.CertFile, m.cfg.KeyFile, cert.Raw, key); err != nil {
		return fmt.Errorf("rotate certificate of node %q: %w", m.cfg.NodeName, err)
	}
	m.set(ca, cert, key)
	klog.InfoS("Rotated node certificate", "node", m.cfg.NodeName,
		"expires", cert.NotAfter.UTC().Format(time.RFC3339), "serial", cert.SerialNumber.String())
	return nil
}

// sleep waits d (at least not negative) and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
