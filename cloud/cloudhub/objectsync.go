package cloudhub

import (
	"context"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/resource"
)

// syncObject returns an empty ObjectSync, or ClusterObjectSync for the
// "null" namespace, with pointers to its spec and status.
func syncObject(namespace, name string) (client.Object, *v1alpha1.ObjectSyncSpec, *v1alpha1.ObjectSyncStatus) {
	if namespace == resource.NullNamespace || namespace == "" {
		o := &v1alpha1.ClusterObjectSync{ObjectMeta: metav1.ObjectMeta{Name: name}}
		return o, &o.Spec, &o.Status
	}
	o := &v1alpha1.ObjectSync{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	return o, &o.Spec, &o.Status
}

func (q *queuedMsg) syncSpec() v1alpha1.ObjectSyncSpec {
	return v1alpha1.ObjectSyncSpec{ObjectAPIVersion: q.gvk.GroupVersion().String(), ObjectKind: q.gvk.Kind, ObjectName: q.name}
}

// parseRV reads a recorded resourceVersion; empty means nothing delivered.
func parseRV(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	rv, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceversion %q is not an unsigned integer: %w", s, err)
	}
	return rv, nil
}

// syncedRV returns the resourceVersion the node has confirmed for q's
// object, reading for at most SyncCallTimeout. On first sight the recorder
// creates the record with "0", so that SyncController knows the object is
// owed to the node even if cloudcore restarts before delivery.
func (h *CloudHub) syncedRV(ctx context.Context, nodeID string, q *queuedMsg) (uint64, error) {
	if h.records.has(nodeID, q) {
		return 0, nil // a record is on its way; the edge ignores a duplicate
	}
	name := v1alpha1.SyncName(nodeID, q.uid)
	obj, _, status := syncObject(q.namespace, name)
	reader := h.opts.Reader
	if reader == nil {
		reader = h.opts.Client
	}
	callCtx, cancel := context.WithTimeout(ctx, h.opts.SyncCallTimeout)
	defer cancel()
	err := reader.Get(callCtx, client.ObjectKeyFromObject(obj), obj)
	if err == nil {
		rv, perr := parseRV(status.ObjectResourceVersion)
		if perr != nil {
			return 0, fmt.Errorf("object sync %s: %w", name, perr)
		}
		return rv, nil
	}
	if !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("get object sync %s: %w", name, err)
	}
	owed := *q
	owed.rv, owed.rvText = 0, "0"
	h.records.add(nodeID, &owed, false)
	return 0, nil
}

// recordAck stores what the node confirmed: the message RV, or the removal
// of the record for a delete. The recorded RV never moves backwards.
func (h *CloudHub) recordAck(ctx context.Context, nodeID string, q *queuedMsg) error {
	if !q.record {
		return nil
	}
	name := v1alpha1.SyncName(nodeID, q.uid)
	if q.del {
		obj, _, _ := syncObject(q.namespace, name)
		if err := h.opts.Client.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete object sync %s: %w", name, err)
		}
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, spec, status := syncObject(q.namespace, name)
		err := h.opts.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		switch {
		case apierrors.IsNotFound(err):
			*spec = q.syncSpec()
			if err := h.opts.Client.Create(ctx, obj); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return apierrors.NewConflict(v1alpha1.Resource("objectsyncs"), name, err)
				}
				return err
			}
		case err != nil:
			return err
		default:
			if cur, perr := parseRV(status.ObjectResourceVersion); perr == nil && cur >= q.rv {
				return nil
			}
		}
		status.ObjectResourceVersion = q.rvText
		return h.opts.Client.Status().Update(ctx, obj)
	})
	if err != nil {
		return fmt.Errorf("record resourceversion %s in object sync %s: %w", q.rvText, name, err)
	}
	return nil
}
