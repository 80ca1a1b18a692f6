// Package certificate prepares CloudHub's CA and serving certificate and keeps
// the edge join token fresh, storing all three in the same Secrets KubeEdge
// uses so that keadm and KubeEdge edge nodes interoperate with Tether.
package certificate

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/security/certs"
)

// Secret names and keys are KubeEdge's: keadm and other cloudcore replicas
// read them.
const (
	Namespace = "kubeedge"

	CASecretName = "casecret"
	CADataKey    = "cadata"
	CAKeyDataKey = "cakeydata"

	ServerSecretName  = "cloudcoresecret"
	ServerCertDataKey = "cloudcoredata"
	ServerKeyDataKey  = "cloudcorekeydata"

	TokenSecretName = "tokensecret"
	TokenDataKey    = "tokendata"
)

// defaultRefreshTime is KubeEdge's tokenRefreshDuration default.
const defaultRefreshTime = 12 * time.Hour

// Bundle is the key material CloudHub serves with.
type Bundle struct {
	CA         *x509.Certificate
	CAKey      *ecdsa.PrivateKey
	ServerCert tls.Certificate
}

// ServerTLSConfig returns a fresh config serving ServerCert and trusting the
// CA for client certificates. The websocket listener requires client certs;
// the HTTPS service only requests them because bootstrapping edges have none.
// Go's default cipher suites are kept: KubeEdge's list adds only a CBC suite
// that its own Go clients never need.
func (b *Bundle) ServerTLSConfig(clientAuth tls.ClientAuthType) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(b.CA)
	return &tls.Config{
		Certificates: []tls.Certificate{b.ServerCert},
		ClientCAs:    pool,
		ClientAuth:   clientAuth,
		MinVersion:   tls.VersionTLS12,
	}
}

// CAKeyDER returns the SEC1 DER of the CA key, which is also the HMAC key of
// join tokens.
func (b *Bundle) CAKeyDER() ([]byte, error) {
	return certs.MarshalKeyDER(b.CAKey)
}

// EdgeCertValidity converts edgeCertSigningDuration (days) to a duration.
func EdgeCertValidity(cfg v1alpha1.CloudHub) time.Duration {
	return time.Duration(cfg.EdgeCertSigningDuration) * 24 * time.Hour
}

// TokenRefreshInterval converts tokenRefreshDuration (hours) to a duration.
func TokenRefreshInterval(cfg v1alpha1.CloudHub) time.Duration {
	return time.Duration(cfg.TokenRefreshDuration) * time.Hour
}

// Prepare loads or creates the CA and the server certificate (files first,
// then Secrets, then new ones) and saves both to their Secrets so that every
// cloudcore replica and keadm see the same material. API errors other than
// NotFound are returned rather than treated as "absent": regenerating the CA
// on a transient error would orphan every edge certificate.
func Prepare(ctx context.Context, kube kubernetes.Interface, cfg v1alpha1.CloudHub, now func() time.Time) (*Bundle, error) {
	if now == nil {
		now = time.Now
	}
	ca, caKey, err := loadCA(ctx, kube, cfg, now())
	if err != nil {
		return nil, err
	}
	caKeyDER, err := certs.MarshalKeyDER(caKey)
	if err != nil {
		return nil, fmt.Errorf("prepare CA: %w", err)
	}
	if err := applySecret(ctx, kube, CASecretName, map[string][]byte{CADataKey: ca.Raw, CAKeyDataKey: caKeyDER}); err != nil {
		return nil, err
	}

	cert, key, err := loadServerCert(ctx, kube, cfg, ca, caKey, now())
	if err != nil {
		return nil, err
	}
	keyDER, err := certs.MarshalKeyDER(key)
	if err != nil {
		return nil, fmt.Errorf("prepare server certificate: %w", err)
	}
	if err := applySecret(ctx, kube, ServerSecretName, map[string][]byte{ServerCertDataKey: cert.Raw, ServerKeyDataKey: keyDER}); err != nil {
		return nil, err
	}
	return &Bundle{
		CA:         ca,
		CAKey:      caKey,
		ServerCert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
	}, nil
}

