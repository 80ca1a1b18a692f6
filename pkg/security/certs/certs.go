// Package certs holds the X.509 primitives behind KubeEdge-compatible
// bootstrap: the cloud CA, the cloudcore server certificate, edge node CSRs
// and their signing, and client-certificate checks used for rotation.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

const (
	// CACommonName is used as CN of the CA and as CN and O of the server cert.
	CACommonName = "KubeEdge"
	// NodesOrganization and NodeCommonNamePrefix form the node identity that
	// the Kubernetes Node authorizer understands.
	NodesOrganization    = "system:nodes"
	NodeCommonNamePrefix = "system:node:"
	// Legacy edge certificates (KubeEdge < 1.12) carried no node identity;
	// rotation must still accept them so such nodes can migrate.
	LegacyOrganization = "KubeEdge"
	LegacyCommonName   = "kubeedge.io"

	// LongValidity is the lifetime of the CA and server certificates.
	LongValidity = 100 * 365 * 24 * time.Hour
	// DefaultNodeCertValidity matches edgeCertSigningDuration's default:
	// short, so that revocation lists stay small (edges rotate at 70–90%).
	DefaultNodeCertValidity = 30 * 24 * time.Hour

	// Backdate is how far NotBefore precedes the issue time, to tolerate
	// peers whose clocks lag the signer's. IssuedAt undoes it.
	Backdate = 5 * time.Minute
	backdate = Backdate
	// caSerial is the fixed serial KubeEdge gives its self-signed CA.
	caSerial = 1024
)

var (
	// ErrMalformedCSR marks requests that are not a valid, self-signed CSR
	// (a client error, HTTP 400).
	ErrMalformedCSR = errors.New("malformed certificate signing request")
	// ErrCSRRejected marks well-formed CSRs that policy refuses (wrong
	// subject, forbidden usage).
	ErrCSRRejected = errors.New("certificate signing request rejected")
	// ErrUnauthorizedCert marks client certificates that do not prove the
	// claimed node identity (HTTP 401).
	ErrUnauthorizedCert = errors.New("client certificate not authorized")
)

// NewCA creates the self-signed ECDSA P-256 root that signs every cloud and
// edge certificate.
func NewCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(caSerial),
		Subject:               pkix.Name{CommonName: CACommonName},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(LongValidity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return cert, key, nil
}

// NewServerCert issues the cloudcore serving certificate. Advertise addresses
// that are not IPs become DNS SANs because operators often advertise a
// hostname (e.g. a load balancer) there.
func NewServerCert(ca *x509.Certificate, caKey crypto.Signer, advertiseAddresses, dnsNames []string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if ca == nil || caKey == nil {
		return nil, nil, errors.New("new server certificate: CA certificate and key are required")
	}
	var ips []net.IP
	var names []string
	addName := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, a := range advertiseAddresses {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		addName(a)
	}
	for _, n := range dnsNames {
		if n = strings.TrimSpace(n); n != "" {
			addName(n)
		}
	}
	// Edges verify the server name, so a cert without SANs can never work.
	if len(ips) == 0 && len(names) == 0 {
		return nil, nil, errors.New("new server certificate: no advertise address or DNS name given")
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: CACommonName, Organization: []string{CACommonName}},
		NotBefore:    now.Add(-backdate).UTC(),
		NotAfter:     now.Add(LongValidity).UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create server certificate for %v: %w", append(ipStrings(ips), names...), err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new server certificate: %w", err)
	}
	return cert, key, nil
}

// NewNodeCSR creates the edge node key and CSR; the subject mirrors what
// KubeEdge edgecore sends so the cloud side treats both alike.
func NewNodeCSR(nodeName string) (*ecdsa.PrivateKey, []byte, error) {
	if nodeName == "" {
		return nil, nil, errors.New("new node CSR: empty node name")
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{
			Country:      []string{"CN"},
			Province:     []string{"Zhejiang"},
			Locality:     []string{"Hangzhou"},
			Organization: []string{NodesOrganization},
			CommonName:   NodeCommonNamePrefix + nodeName,
		},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR for node %q: %w", nodeName, err)
	}
	return key, der, nil
}

