package kuberuntime

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// effectiveSecurityContext is the container's securityContext with the pod's defaults filled in, container
// fields winning, as the kubelet's securitycontext.DetermineEffectiveSecurityContext computes it. Seccomp and
// AppArmor are left out: each has its own precedence (seccomp.go, apparmor.go). The result shares pointers with
// the pod and must not be modified.
func effectiveSecurityContext(pod *corev1.Pod, c *corev1.Container) *corev1.SecurityContext {
	eff := &corev1.SecurityContext{}
	if psc := pod.Spec.SecurityContext; psc != nil {
		eff.SELinuxOptions = psc.SELinuxOptions
		eff.RunAsUser = psc.RunAsUser
		eff.RunAsGroup = psc.RunAsGroup
		eff.RunAsNonRoot = psc.RunAsNonRoot
	}
	csc := c.SecurityContext
	if csc == nil {
		return eff
	}
	if csc.SELinuxOptions != nil {
		eff.SELinuxOptions = csc.SELinuxOptions
	}
	if csc.RunAsUser != nil {
		eff.RunAsUser = csc.RunAsUser
	}
	if csc.RunAsGroup != nil {
		eff.RunAsGroup = csc.RunAsGroup
	}
	if csc.RunAsNonRoot != nil {
		eff.RunAsNonRoot = csc.RunAsNonRoot
	}
	eff.Capabilities = csc.Capabilities
	eff.Privileged = csc.Privileged
	eff.ReadOnlyRootFilesystem = csc.ReadOnlyRootFilesystem
	eff.AllowPrivilegeEscalation = csc.AllowPrivilegeEscalation
	eff.ProcMount = csc.ProcMount
	return eff
}

func isTrue(b *bool) bool { return b != nil && *b }

// containerSecurity is the CRI security context of one container, field for field what the kubelet sends
// (kuberuntime determineEffectiveSecurityContext), so a pod is as confined on an edge node as on any other.
// img is the image's user, used when the pod names none. Errors are the pod's fault (a Localhost profile
// without a name, an unknown policy) and fail the container with CreateContainerConfigError.
func (m *Manager) containerSecurity(pod *corev1.Pod, c *corev1.Container, img imageUser) (*runtimeapi.LinuxContainerSecurityContext, error) {
	eff := effectiveSecurityContext(pod, c)
	sc := &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: namespaceOptions(pod),
		Capabilities:     capabilities(eff.Capabilities),
		SelinuxOptions:   selinuxOptions(eff.SELinuxOptions),
		Privileged:       isTrue(eff.Privileged),
		ReadonlyRootfs:   isTrue(eff.ReadOnlyRootFilesystem),
		// The kubelet sets no_new_privs only when asked: allowPrivilegeEscalation nil means the runtime default
		// (allowed), which setuid binaries in ordinary images rely on.
		NoNewPrivs: eff.AllowPrivilegeEscalation != nil && !*eff.AllowPrivilegeEscalation,
	}
	if eff.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *eff.RunAsUser}
	} else {
		// Pinning the image's user here makes the runtime run exactly the user verifyRunAsNonRoot checked.
		if img.uid != nil {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: *img.uid}
		}
		sc.RunAsUsername = img.name
	}
	if eff.RunAsGroup != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *eff.RunAsGroup}
	}
	groups, policy, err := podGroups(pod)
	if err != nil {
		return nil, err
	}
	sc.SupplementalGroups, sc.SupplementalGroupsPolicy = groups, policy
	// A privileged container sees the host's /proc and /sys as they are: that is what privileged means, and
	// containerd drops the masks for it anyway.
	if !sc.Privileged {
		sc.MaskedPaths = maskedPaths(eff.ProcMount)
		sc.ReadonlyPaths = readonlyPaths(eff.ProcMount)
	}
	if sc.Seccomp, err = m.seccompProfile(pod, c); err != nil {
		return nil, err
	}
	if sc.Apparmor, sc.ApparmorProfile, err = appArmorProfile(pod, c); err != nil { //nolint:staticcheck // ApparmorProfile is for runtimes older than the Apparmor field, as the kubelet sends it
		return nil, err
	}
	return sc, nil
}

// sandboxSecurity is the CRI security context of the pod sandbox (the pause container), as the kubelet's
// generatePodSandboxLinuxConfig builds it.
func sandboxSecurity(pod *corev1.Pod) (*runtimeapi.LinuxSandboxSecurityContext, error) {
	sc := &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: namespaceOptions(pod),
		Privileged:       privileged(pod),
		// The pause container always runs under the runtime's default seccomp profile (kubernetes#84623): it
		// needs nothing more, and so the pod's own profile choice never loosens the sandbox.
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		return sc, nil
	}
	if psc.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
	}
	if psc.RunAsGroup != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
	}
	sc.SelinuxOptions = selinuxOptions(psc.SELinuxOptions)
	groups, policy, err := podGroups(pod)
	if err != nil {
		return nil, err
	}
	sc.SupplementalGroups, sc.SupplementalGroupsPolicy = groups, policy
	return sc, nil
}

// podGroups are the supplemental groups of every container of the pod: fsGroup first, then
// supplementalGroups, the kubelet's order; and how they combine with the image's own groups.
func podGroups(pod *corev1.Pod) ([]int64, runtimeapi.SupplementalGroupsPolicy, error) {
	psc := pod.Spec.SecurityContext
	if psc == nil {
		return nil, runtimeapi.SupplementalGroupsPolicy_Merge, nil
	}
	var groups []int64
	if psc.FSGroup != nil {
		// Files the volumes give to fsGroup must be reachable by every container process.
		groups = append(groups, *psc.FSGroup)
	}
	groups = append(groups, psc.SupplementalGroups...)
	policy := runtimeapi.SupplementalGroupsPolicy_Merge
	if p := psc.SupplementalGroupsPolicy; p != nil {
		v, ok := runtimeapi.SupplementalGroupsPolicy_value[string(*p)]
		if !ok {
			return nil, 0, fmt.Errorf("unsupported supplementalGroupsPolicy: %s", *p)
		}
		policy = runtimeapi.SupplementalGroupsPolicy(v)
	}
	return groups, policy, nil
}

func capabilities(caps *corev1.Capabilities) *runtimeapi.Capability {
	if caps == nil {
		return nil
	}
	out := &runtimeapi.Capability{}
	for _, a := range caps.Add {
		out.AddCapabilities = append(out.AddCapabilities, string(a))
	}
	for _, d := range caps.Drop {
		out.DropCapabilities = append(out.DropCapabilities, string(d))
	}
	return out
}

func selinuxOptions(o *corev1.SELinuxOptions) *runtimeapi.SELinuxOption {
	if o == nil {
		return nil
	}
	return &runtimeapi.SELinuxOption{User: o.User, Role: o.Role, Type: o.Type, Level: o.Level}
}
