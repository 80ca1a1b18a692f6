package kuberuntime

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// Waiting reasons, as the kubelet reports them.
const (
	ReasonContainerCreating  = "ContainerCreating"
	ReasonPodInitializing    = "PodInitializing"
	ReasonCrashLoopBackOff   = "CrashLoopBackOff"
	ReasonErrImagePull       = "ErrImagePull"
	ReasonImagePullBackOff   = "ImagePullBackOff"
	ReasonErrImageNeverPull  = "ErrImageNeverPull"
	ReasonCreateConfigError  = "CreateContainerConfigError"
	ReasonCreateContainerErr = "CreateContainerError"
	ReasonRunContainerError  = "RunContainerError"
)

// pullPolicy follows the kubelet: an explicit policy wins; otherwise ":latest" and untagged images are pulled
// every time a container starts (Always) and anything else only when missing (IfNotPresent).
func (m *Manager) pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	if m.opts.DefaultImagePullPolicy != "" {
		return m.opts.DefaultImagePullPolicy
	}
	if strings.Contains(c.Image, "@") {
		return corev1.PullIfNotPresent
	}
	ref := c.Image
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	tag := ""
	if i := strings.LastIndex(ref, ":"); i >= 0 {
		tag = ref[i+1:]
	}
	if tag == "" || tag == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// imageID is the local image's ID, or "" when the runtime does not have it.
func (m *Manager) imageID(ctx context.Context, image string) (string, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.img.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return "", fmt.Errorf("image status of %s: %w", image, err)
	}
	return resp.GetImage().GetId(), nil
}

func (m *Manager) pullImage(ctx context.Context, image string, sb *runtimeapi.PodSandboxConfig) (string, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.img.PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, SandboxConfig: sb})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// ensureImagePresent returns the ID of the image to create the container from. With Always, a failed pull
// falls back to a local copy: edge nodes are often offline, and a ":latest" image imported by hand must still
// start (the kubelet would fail with ErrImagePull instead).
func (m *Manager) ensureImagePresent(ctx context.Context, image string, policy corev1.PullPolicy, sb *runtimeapi.PodSandboxConfig) (string, error) {
	id, err := m.imageID(ctx, image)
	if err != nil {
		return "", err
	}
	switch policy {
	case corev1.PullNever:
		if id == "" {
			return "", &ContainerError{Reason: ReasonErrImageNeverPull,
				Message: fmt.Sprintf("Container image %q is not present with pull policy of Never", image)}
		}
		return id, nil
	case corev1.PullIfNotPresent:
		if id != "" {
			return id, nil
		}
	}
	ref, pullErr := m.pullImage(ctx, image, sb)
	if pullErr == nil {
		return ref, nil
	}
	if id != "" {
		klog.InfoS("Image pull failed; using the local copy", "image", image, "err", pullErr)
		return id, nil
	}
	return "", &ContainerError{Reason: ReasonErrImagePull,
		Message: fmt.Sprintf("Failed to pull image %q: %v", image, pullErr), Err: pullErr}
}

// ensureImage applies the pull policy and the per-pod pull back-off, so a missing image is retried like the
// kubelet does (ErrImagePull, then ImagePullBackOff while waiting) without hammering a registry.
func (m *Manager) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container, sb *runtimeapi.PodSandboxConfig) (string, error) {
	key := string(pod.UID) + "/image/" + c.Image
	now := m.now()
	if left := m.pulls.remainingSinceLast(key, now); left > 0 {
		return "", &ContainerError{Reason: ReasonImagePullBackOff,
			Message: fmt.Sprintf("Back-off pulling image %q", c.Image), RetryAfter: left}
	}
	id, err := m.ensureImagePresent(ctx, c.Image, m.pullPolicy(c), sb)
	if err != nil {
		if ce, ok := err.(*ContainerError); ok && ce.Reason == ReasonErrImagePull {
			m.pulls.next(key, now)
			ce.RetryAfter = m.pulls.remainingSinceLast(key, now)
		}
		return "", err
	}
	m.pulls.forget(key)
	return id, nil
}
