package kuberuntime

import (
	"context"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageUser is who an image runs as when the pod does not say: a numeric uid, or a user name the runtime
// resolves inside the image. At most one is set.
type imageUser struct {
	uid  *int64
	name string
}

// imageUser asks the runtime for the image's configured user, as the kubelet's getImageUser: an image that
// names no user runs as root (uid 0).
func (m *Manager) imageUser(ctx context.Context, image string) (imageUser, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.img.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return imageUser{}, fmt.Errorf("user of image %s: %w", image, err)
	}
	if img := resp.GetImage(); img != nil {
		if img.GetUid() != nil {
			uid := img.GetUid().GetValue()
			return imageUser{uid: &uid}, nil
		}
		if img.GetUsername() != "" {
			return imageUser{name: img.GetUsername()}, nil
		}
	}
	root := int64(0)
	return imageUser{uid: &root}, nil
}

// podDesc names a pod the kubelet's way (format.Pod), for messages users compare with a kubelet's.
func podDesc(pod *corev1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}

// verifyRunAsNonRoot enforces runAsNonRoot against the user the container would really run as: runAsUser if
// set, else the image's user. A user name cannot be checked without the image's /etc/passwd, so it is refused,
// "root" included. The messages are the kubelet's.
func verifyRunAsNonRoot(pod *corev1.Pod, c *corev1.Container, img imageUser) error {
	eff := effectiveSecurityContext(pod, c)
	if !isTrue(eff.RunAsNonRoot) {
		return nil
	}
	if eff.RunAsUser != nil {
		if *eff.RunAsUser == 0 {
			return fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", podDesc(pod), c.Name)
		}
		return nil
	}
	switch {
	case img.uid == nil && img.name != "":
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)",
			img.name, podDesc(pod), c.Name)
	case img.uid != nil && *img.uid == 0:
		return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", podDesc(pod), c.Name)
	case img.uid != nil:
		if errs := validation.IsValidUserID(*img.uid); len(errs) > 0 {
			return fmt.Errorf("container has runAsNonRoot and image has an invalid user id (%d). (Must be 1-(%d)): %s (pod: %q, container: %s)",
				*img.uid, math.MaxInt32, strings.Join(errs, "; "), podDesc(pod), c.Name)
		}
	}
	return nil
}
