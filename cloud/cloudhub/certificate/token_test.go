package certificate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/security/token"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeAfter hands every wait Run asks for to the test, which fires it.
// Because Run requests a wait only after finishing a refresh, receiving
// from waits is also the signal that the refresh is done.
type fakeAfter struct {
	waits chan time.Duration
	fire  chan time.Time
}

func newFakeAfter() *fakeAfter {
	return &fakeAfter{waits: make(chan time.Duration), fire: make(chan time.Time)}
}

func (f *fakeAfter) after(d time.Duration) <-chan time.Time {
	f.waits <- d
	return f.fire
}

func prepared(t *testing.T) (*fake.Clientset, *Bundle) {
	t.Helper()
	kube := fake.NewClientset()
	b, err := Prepare(context.Background(), kube, testConfig(t), fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	return kube, b
}

// checkToken asserts tok is a join token for b that expires at wantExp.
func checkToken(t *testing.T, b *Bundle, tok string, now, wantExp time.Time) {
	t.Helper()
	if err := token.VerifyCAHash(tok, b.CA.Raw); err != nil {
		t.Errorf("CA hash: %v", err)
	}
	_, jwtPart, err := token.Parse(tok)
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	keyDER, _ := b.CAKeyDER()
	if err := token.VerifyJWT(jwtPart, keyDER, now); err != nil {
		t.Errorf("verify JWT: %v", err)
	}
	if exp, err := token.Expiry(tok); err != nil || !exp.Equal(wantExp) {
		t.Errorf("expiry = %v, %v; want %v", exp, err, wantExp)
	}
}

func TestTokenManagerRefreshOnce(t *testing.T) {
	kube, b := prepared(t)
	m := NewTokenManager(kube, b, 12*time.Hour, fixedNow)
	if _, err := m.Current(context.Background()); err == nil {
		t.Fatal("Current before any refresh: want error")
	}
	for range 2 { // the second call updates instead of creating
		if err := m.refreshOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	data := getSecret(t, kube, TokenSecretName)
	cur, err := m.Current(context.Background())
	if err != nil || cur != string(data[TokenDataKey]) {
		t.Fatalf("Current = %q, %v; secret holds %q", cur, err, data[TokenDataKey])
	}
	checkToken(t, b, cur, testNow, testNow.Add(24*time.Hour))
}

func TestTokenManagerRun(t *testing.T) {
	const refresh = 12 * time.Hour
	tests := []struct {
		name     string
		failures int // leading secret writes that fail
		// waits is the expected sequence of delays before the token is first
		// stored: failures back off exponentially, success waits refresh.
		waits []time.Duration
	}{
		{"healthy", 0, []time.Duration{refresh}},
		{"API errors back off", 3, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, refresh}},
		{"backoff is capped", 11, append(seconds(1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300), refresh)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kube, b := prepared(t)
			failures := tc.failures // only touched by the reactor, under the fake's lock
			kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				if failures > 0 {
					failures--
					return true, nil, errors.New("apiserver unavailable")
				}
				return false, nil, nil
			})
			clock := &fakeClock{now: testNow}
			m := NewTokenManager(kube, b, refresh, clock.Now)
			fa := newFakeAfter()
			m.after = fa.after

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run returned %v after cancel", err)
				}
			}()

			var got []time.Duration
			for range tc.waits {
				got = append(got, <-fa.waits)
				if len(got) < len(tc.waits) {
					fa.fire <- time.Time{}
				}
			}
			if !slices.Equal(got, tc.waits) {
				t.Fatalf("waits = %v, want %v", got, tc.waits)
			}
			first, err := m.Current(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkToken(t, b, first, clock.Now(), clock.Now().Add(2*refresh))

			// One interval later the token is replaced by one that expires later.
			clock.Advance(refresh)
			fa.fire <- time.Time{}
			if d := <-fa.waits; d != refresh {
				t.Errorf("wait after refresh = %v, want %v", d, refresh)
			}
			second, err := m.Current(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if second == first {
				t.Error("token was not refreshed")
			}
			checkToken(t, b, second, clock.Now(), clock.Now().Add(2*refresh))
		})
	}
}

func seconds(s ...int) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v) * time.Second
	}
	return out
}

func TestTokenManagerRunStopsOnCancel(t *testing.T) {
	kube, b := prepared(t)
	m := NewTokenManager(kube, b, time.Hour, fixedNow)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With ctx already done Run must return without waiting an hour.
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if err := NewTokenManager(kube, nil, time.Hour, fixedNow).Run(context.Background()); err == nil {
		t.Error("Run without a bundle: want error")
	}
}
