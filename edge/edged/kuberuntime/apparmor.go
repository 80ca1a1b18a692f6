package kuberuntime

import (
	"errors"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ReasonAppArmor is the pod status reason of a pod the node cannot confine as asked, the kubelet's
// AppArmorNotAdmittedReason.
const ReasonAppArmor = "AppArmor"

// errNoAppArmor is the kubelet's wording for a host without AppArmor.
var errNoAppArmor = errors.New("AppArmor is not enabled on the host")

// hostAppArmor reports whether this host can enforce AppArmor profiles, as the kubelet checks it (the
// securityfs directory and the module's "enabled" parameter); nil means it can.
func hostAppArmor() error {
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err != nil {
		return errNoAppArmor
	}
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err != nil || len(b) < 1 || b[0] != 'Y' {
		return errNoAppArmor
	}
	return nil
}

// appArmorProfileOf is the profile a container asked for, the kubelet's precedence: the container's
// appArmorProfile, then the legacy per-container annotation, then the pod's appArmorProfile. nil means none
// (the runtime's default applies, which on a host without AppArmor is nothing).
func appArmorProfileOf(pod *corev1.Pod, c *corev1.Container) *corev1.AppArmorProfile {
	if csc := c.SecurityContext; csc != nil && csc.AppArmorProfile != nil {
		return csc.AppArmorProfile
	}
	if v, ok := pod.Annotations[corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix+c.Name]; ok {
		if p := appArmorAnnotation(v); p != nil {
			return p
		}
	}
	if psc := pod.Spec.SecurityContext; psc != nil && psc.AppArmorProfile != nil {
		return psc.AppArmorProfile
	}
	return nil
}

// appArmorAnnotation parses the legacy annotation value ("runtime/default", "unconfined",
// "localhost/<name>"); nil for anything else, which the kubelet ignores too.
func appArmorAnnotation(v string) *corev1.AppArmorProfile {
	switch {
	case v == corev1.DeprecatedAppArmorBetaProfileRuntimeDefault:
		return &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	case v == corev1.DeprecatedAppArmorBetaProfileNameUnconfined:
		return &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	case strings.HasPrefix(v, corev1.DeprecatedAppArmorBetaProfileNamePrefix):
		name := strings.TrimPrefix(v, corev1.DeprecatedAppArmorBetaProfileNamePrefix)
		return &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: &name}
	}
	return nil
}

// appArmorProfile is the CRI form of the container's profile, and the same in the deprecated string form the
// kubelet still sends for older runtimes. nil and "" when the container asked for none.
func appArmorProfile(pod *corev1.Pod, c *corev1.Container) (*runtimeapi.SecurityProfile, string, error) {
	p := appArmorProfileOf(pod, c)
	if p == nil {
		return nil, "", nil
	}
	switch p.Type {
	case corev1.AppArmorProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			corev1.DeprecatedAppArmorBetaProfileRuntimeDefault, nil
	case corev1.AppArmorProfileTypeUnconfined:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
			corev1.DeprecatedAppArmorBetaProfileNameUnconfined, nil
	case corev1.AppArmorProfileTypeLocalhost:
		if p.LocalhostProfile == nil || strings.TrimSpace(*p.LocalhostProfile) == "" {
			return nil, "", fmt.Errorf("container %s: invalid empty AppArmor profile name", c.Name)
		}
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: *p.LocalhostProfile},
			corev1.DeprecatedAppArmorBetaProfileNamePrefix + *p.LocalhostProfile, nil
	}
	return nil, "", fmt.Errorf("container %s: unknown AppArmor profile type %q", c.Name, p.Type)
}

// appArmorRequired reports whether any container of the pod asks for a profile other than unconfined.
func appArmorRequired(pod *corev1.Pod) bool {
	for _, c := range allContainers(pod) {
		if p := appArmorProfileOf(pod, c); p != nil && p.Type != corev1.AppArmorProfileTypeUnconfined {
			return true
		}
	}
	return false
}

// admitAppArmor is the kubelet's AppArmor admission: a pod asking for confinement the host cannot give is
// rejected as a whole rather than run unconfined. The error is the status message after "Pod was rejected: ".
func (m *Manager) admitAppArmor(pod *corev1.Pod) error {
	if !appArmorRequired(pod) {
		return nil
	}
	if err := m.appArmorHost(); err != nil {
		return fmt.Errorf("Cannot enforce AppArmor: %w", err) //nolint:staticcheck // the kubelet's message, capital included
	}
	for _, c := range allContainers(pod) {
		if _, _, err := appArmorProfile(pod, c); err != nil {
			return fmt.Errorf("Cannot enforce AppArmor: %w", err) //nolint:staticcheck // the kubelet's message
		}
	}
	return nil
}
