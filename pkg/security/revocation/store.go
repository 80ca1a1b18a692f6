package revocation

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Modify applies fn to the list's ConfigMap data, creating the ConfigMap when
// it is missing, and retries on write conflicts (several cloudcores and keadm
// write the same object). fn returns whether it changed data; nothing is
// written otherwise.
func Modify(ctx context.Context, kube kubernetes.Interface, fn func(data map[string]string) (bool, error)) error {
	cms := kube.CoreV1().ConfigMaps(Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			data := map[string]string{}
			changed, err := fn(data)
			if err != nil || !changed {
				return err
			}
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: Namespace,
					Labels: map[string]string{"app.kubernetes.io/part-of": "tether"}},
				Data: data,
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// Another writer created it meanwhile; start over as an update.
				return apierrors.NewConflict(corev1.Resource("configmaps"), ConfigMapName, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		changed, err := fn(cm.Data)
		if err != nil || !changed {
			return err
		}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("update ConfigMap %s/%s: %w", Namespace, ConfigMapName, err)
	}
	return nil
}

// RevokeNode records floor f for node and returns the floor now in force. A
// later floor already recorded is kept, and so is one recorded for the same
// deleted Node (same NodeUID), so that replicas seeing one deletion write it
// once. Expired serial entries are pruned on the way.
func RevokeNode(ctx context.Context, kube kubernetes.Interface, node string, f NodeFloor, now time.Time) (NodeFloor, error) {
	value, err := EncodeNode(f)
	if err != nil {
		return NodeFloor{}, err
	}
	var result NodeFloor
	err = Modify(ctx, kube, func(data map[string]string) (bool, error) {
		changed := prune(data, now)
		result = f
		if old, ok := data[NodeKey(node)]; ok {
			var cur NodeFloor
			if strictUnmarshal(old, &cur) == nil && !cur.Before.IsZero() {
				if (f.NodeUID != "" && cur.NodeUID == f.NodeUID) || !cur.Before.Before(f.Before) {
					result = cur
					return changed, nil
				}
			}
			// A malformed entry under our key is replaced.
		}
		data[NodeKey(node)] = value
		return true, nil
	})
	if err != nil {
		return NodeFloor{}, err
	}
	return result, nil
}

// RevokeSerial records that the certificate with serial (any spelling
// NormalizeSerial accepts) is revoked. An earlier revocation of it is kept.
func RevokeSerial(ctx context.Context, kube kubernetes.Interface, serial string, e SerialEntry, now time.Time) (SerialEntry, error) {
	s, err := NormalizeSerial(serial)
	if err != nil {
		return SerialEntry{}, err
	}
	value, err := EncodeSerial(e)
	if err != nil {
		return SerialEntry{}, err
	}
	result := e
	err = Modify(ctx, kube, func(data map[string]string) (bool, error) {
		changed := prune(data, now)
		result = e
		if old, ok := data[SerialKey(s)]; ok {
			var cur SerialEntry
			if strictUnmarshal(old, &cur) == nil && !cur.RevokedAt.IsZero() {
				result = cur
				return changed, nil
			}
		}
		data[SerialKey(s)] = value
		return true, nil
	})
	if err != nil {
		return SerialEntry{}, err
	}
	return result, nil
}

// Prune removes serial entries whose certificates have expired and returns
// their keys.
func Prune(ctx context.Context, kube kubernetes.Interface, now time.Time) ([]string, error) {
	var removed []string
	err := Modify(ctx, kube, func(data map[string]string) (bool, error) {
		removed = Expired(data, now)
		return prune(data, now), nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

func prune(data map[string]string, now time.Time) bool {
	keys := Expired(data, now)
	for _, k := range keys {
		delete(data, k)
	}
	return len(keys) > 0
}
