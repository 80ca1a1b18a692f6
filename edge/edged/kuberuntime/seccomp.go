package kuberuntime

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// seccompProfile resolves a container's seccomp profile as the kubelet does: the container's seccompProfile,
// else the pod's, else the node default (seccompDefault: RuntimeDefault; otherwise Unconfined, the kubelet's
// default too). It is always sent explicitly, so the runtime never picks a profile of its own.
func (m *Manager) seccompProfile(pod *corev1.Pod, c *corev1.Container) (*runtimeapi.SecurityProfile, error) {
	if csc := c.SecurityContext; csc != nil && csc.SeccompProfile != nil {
		return m.fieldSeccompProfile(csc.SeccompProfile, "container "+c.Name)
	}
	if psc := pod.Spec.SecurityContext; psc != nil && psc.SeccompProfile != nil {
		return m.fieldSeccompProfile(psc.SeccompProfile, "pod")
	}
	if m.opts.SeccompDefault {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
	}
	return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
}

// fieldSeccompProfile converts one seccompProfile field; where names it in errors. A Localhost profile is a
// file under the seccomp profile root ({rootDirectory}/seccomp by default, as the kubelet's), which the
// runtime reads; a name reaching outside that root is refused rather than handed to the runtime.
func (m *Manager) fieldSeccompProfile(p *corev1.SeccompProfile, where string) (*runtimeapi.SecurityProfile, error) {
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
	case corev1.SeccompProfileTypeUnconfined:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
	case corev1.SeccompProfileTypeLocalhost:
		if p.LocalhostProfile == nil || *p.LocalhostProfile == "" {
			return nil, fmt.Errorf("%s seccompProfile: localhostProfile must be set if seccompProfile type is Localhost", where)
		}
		name := *p.LocalhostProfile
		if filepath.IsAbs(name) || slices.Contains(strings.Split(filepath.ToSlash(name), "/"), "..") {
			return nil, fmt.Errorf("%s seccompProfile: localhostProfile %q must be a relative path without '..'", where, name)
		}
		return &runtimeapi.SecurityProfile{
			ProfileType:  runtimeapi.SecurityProfile_Localhost,
			LocalhostRef: filepath.Join(m.opts.SeccompProfileRoot, name),
		}, nil
	}
	// The kubelet runs an unknown type unconfined; a typo must not silently remove the sandboxing asked for.
	return nil, fmt.Errorf("%s seccompProfile: unknown type %q (want RuntimeDefault, Localhost or Unconfined)", where, p.Type)
}
