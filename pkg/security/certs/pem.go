package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

const (
	CertificateBlockType = "CERTIFICATE"
	ECKeyBlockType       = "EC PRIVATE KEY"
	pkcs8KeyBlockType    = "PRIVATE KEY"
)

// EncodeCertPEM wraps certificate DER in a CERTIFICATE block.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: CertificateBlockType, Bytes: der})
}

// DecodeCertPEM parses the first CERTIFICATE block in data.
func DecodeCertPEM(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("decode certificate PEM: no CERTIFICATE block found")
		}
		if b.Type != CertificateBlockType {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("decode certificate PEM: %w", err)
		}
		return cert, nil
	}
}

// MarshalKeyDER returns the SEC1 DER form KubeEdge stores in casecret and
// uses as the token HMAC key.
func MarshalKeyDER(key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("marshal EC key: nil key")
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal EC key: %w", err)
	}
	return der, nil
}

// ParseKeyDER parses a SEC1 EC private key.
func ParseKeyDER(der []byte) (*ecdsa.PrivateKey, error) {
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse EC private key: %w", err)
	}
	return key, nil
}

// EncodeKeyPEM encodes key as an "EC PRIVATE KEY" (SEC1) block.
func EncodeKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := MarshalKeyDER(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: ECKeyBlockType, Bytes: der}), nil
}

// DecodeKeyPEM parses the first EC key block; PKCS#8 is accepted too because
// operator-supplied keys (tlsCAKeyFile) often come from openssl in that form.
func DecodeKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("decode key PEM: no %s block found", ECKeyBlockType)
		}
		switch b.Type {
		case ECKeyBlockType:
			return ParseKeyDER(b.Bytes)
		case pkcs8KeyBlockType:
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("decode key PEM: %w", err)
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("decode key PEM: PKCS#8 key is %T, want ECDSA", k)
			}
			return ec, nil
		}
	}
}

// ReadCertFile reads a PEM certificate file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	cert, err := DecodeCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

// WriteCertFile writes der as PEM (0644), creating parent directories.
func WriteCertFile(path string, der []byte) error {
	return writeFileAtomic(path, EncodeCertPEM(der), 0o644)
}

// LoadPair reads a PEM certificate and EC key and checks they belong
// together, so a half-finished rotation is detected instead of failing later
// in the TLS handshake.
func LoadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := ReadCertFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	key, err := DecodeKeyPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("key %s does not match certificate %s", keyFile, certFile)
	}
	return cert, key, nil
}

// RotationDeadline picks a random instant between 70% and 90% of the
// certificate lifetime, so a fleet issued together does not rotate at once.
// r may be nil to use the auto-seeded global source; a *rand.Rand is not
// safe for concurrent use.
func RotationDeadline(cert *x509.Certificate, r *rand.Rand) time.Time {
	f := rand.Float64
	if r != nil {
		f = r.Float64
	}
	total := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(time.Duration(float64(total) * (0.7 + 0.2*f())))
}