// SignNodeCSR issues a node certificate for csrDER. The subject must be
// exactly the node identity: an extra organization such as system:masters
// would otherwise be signed blindly. Usages default to ClientAuth; only
// ClientAuth and ServerAuth are allowed. validity <= 0 means
// DefaultNodeCertValidity; the certificate never outlives the CA. now is the
// issue time IssuedAt reports (to the second).
func SignNodeCSR(ca *x509.Certificate, caKey crypto.Signer, csrDER []byte, nodeName string, usages []x509.ExtKeyUsage, validity time.Duration, now time.Time) ([]byte, error) {
	if ca == nil || caKey == nil {
		return nil, errors.New("sign node CSR: CA certificate and key are required")
	}
	if nodeName == "" {
		return nil, fmt.Errorf("%w: empty node name", ErrCSRRejected)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w for node %q: %w", ErrMalformedCSR, nodeName, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w for node %q: bad self-signature: %w", ErrMalformedCSR, nodeName, err)
	}
	if k, ok := csr.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		return nil, fmt.Errorf("%w for node %q: RSA key of %d bits is too weak", ErrCSRRejected, nodeName, k.N.BitLen())
	}
	wantCN := NodeCommonNamePrefix + nodeName
	if csr.Subject.CommonName != wantCN || !slices.Equal(csr.Subject.Organization, []string{NodesOrganization}) {
		return nil, fmt.Errorf("%w: subject O=%q CN=%q does not match node %q (want O=[%q] CN=%q)",
			ErrCSRRejected, csr.Subject.Organization, csr.Subject.CommonName, nodeName, NodesOrganization, wantCN)
	}
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, u := range usages {
		if u != x509.ExtKeyUsageClientAuth && u != x509.ExtKeyUsageServerAuth {
			return nil, fmt.Errorf("%w for node %q: extended key usage %d not allowed", ErrCSRRejected, nodeName, u)
		}
	}
	if validity <= 0 {
		validity = DefaultNodeCertValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("sign certificate for node %q: CA expired at %s", nodeName, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      csr.Subject,
		NotBefore:    now.Add(-backdate).UTC(),
		NotAfter:     notAfter.UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  slices.Compact(slices.Sorted(slices.Values(usages))),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for node %q: %w", nodeName, err)
	}
	return der, nil
}

// IssuedAt is when a node certificate was signed, to the second: NotBefore
// plus Backdate, as SignNodeCSR sets it. Revocation floors compare it, so a
// certificate issued just after a floor is not taken for one issued
// Backdate earlier. X.509 times have whole seconds, so the result is the
// issue time truncated to the second.
func IssuedAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(Backdate)
}

// VerifyNodeClientCert authorizes a rotation request: cert must chain to ca
// for client auth at time now and name nodeName (or be a legacy KubeEdge
// edge certificate, which names no node).
func VerifyNodeClientCert(ca, cert *x509.Certificate, nodeName string, now time.Time) error {
	if ca == nil || cert == nil {
		return fmt.Errorf("%w: missing CA or client certificate", ErrUnauthorizedCert)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: certificate %q for node %q: %w", ErrUnauthorizedCert, cert.Subject.CommonName, nodeName, err)
	}
	s := cert.Subject
	if nodeName != "" && s.CommonName == NodeCommonNamePrefix+nodeName && slices.Contains(s.Organization, NodesOrganization) {
		return nil
	}
	if s.CommonName == LegacyCommonName && slices.Contains(s.Organization, LegacyOrganization) {
		return nil
	}
	return fmt.Errorf("%w: subject O=%q CN=%q does not identify node %q", ErrUnauthorizedCert, s.Organization, s.CommonName, nodeName)
}

// NodeNameFromCert extracts the node name from a system:node:{name} CN.
func NodeNameFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("node name from certificate: nil certificate")
	}
	name, ok := strings.CutPrefix(cert.Subject.CommonName, NodeCommonNamePrefix)
	if !ok || name == "" {
		return "", fmt.Errorf("certificate CN %q is not of the form %s{node}", cert.Subject.CommonName, NodeCommonNamePrefix)
	}
	return name, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return key, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	// Zero is not a valid serial.
	return s.Add(s, big.NewInt(1)), nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
