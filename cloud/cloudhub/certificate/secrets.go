package certificate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/tether-edge/tether/pkg/security/certs"
)

// readPairSecret returns nil, nil, nil when the Secret or either key is
// absent; data that is present but unparsable is an error, for the same
// reason as corrupt files.
func readPairSecret(ctx context.Context, kube kubernetes.Interface, name, certKey, keyKey string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	s, err := kube.CoreV1().Secrets(Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get secret %s/%s: %w", Namespace, name, err)
	}
	certDER, keyDER := s.Data[certKey], s.Data[keyKey]
	if len(certDER) == 0 || len(keyDER) == 0 {
		return nil, nil, nil
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("secret %s/%s key %s: %w", Namespace, name, certKey, err)
	}
	key, err := certs.ParseKeyDER(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("secret %s/%s key %s: %w", Namespace, name, keyKey, err)
	}
	if err := matchKey(cert, key); err != nil {
		return nil, nil, fmt.Errorf("secret %s/%s: %w", Namespace, name, err)
	}
	return cert, key, nil
}

// applySecret makes the Secret hold data, creating it (and the namespace)
// when missing. Other keys in the Secret are kept; unchanged data is not
// rewritten so restarts do not churn watchers.
func applySecret(ctx context.Context, kube kubernetes.Interface, name string, data map[string][]byte) error {
	secrets := kube.CoreV1().Secrets(Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if err := ensureNamespace(ctx, kube); err != nil {
				return err
			}
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
				Type:       corev1.SecretTypeOpaque,
				Data:       data,
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// Another replica won the race; retry as an update.
				return apierrors.NewConflict(corev1.Resource("secrets"), name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if containsAll(s.Data, data) {
			return nil
		}
		s = s.DeepCopy()
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		maps.Copy(s.Data, data)
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("save secret %s/%s: %w", Namespace, name, err)
	}
	return nil
}

func containsAll(have, want map[string][]byte) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || !bytes.Equal(got, v) {
			return false
		}
	}
	return true
}

// ensureNamespace reads before creating because cloudcore's RBAC may allow
// only reading namespaces when the installer already created kubeedge.
func ensureNamespace(ctx context.Context, kube kubernetes.Interface) error {
	_, err := kube.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get namespace %s: %w", Namespace, err)
	}
	_, err = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: Namespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	return nil
}
