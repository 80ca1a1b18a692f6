package kuberuntime

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

func podKey(pod *corev1.Pod) string {
	return pod.Namespace + "/" + pod.Name
}

// podLogDir is the kubelet's layout, which log collectors expect.
func (m *Manager) podLogDir(namespace, name, uid string) string {
	return filepath.Join(m.opts.LogDir, namespace+"_"+name+"_"+uid)
}

func (m *Manager) podCgroup(pod *corev1.Pod) string {
	if m.opts.CgroupParent == "" {
		return ""
	}
	return path.Join(m.opts.CgroupParent, "pod"+string(pod.UID))
}

func namespaceOptions(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	ns := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
	if pod.Spec.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostPID {
		ns.Pid = runtimeapi.NamespaceMode_NODE
	} else if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	if pod.Spec.HostIPC {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	return ns
}

// privileged: containerd refuses a privileged container in an unprivileged sandbox, so the sandbox is
// privileged when any container asks to be.
func privileged(pod *corev1.Pod) bool {
	for _, c := range allContainers(pod) {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			return true
		}
	}
	return false
}

func allContainers(pod *corev1.Pod) []*corev1.Container {
	out := make([]*corev1.Container, 0, len(pod.Spec.InitContainers)+len(pod.Spec.Containers))
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// sandboxConfig is derived from the pod alone, so a restarted edgecore rebuilds the same config for
// CreateContainer without having stored it.
func (m *Manager) sandboxConfig(pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	security, err := sandboxSecurity(pod)
	if err != nil {
		return nil, fmt.Errorf("pod %s security context: %w", podKey(pod), err)
	}
	annotations := make(map[string]string, len(pod.Annotations))
	for k, v := range pod.Annotations {
		annotations[k] = v
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt,
		},
		LogDirectory: m.podLogDir(pod.Namespace, pod.Name, string(pod.UID)),
		Labels:       podLabels(pod),
		Annotations:  annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    m.podCgroup(pod),
			SecurityContext: security,
		},
	}
	// runc cannot set a hostname in the host's UTS namespace, which containerd shares for NODE networking
	// ("unable to set hostname without a private UTS namespace"); the kubelet never sets one there either.
	if !pod.Spec.HostNetwork {
		cfg.Hostname = podHostname(pod)
		cfg.PortMappings = portMappings(pod)
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		if len(psc.Sysctls) > 0 {
			cfg.Linux.Sysctls = make(map[string]string, len(psc.Sysctls))
			for _, s := range psc.Sysctls {
				cfg.Linux.Sysctls[s.Name] = s.Value
			}
		}
	}
	// Without a DNS config containerd gives the sandbox the host's resolv.conf, which is what an edge node
	// without cluster DNS needs; an explicit pod dnsConfig still wins.
	if dc := pod.Spec.DNSConfig; dc != nil || pod.Spec.DNSPolicy == corev1.DNSNone {
		cfg.DnsConfig = &runtimeapi.DNSConfig{}
		if dc != nil {
			cfg.DnsConfig.Servers = dc.Nameservers
			cfg.DnsConfig.Searches = dc.Searches
			for _, o := range dc.Options {
				opt := o.Name
				if o.Value != nil {
					opt += ":" + *o.Value
				}
				cfg.DnsConfig.Options = append(cfg.DnsConfig.Options, opt)
			}
		}
	}
	return cfg, nil
}

func podHostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

func portMappings(pod *corev1.Pod) []*runtimeapi.PortMapping {
	var out []*runtimeapi.PortMapping
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := runtimeapi.Protocol_TCP
			switch p.Protocol {
			case corev1.ProtocolUDP:
				proto = runtimeapi.Protocol_UDP
			case corev1.ProtocolSCTP:
				proto = runtimeapi.Protocol_SCTP
			}
			out = append(out, &runtimeapi.PortMapping{
				Protocol: proto, ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP,
			})
		}
	}
	return out
}

// createSandbox runs a new sandbox for the pod and returns its ID and pod network address.
func (m *Manager) createSandbox(ctx context.Context, pod *corev1.Pod, cfg *runtimeapi.PodSandboxConfig) (string, string, error) {
	if !pod.Spec.HostNetwork {
		if err := m.networkReady(ctx); err != nil {
			return "", "", err
		}
	}
	if m.opts.PodSandboxImage != "" {
		if _, err := m.ensureImagePresent(ctx, m.opts.PodSandboxImage, corev1.PullIfNotPresent, cfg); err != nil {
			return "", "", fmt.Errorf("sandbox image %s (must match containerd's sandbox_image): %w", m.opts.PodSandboxImage, err)
		}
	}
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		return "", "", fmt.Errorf("pod log directory: %w", err)
	}
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: m.opts.RuntimeHandler})
	if err != nil {
		return "", "", fmt.Errorf("RunPodSandbox (attempt %d): %w", cfg.Metadata.Attempt, err)
	}
	id := resp.GetPodSandboxId()
	klog.V(2).InfoS("Created pod sandbox", "pod", klog.KObj(pod), "sandbox", id, "attempt", cfg.Metadata.Attempt,
		"hostNetwork", pod.Spec.HostNetwork)
	if pod.Spec.HostNetwork {
		return id, "", nil
	}
	st, err := m.sandboxStatus(ctx, id)
	if err != nil {
		return id, "", err
	}
	return id, st.GetNetwork().GetIp(), nil
}

// networkReady fails early and clearly when there is no pod network: containerd would otherwise fail deep in
// CNI setup with a message that does not say what to do.
func (m *Manager) networkReady(ctx context.Context) error {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.Status(cctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return fmt.Errorf("runtime status: %w", err)
	}
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.NetworkReady && !c.GetStatus() {
			return fmt.Errorf("pod network is not ready (%s: %s); only hostNetwork pods can run until a CNI plugin is configured",
				c.GetReason(), c.GetMessage())
		}
	}
	return nil
}

func (m *Manager) stopSandbox(ctx context.Context, id string) error {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	if _, err := m.rt.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil && !isNotFound(err) {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	return nil
}

func (m *Manager) removeSandbox(ctx context.Context, id string) error {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	if _, err := m.rt.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	return nil
}
