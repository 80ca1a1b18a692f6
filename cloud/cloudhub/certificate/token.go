package certificate

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/security/token"
)

const (
	minRetry = time.Second
	maxRetry = 5 * time.Minute
)

// TokenManager keeps a valid join token in Secret kubeedge/tokensecret,
// where `keadm gettoken` reads it.
type TokenManager struct {
	kube    kubernetes.Interface
	bundle  *Bundle
	refresh time.Duration
	now     func() time.Time
	// after is time.After; tests replace it to drive the loop without sleeping.
	after    func(time.Duration) <-chan time.Time
	minRetry time.Duration
	maxRetry time.Duration
}

// NewTokenManager returns a manager that issues tokens valid for 2×refresh,
// as KubeEdge does, so a token read just before a refresh still lasts a full
// interval. refresh <= 0 means KubeEdge's default of 12h.
func NewTokenManager(kube kubernetes.Interface, bundle *Bundle, refresh time.Duration, now func() time.Time) *TokenManager {
	if refresh <= 0 {
		refresh = defaultRefreshTime
	}
	if now == nil {
		now = time.Now
	}
	return &TokenManager{
		kube:     kube,
		bundle:   bundle,
		refresh:  refresh,
		now:      now,
		after:    time.After,
		minRetry: min(minRetry, refresh),
		maxRetry: min(maxRetry, refresh),
	}
}

// Run writes a token now and then every refresh interval until ctx is done,
// when it returns nil. Failures are retried with exponential backoff: the
// previous token stays valid for one more interval, so an API outage shorter
// than that goes unnoticed by users.
func (m *TokenManager) Run(ctx context.Context) error {
	if m.bundle == nil || m.bundle.CA == nil || m.bundle.CAKey == nil {
		return errors.New("token manager: CA certificate and key are required")
	}
	retry := m.minRetry
	for {
		wait := m.refresh
		if err := m.refreshOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			klog.ErrorS(err, "Failed to refresh join token, will retry", "secret", klog.KRef(Namespace, TokenSecretName), "retryIn", retry)
			wait = retry
			retry = min(2*retry, m.maxRetry)
		} else {
			retry = m.minRetry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.after(wait):
		}
	}
}

// refreshOnce issues a token and stores it.
func (m *TokenManager) refreshOnce(ctx context.Context) error {
	keyDER, err := m.bundle.CAKeyDER()
	if err != nil {
		return fmt.Errorf("refresh token: %w", err)
	}
	now := m.now()
	tok, err := token.Create(m.bundle.CA.Raw, keyDER, 2*m.refresh, now)
	if err != nil {
		return fmt.Errorf("refresh token: %w", err)
	}
	if err := applySecret(ctx, m.kube, TokenSecretName, map[string][]byte{TokenDataKey: []byte(tok)}); err != nil {
		return fmt.Errorf("refresh token: %w", err)
	}
	klog.V(2).InfoS("Refreshed join token", "secret", klog.KRef(Namespace, TokenSecretName), "expires", now.Add(2*m.refresh))
	return nil
}

// Current returns the token in the Secret; with several cloudcore replicas
// it may have been written by another one, which is fine as all share the CA.
func (m *TokenManager) Current(ctx context.Context) (string, error) {
	s, err := m.kube.CoreV1().Secrets(Namespace).Get(ctx, TokenSecretName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get secret %s/%s: %w", Namespace, TokenSecretName, err)
	}
	tok := s.Data[TokenDataKey]
	if len(tok) == 0 {
		return "", fmt.Errorf("secret %s/%s has no %s", Namespace, TokenSecretName, TokenDataKey)
	}
	return string(tok), nil
}
