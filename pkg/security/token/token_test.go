package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeCA stands in for CA material: the token only hashes the cert DER and
// uses the SEC1 key DER as an opaque HMAC key.
func fakeCA(t testing.TB) (caDER, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caDER = make([]byte, 300)
	if _, err := rand.Read(caDER); err != nil {
		t.Fatal(err)
	}
	return caDER, keyDER
}

func mustCreate(t testing.TB, caDER, keyDER []byte, ttl time.Duration) string {
	t.Helper()
	tok, err := Create(caDER, keyDER, ttl, testNow)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return tok
}

func signed(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateFormatIsKubeEdgeCompatible(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	tok := mustCreate(t, caDER, keyDER, 24*time.Hour)

	parts := strings.Split(tok, ".")
	if len(parts) != 4 {
		t.Fatalf("token has %d parts, want 4", len(parts))
	}
	sum := sha256.Sum256(caDER)
	if parts[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("hash part = %s, want hex sha256 of CA DER", parts[0])
	}
	// Verify independently of this package, the way KubeEdge cloudcore does.
	jwtPart := strings.Join(parts[1:], ".")
	parsed, err := jwt.Parse(jwtPart, func(tk *jwt.Token) (any, error) { return keyDER, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return testNow }))
	if err != nil || !parsed.Valid {
		t.Fatalf("independent jwt/v5 verification failed: %v", err)
	}
	claims := parsed.Claims.(jwt.MapClaims)
	if len(claims) != 1 || claims["exp"] != float64(testNow.Add(24*time.Hour).Unix()) {
		t.Errorf("claims = %v, want only exp=now+24h", claims)
	}
	header, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if !strings.Contains(string(header), `"alg":"HS256"`) {
		t.Errorf("header = %s", header)
	}
}

func TestVerifyHappyPath(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	tok := mustCreate(t, caDER, keyDER, time.Hour)
	hash, jwtPart, err := Parse("  " + tok + "\n")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, in := range []string{tok, hash, strings.ToUpper(hash)} {
		if err := VerifyCAHash(in, caDER); err != nil {
			t.Errorf("VerifyCAHash(%.20s…): %v", in, err)
		}
	}
	if err := VerifyJWT(jwtPart, keyDER, testNow.Add(59*time.Minute)); err != nil {
		t.Errorf("VerifyJWT: %v", err)
	}
	for _, in := range []string{tok, jwtPart} {
		exp, err := Expiry(in)
		if err != nil || !exp.Equal(testNow.Add(time.Hour)) {
			t.Errorf("Expiry = %v, %v; want %v", exp, err, testNow.Add(time.Hour))
		}
	}
}

