// Package token implements the KubeEdge join token:
// hex(sha256(CA DER)) + "." + JWT, where the JWT is HS256-signed with the CA
// private key's SEC1 DER bytes and carries only "exp". The hash lets an edge
// pin the CA it downloads over an unverified connection; the JWT proves to
// the cloud that the holder got the token from an administrator.
//
// A re-join token (keadm gettoken --rejoin) has the same format and one more
// claim, "node": the cloud accepts it only for that node name, and it is the
// only token that may replace an edge node that already exists.
package token

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithm is the only JWT algorithm accepted; allowing others would open
// the classic "alg: none" and key-confusion attacks.
const Algorithm = "HS256"

// DefaultRejoinTTL is how long a re-join token lasts unless told otherwise:
// long enough to carry it to the node, short enough not to linger.
const DefaultRejoinTTL = time.Hour

// Claims are what a token's JWT carries. Node is empty for ordinary join
// tokens (KubeEdge's format) and names the node a re-join token is bound to.
type Claims struct {
	jwt.RegisteredClaims
	Node string `json:"node,omitempty"`
}

var (
	ErrMalformed      = errors.New("malformed token")
	ErrCAHashMismatch = errors.New("CA certificate does not match token")
	ErrBadSignature   = errors.New("invalid token signature")
	ErrExpired        = errors.New("token expired")
)

// HashCA returns the lowercase hex sha256 of the CA certificate DER.
func HashCA(caDER []byte) string {
	sum := sha256.Sum256(caDER)
	return hex.EncodeToString(sum[:])
}

// Create issues a token that expires at now+ttl. The cloud passes twice its
// refresh interval so any token read from the Secret stays valid for at least
// one interval.
func Create(caDER, caKeyDER []byte, ttl time.Duration, now time.Time) (string, error) {
	if len(caDER) == 0 || len(caKeyDER) == 0 {
		return "", errors.New("create token: CA certificate and key are required")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("create token: ttl %v must be positive", ttl)
	}
	return create(caDER, caKeyDER, Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}})
}

// CreateRejoin issues a re-join token bound to node that expires at now+ttl.
func CreateRejoin(caDER, caKeyDER []byte, node string, ttl time.Duration, now time.Time) (string, error) {
	if len(caDER) == 0 || len(caKeyDER) == 0 {
		return "", errors.New("create re-join token: CA certificate and key are required")
	}
	if strings.TrimSpace(node) == "" {
		return "", errors.New("create re-join token: node name is required")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("create re-join token: ttl %v must be positive", ttl)
	}
	return create(caDER, caKeyDER, Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			IssuedAt:  jwt.NewNumericDate(now),
		},
		Node: node,
	})
}

func create(caDER, caKeyDER []byte, claims Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	signed, err := t.SignedString(caKeyDER)
	if err != nil {
		return "", fmt.Errorf("create token: sign JWT: %w", err)
	}
	return HashCA(caDER) + "." + signed, nil
}

// Parse splits a full token into its CA hash and JWT parts, checking only
// the shape. Surrounding whitespace (from copy and paste) is ignored.
func Parse(token string) (caHash, jwtPart string, err error) {
	token = strings.TrimSpace(token)
	parts := strings.Split(token, ".")
	if len(parts) != 4 {
		return "", "", fmt.Errorf("%w: want 4 dot-separated parts (caHash.header.claims.signature), got %d", ErrMalformed, len(parts))
	}
	for i, p := range parts {
		if p == "" {
			return "", "", fmt.Errorf("%w: part %d is empty", ErrMalformed, i+1)
		}
	}
	if err := checkHash(parts[0]); err != nil {
		return "", "", err
	}
	return parts[0], strings.Join(parts[1:], "."), nil
}

// VerifyCAHash checks that caDER is the CA the token was issued for. It
// accepts either a full token or a bare hash.
func VerifyCAHash(tokenOrHash string, caDER []byte) error {
	want := strings.TrimSpace(tokenOrHash)
	if strings.Contains(want, ".") {
		h, _, err := Parse(want)
		if err != nil {
			return err
		}
		want = h
	} else if err := checkHash(want); err != nil {
		return err
	}
	if got := HashCA(caDER); !strings.EqualFold(want, got) {
		return fmt.Errorf("%w: token expects CA sha256 %s…, server CA is %s…", ErrCAHashMismatch, short(want), short(got))
	}
	return nil
}

// VerifyJWT checks the signature (HS256 with caKeyDER) and expiry of the JWT
// part of a token at time now. The signature is checked before expiry so a
// forged token never learns anything about timing.
func VerifyJWT(jwtPart string, caKeyDER []byte, now time.Time) error {
	_, err := VerifyClaims(jwtPart, caKeyDER, now)
	return err
}

// VerifyClaims is VerifyJWT returning the verified claims, so the caller
// can tell a re-join token (Claims.Node set) from an ordinary one.
func VerifyClaims(jwtPart string, caKeyDER []byte, now time.Time) (*Claims, error) {
	if len(caKeyDER) == 0 {
		return nil, errors.New("verify token: CA key is required")
	}
	var claims Claims
	t, err := jwt.ParseWithClaims(strings.TrimSpace(jwtPart), &claims,
		func(*jwt.Token) (any, error) { return caKeyDER, nil },
		jwt.WithValidMethods([]string{Algorithm}),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
	)
	switch {
	case err == nil:
		return &claims, nil
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		if t != nil && t.Method != nil && t.Method.Alg() != Algorithm {
			return nil, fmt.Errorf("%w: signing algorithm %q not accepted, want %s", ErrBadSignature, t.Method.Alg(), Algorithm)
		}
		if t != nil && t.Method == nil {
			return nil, fmt.Errorf("%w: unsupported signing algorithm %v, want %s", ErrBadSignature, t.Header["alg"], Algorithm)
		}
		return nil, fmt.Errorf("%w: not signed by this cluster's CA key", ErrBadSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, fmt.Errorf("%w at %s (now %s); create a new one with keadm gettoken",
			ErrExpired, claims.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	default:
		// Claims were signed by the CA key but are unusable (e.g. no exp).
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

// Expiry reports when a token (full, or only its JWT part) expires without
// verifying it, so a client can fail fast before contacting the cloud.
func Expiry(token string) (time.Time, error) {
	jwtPart := strings.TrimSpace(token)
	if strings.Count(jwtPart, ".") != 2 {
		var err error
		if _, jwtPart, err = Parse(jwtPart); err != nil {
			return time.Time{}, err
		}
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(jwtPart, &claims); err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if claims.ExpiresAt == nil {
		return time.Time{}, fmt.Errorf("%w: no exp claim", ErrMalformed)
	}
	return claims.ExpiresAt.Time, nil
}

// BoundNode returns the node a re-join token (full, or only its JWT part) is
// bound to, "" for an ordinary token, without verifying it: keadm join uses
// it to explain itself before contacting the cloud, which decides.
func BoundNode(token string) (string, error) {
	jwtPart := strings.TrimSpace(token)
	if strings.Count(jwtPart, ".") != 2 {
		var err error
		if _, jwtPart, err = Parse(jwtPart); err != nil {
			return "", err
		}
	}
	var claims Claims
	if _, _, err := jwt.NewParser().ParseUnverified(jwtPart, &claims); err != nil {
		return "", fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return claims.Node, nil
}

func checkHash(h string) error {
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%w: CA hash %q is not %d hex characters", ErrMalformed, short(h), 2*sha256.Size)
	}
	return nil
}

// short keeps messages to one readable line; 12 hex characters are plenty
// to tell two CAs apart by eye.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
