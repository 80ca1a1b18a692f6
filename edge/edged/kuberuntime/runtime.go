// Package kuberuntime runs pods on a CRI runtime (containerd): it turns a v1.Pod into a sandbox and containers,
// keeps them as the spec says (restart policy with back-off), reports the pod's status from what the runtime
// shows, and finds its own containers again after edgecore restarts. It knows nothing of the cloud or the bus.
package kuberuntime

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ObjectGetter resolves the ConfigMaps and Secrets a pod refers to (volumes, env, envFrom). Edged backs it with
// MetaManager: the cloud when online, the local database when not.
type ObjectGetter interface {
	GetConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// Runtime is what Edged needs from the container runtime layer. All methods are safe for concurrent use on
// different pods; Edged serialises calls for the same pod.
type Runtime interface {
	// SyncPod makes the runtime match the pod's spec: creates the sandbox and volumes if missing, starts
	// containers that should run (honouring restartPolicy and back-off), and returns the pod's status as the
	// API server should see it. An error means the sync is incomplete; the status is still as accurate as
	// possible (e.g. Waiting with reason CreateContainerConfigError or ErrImagePull and a message).
	SyncPod(ctx context.Context, pod *corev1.Pod, objects ObjectGetter) (corev1.PodStatus, error)
	// KillPod stops every container of the pod within gracePeriod, then the sandbox, and removes them and the
	// pod's volumes and cgroups.
	KillPod(ctx context.Context, uid types.UID, gracePeriod time.Duration) error
	// RunningPods lists pod UIDs that have a sandbox or containers in the runtime, for adoption after a restart
	// and for removing pods the node no longer has.
	RunningPods(ctx context.Context) ([]types.UID, error)
	// GarbageCollect removes dead containers beyond the per-pod limit and exited sandboxes of deleted pods.
	GarbageCollect(ctx context.Context) error
	// Version names the runtime for node status (e.g. "containerd://1.6.20").
	Version(ctx context.Context) (string, error)
}