func TestVerifyCAHashRejects(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	otherCA, _ := fakeCA(t)
	tok := mustCreate(t, caDER, keyDER, time.Hour)
	tests := []struct {
		name, in string
		ca       []byte
		want     error
	}{
		{"other CA", tok, otherCA, ErrCAHashMismatch},
		{"other CA bare hash", HashCA(caDER), otherCA, ErrCAHashMismatch},
		{"three parts", "a.b.c", caDER, ErrMalformed},
		{"short hash", "abcd", caDER, ErrMalformed},
		{"non-hex hash", strings.Repeat("z", 64), caDER, ErrMalformed},
		{"empty", "", caDER, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyCAHash(tc.in, tc.ca)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	err := VerifyCAHash(tok, otherCA)
	if msg := err.Error(); !strings.Contains(msg, HashCA(caDER)[:12]) || !strings.Contains(msg, HashCA(otherCA)[:12]) || strings.Contains(msg, HashCA(caDER)) {
		t.Errorf("mismatch message should name both shortened hashes: %q", msg)
	}
}

func TestVerifyJWTRejects(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	_, otherKey := fakeCA(t)
	_, good, _ := Parse(mustCreate(t, caDER, keyDER, time.Hour))
	_, foreign, _ := Parse(mustCreate(t, caDER, otherKey, time.Hour))
	_, expired, _ := Parse(mustCreate(t, caDER, keyDER, time.Minute))

	parts := strings.Split(good, ".")
	// Flip a bit of the decoded signature: flipping a character could leave invalid base64 and test the parser.
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sig[3] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	forgedClaims := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":4102444800}`)) + "." + parts[2]

	exp := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(testNow.Add(time.Hour))}
	none := signed(t, jwt.SigningMethodNone, exp, jwt.UnsafeAllowNoneSignatureType)
	hs512 := signed(t, jwt.SigningMethodHS512, exp, keyDER)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256 := signed(t, jwt.SigningMethodRS256, exp, rsaKey)
	noExp := signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{}, keyDER)
	unknownAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"XYZ","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]

	tests := []struct {
		name, jwt string
		now       time.Time
		want      error
	}{
		{"tampered signature", tamperedSig, testNow, ErrBadSignature},
		{"forged claims", forgedClaims, testNow, ErrBadSignature},
		{"signed with another key", foreign, testNow, ErrBadSignature},
		{"expired", expired, testNow.Add(2 * time.Minute), ErrExpired},
		{"expired and forged reports signature", foreign, testNow.Add(2 * time.Hour), ErrBadSignature},
		{"alg none", none, testNow, ErrBadSignature},
		{"alg HS512", hs512, testNow, ErrBadSignature},
		{"alg RS256", rs256, testNow, ErrBadSignature},
		{"unknown alg", unknownAlg, testNow, ErrBadSignature},
		{"no exp", noExp, testNow, ErrMalformed},
		{"garbage", "garbage", testNow, ErrMalformed},
		{"empty", "", testNow, ErrMalformed},
		{"bad base64", "!!.??.##", testNow, ErrMalformed},
		{"full token instead of jwt", HashCA(caDER) + "." + good, testNow, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyJWT(tc.jwt, keyDER, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	err = VerifyJWT(expired, keyDER, testNow.Add(2*time.Minute))
	if want := testNow.Add(time.Minute).Format(time.RFC3339); !strings.Contains(err.Error(), want) {
		t.Errorf("expired message %q should say when (%s)", err, want)
	}
	if err := VerifyJWT(good, nil, testNow); err == nil {
		t.Error("empty key: want error")
	}
}

func TestParseAndExpiryRejectMalformed(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, in := range []string{
		"", "garbage", "a.b.c", hash + ".b.c", hash + ".a.b.c.d", hash + "..b.c", "xyz.a.b.c",
		hash + ".e30.e30.sig", // decodes, but no exp for Expiry
	} {
		_, _, perr := Parse(in)
		_, eerr := Expiry(in)
		if !errors.Is(eerr, ErrMalformed) {
			t.Errorf("Expiry(%q) = %v, want ErrMalformed", in, eerr)
		}
		if in == hash+".e30.e30.sig" {
			continue // structurally valid
		}
		if !errors.Is(perr, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", in, perr)
		}
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	for name, tc := range map[string]struct {
		ca, key []byte
		ttl     time.Duration
	}{
		"no CA":    {nil, keyDER, time.Hour},
		"no key":   {caDER, nil, time.Hour},
		"zero ttl": {caDER, keyDER, 0},
	} {
		if _, err := Create(tc.ca, tc.key, tc.ttl, testNow); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	caDER, keyDER := fakeCA(f)
	f.Add(mustCreate(f, caDER, keyDER, time.Hour))
	f.Add("")
	f.Add("a.b.c")
	f.Add("....")
	f.Add(strings.Repeat("ab", 32) + ".e30.e30.")
	f.Add(strings.Repeat("ab", 32) + ".eyJhbGciOiJub25lIn0.eyJleHAiOjF9.")
	f.Fuzz(func(t *testing.T, s string) {
		if _, j, err := Parse(s); err == nil {
			_ = VerifyJWT(j, keyDER, testNow)
		}
		_ = VerifyJWT(s, keyDER, testNow)
		_ = VerifyCAHash(s, caDER)
		_, _ = Expiry(s)
	})
}

func TestRejoinToken(t *testing.T) {
	caDER, keyDER := fakeCA(t)
	rejoin, err := CreateRejoin(caDER, keyDER, "edge1", DefaultRejoinTTL, testNow)
	if err != nil {
		t.Fatal(err)
	}
	ordinary := mustCreate(t, caDER, keyDER, time.Hour)
	_, rejoinJWT, err := Parse(rejoin)
	if err != nil {
		t.Fatalf("a re-join token must have the join token's format: %v", err)
	}
	if err := VerifyCAHash(rejoin, caDER); err != nil {
		t.Error(err)
	}
	_, ordinaryJWT, _ := Parse(ordinary)

	tests := []struct {
		name     string
		jwt      string
		at       time.Time
		wantNode string
		wantErr  error
	}{
		{"re-join token names its node", rejoinJWT, testNow.Add(59 * time.Minute), "edge1", nil},
		{"ordinary token names none", ordinaryJWT, testNow, "", nil},
		{"re-join token expires after its ttl", rejoinJWT, testNow.Add(61 * time.Minute), "", ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := VerifyClaims(tt.jwt, keyDER, tt.at)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyClaims = %v, want %v", err, tt.wantErr)
			}
			if err == nil && c.Node != tt.wantNode {
				t.Errorf("Node = %q, want %q", c.Node, tt.wantNode)
			}
			if err := VerifyJWT(tt.jwt, keyDER, tt.at); !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifyJWT = %v, want %v", err, tt.wantErr)
			}
		})
	}

	// The node claim is signed: changing it breaks the signature.
	parts := strings.Split(rejoinJWT, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), `"node":"edge1"`, `"node":"edge2"`, 1)
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(forged))
	if _, err := VerifyClaims(strings.Join(parts, "."), keyDER, testNow); !errors.Is(err, ErrBadSignature) {
		t.Errorf("re-join token with an edited node claim: %v, want %v", err, ErrBadSignature)
	}

	for _, tc := range []struct{ tok, want string }{{rejoin, "edge1"}, {rejoinJWT, "edge1"}, {ordinary, ""}} {
		if got, err := BoundNode(tc.tok); err != nil || got != tc.want {
			t.Errorf("BoundNode = %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := BoundNode("garbage"); !errors.Is(err, ErrMalformed) {
		t.Errorf("BoundNode(garbage) = %v, want %v", err, ErrMalformed)
	}
	for _, bad := range []struct {
		name string
		node string
		ttl  time.Duration
	}{{"no node", " ", time.Hour}, {"no ttl", "edge1", 0}} {
		if _, err := CreateRejoin(caDER, keyDER, bad.node, bad.ttl, testNow); err == nil {
			t.Errorf("CreateRejoin with %s: no error", bad.name)
		}
	}
}