func loadCA(ctx context.Context, kube kubernetes.Interface, cfg v1alpha1.CloudHub, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca, key, err := readPairFiles(cfg.TLSCAFile, cfg.TLSCAKeyFile)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("load CA: %w", err)
	case ca != nil:
		if err := checkCA(ca, fmt.Sprintf("file %s", cfg.TLSCAFile)); err != nil {
			return nil, nil, err
		}
		klog.InfoS("Using CA from files", "cert", cfg.TLSCAFile, "key", cfg.TLSCAKeyFile)
		return ca, key, nil
	}

	ca, key, err = readPairSecret(ctx, kube, CASecretName, CADataKey, CAKeyDataKey)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("load CA: %w", err)
	case ca != nil:
		if err := checkCA(ca, "secret "+Namespace+"/"+CASecretName); err != nil {
			return nil, nil, err
		}
		klog.InfoS("Using CA from secret", "secret", klog.KRef(Namespace, CASecretName))
		return ca, key, nil
	}

	ca, key, err = certs.NewCA(now)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA: %w", err)
	}
	klog.InfoS("Generated a new CA", "notAfter", ca.NotAfter)
	return ca, key, nil
}

// checkCA rejects a certificate Go would refuse as a trust anchor, which
// would otherwise surface only as failed edge handshakes.
func checkCA(ca *x509.Certificate, source string) error {
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return fmt.Errorf("load CA from %s: certificate %q is not a CA (basic constraints CA:TRUE missing)", source, ca.Subject.CommonName)
	}
	return nil
}

// loadServerCert takes the first usable candidate. A candidate that parses
// but does not fit (missing SAN, other issuer, expired) is skipped so that a
// re-issued certificate in the Secret wins over stale files on later starts.
func loadServerCert(ctx context.Context, kube kubernetes.Interface, cfg v1alpha1.CloudHub, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, key, err := readPairFiles(cfg.TLSCertFile, cfg.TLSPrivateKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load server certificate: %w", err)
	}
	if cert != nil {
		if err := fitServerCert(cert, ca, cfg, now); err != nil {
			klog.InfoS("Not using server certificate file", "cert", cfg.TLSCertFile, "reason", err)
		} else {
			klog.InfoS("Using server certificate from files", "cert", cfg.TLSCertFile, "key", cfg.TLSPrivateKeyFile)
			return cert, key, nil
		}
	}

	cert, key, err = readPairSecret(ctx, kube, ServerSecretName, ServerCertDataKey, ServerKeyDataKey)
	if err != nil {
		return nil, nil, fmt.Errorf("load server certificate: %w", err)
	}
	if cert != nil {
		if err := fitServerCert(cert, ca, cfg, now); err != nil {
			klog.InfoS("Re-issuing server certificate", "secret", klog.KRef(Namespace, ServerSecretName), "reason", err)
		} else {
			klog.InfoS("Using server certificate from secret", "secret", klog.KRef(Namespace, ServerSecretName))
			return cert, key, nil
		}
	}

	cert, key, err = certs.NewServerCert(ca, caKey, cfg.AdvertiseAddress, cfg.DNSNames, now)
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate: %w", err)
	}
	klog.InfoS("Issued server certificate", "ips", cert.IPAddresses, "dnsNames", cert.DNSNames, "notAfter", cert.NotAfter)
	return cert, key, nil
}

// fitServerCert reports why cert cannot serve the current configuration.
func fitServerCert(cert, ca *x509.Certificate, cfg v1alpha1.CloudHub, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("does not verify against the CA: %w", err)
	}
	var missing []string
	for _, names := range [][]string{cfg.AdvertiseAddress, cfg.DNSNames} {
		for _, n := range names {
			// VerifyHostname is what edges run, wildcards and [IPv6] included.
			if n = strings.TrimSpace(n); n != "" && cert.VerifyHostname(n) != nil {
				missing = append(missing, n)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lacks SANs %v (has IPs %v, DNS names %v)", missing, cert.IPAddresses, cert.DNSNames)
	}
	return nil
}

// readPairFiles returns nil, nil, nil unless both files are readable; once
// they are, any defect is an error naming the file, because silently
// replacing an operator-supplied CA would break every existing edge.
func readPairFiles(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, nil
	}
	certPEM, cerr := os.ReadFile(certFile)
	keyPEM, kerr := os.ReadFile(keyFile)
	if cerr != nil || kerr != nil {
		for _, e := range []error{cerr, kerr} {
			if e != nil && !errors.Is(e, fs.ErrNotExist) {
				klog.InfoS("Ignoring unreadable file", "err", e)
			}
		}
		return nil, nil, nil
	}
	cert, err := certs.DecodeCertPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := certs.DecodeKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if err := matchKey(cert, key); err != nil {
		return nil, nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return cert, key, nil
}

func matchKey(cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("private key does not match certificate")
	}
	return nil
}
