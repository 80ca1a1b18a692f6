package kuberuntime

import (
	"fmt"
	"time"
)

// ContainerError says why a container is not running; SyncPod reports it as the container's Waiting state and
// returns it (joined with the others) so Edged can tell a back-off from a failure and resync in time.
type ContainerError struct {
	// Pod is "namespace/name", Container the container's name; set by SyncPod.
	Pod, Container string
	// Reason is the kubelet's Waiting reason: ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
	// CreateContainerConfigError, …
	Reason string
	// Message is for people, as shown by kubectl describe.
	Message string
	// RetryAfter is when a sync could make progress again (back-offs); 0 means at the next sync.
	RetryAfter time.Duration
	// Err is the underlying error, if any.
	Err error
}

func (e *ContainerError) Error() string {
	return fmt.Sprintf("pod %s container %s: %s: %s", e.Pod, e.Container, e.Reason, e.Message)
}

func (e *ContainerError) Unwrap() error { return e.Err }
