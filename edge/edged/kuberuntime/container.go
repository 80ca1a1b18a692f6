package kuberuntime

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CPU conversion, as the kubelet does it for cgroup v1 cpu.shares and CFS quota.
const (
	minShares     = 2
	sharesPerCPU  = 1024
	milliPerCPU   = 1000
	quotaPeriodUs = 100000
	minQuotaUs    = 1000
)

func linuxResources(c *corev1.Container) *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{}
	cpuReq := c.Resources.Requests.Cpu().MilliValue()
	cpuLim := c.Resources.Limits.Cpu().MilliValue()
	if cpuReq == 0 && cpuLim > 0 {
		// The API server defaults requests to limits; pods from elsewhere may not have it done.
		cpuReq = cpuLim
	}
	r.CpuShares = max(cpuReq*sharesPerCPU/milliPerCPU, minShares)
	if cpuLim > 0 {
		r.CpuPeriod = quotaPeriodUs
		r.CpuQuota = max(cpuLim*quotaPeriodUs/milliPerCPU, minQuotaUs)
	}
	if mem := c.Resources.Limits.Memory().Value(); mem > 0 {
		r.MemoryLimitInBytes = mem
	}
	return r
}

// containerMounts maps volumeMounts to host paths; a mount of a volume that is not ready fails the container
// (CreateContainerConfigError) rather than starting it without its data. A subPath becomes a bind mount of its
// own, resolved safely inside the volume (subpath.go).
func (m *Manager) containerMounts(pod *corev1.Pod, c *corev1.Container, vols podVolumes, env []*runtimeapi.KeyValue) ([]*runtimeapi.Mount, error) {
	var out []*runtimeapi.Mount
	for i := range c.VolumeMounts {
		vm := &c.VolumeMounts[i]
		if err, failed := vols.errs[vm.Name]; failed {
			return nil, err
		}
		hostPath, ok := vols.paths[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q: no volume of that name in the pod", vm.Name)
		}
		subPath := vm.SubPath
		if vm.SubPathExpr != "" {
			var err error
			if subPath, err = expandSubPathExpr(vm.SubPathExpr, env); err != nil {
				return nil, fmt.Errorf("volumeMount %q: %w", vm.Name, err)
			}
		}
		if subPath != "" {
			src, err := m.subPathSource(pod, c, i, vm.Name, subPath, hostPath)
			if err != nil {
				return nil, fmt.Errorf("volumeMount %q: %w", vm.Name, err)
			}
			hostPath = src
		}
		mount := &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: hostPath, Readonly: vm.ReadOnly || vols.readOnly[vm.Name]}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationHostToContainer:
				mount.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			case corev1.MountPropagationBidirectional:
				mount.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			}
		}
		out = append(out, mount)
	}
	return out, nil
}

// containerSpec is what a start needs beyond the pod: where to run and what to create it from.
type containerSpec struct {
	pod          *corev1.Pod
	c            *corev1.Container
	kind         string // containerTypeInit or containerTypeMain
	sandboxID    string
	sandboxCfg   *runtimeapi.PodSandboxConfig
	imageID      string
	restartCount int32
	env          []*runtimeapi.KeyValue
	mounts       []*runtimeapi.Mount
	// user is the image's user, which the container runs as unless the pod names one.
	user imageUser
}

func (m *Manager) containerConfig(s *containerSpec) (*runtimeapi.ContainerConfig, error) {
	vars := make(map[string]string, len(s.env))
	for _, kv := range s.env {
		vars[kv.Key] = string(kv.Value)
	}
	expandAll := func(in []string) []string {
		if in == nil {
			return nil
		}
		out := make([]string, len(in))
		for i, v := range in {
			out[i] = expand(v, vars)
		}
		return out
	}
	security, err := m.containerSecurity(s.pod, s.c, s.user)
	if err != nil {
		return nil, fmt.Errorf("security context: %w", err)
	}
	// The log directory is ours to create, as the kubelet does; containerd only opens the file.
	logRel := filepath.Join(s.c.Name, strconv.Itoa(int(s.restartCount))+".log")
	if err := os.MkdirAll(filepath.Join(s.sandboxCfg.LogDirectory, s.c.Name), 0o755); err != nil {
		return nil, fmt.Errorf("container log directory: %w", err)
	}
	return &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: s.c.Name, Attempt: uint32(s.restartCount)},
		Image:      &runtimeapi.ImageSpec{Image: s.imageID, UserSpecifiedImage: s.c.Image},
		Command:    expandAll(s.c.Command),
		Args:       expandAll(s.c.Args),
		WorkingDir: s.c.WorkingDir,
		Envs:       s.env,
		Mounts:     s.mounts,
		Labels:     containerLabels(s.pod, s.c),
		Annotations: map[string]string{
			AnnotationContainerHash: containerHash(s.c),
			AnnotationRestartCount:  strconv.Itoa(int(s.restartCount)),
			AnnotationContainerType: s.kind,
		},
		LogPath:   logRel,
		Stdin:     s.c.Stdin,
		StdinOnce: s.c.StdinOnce,
		Tty:       s.c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       linuxResources(s.c),
			SecurityContext: security,
		},
	}, nil
}

func (m *Manager) createAndStart(ctx context.Context, s *containerSpec) (string, error) {
	cfg, err := m.containerConfig(s)
	if err != nil {
		return "", &ContainerError{Reason: ReasonCreateConfigError, Message: err.Error(), Err: err}
	}
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: s.sandboxID, Config: cfg, SandboxConfig: s.sandboxCfg,
	})
	if err != nil {
		return "", &ContainerError{Reason: ReasonCreateContainerErr, Message: err.Error(), Err: err}
	}
	id := resp.GetContainerId()
	if err := m.startContainer(ctx, id); err != nil {
		return id, err
	}
	return id, nil
}

func (m *Manager) startContainer(ctx context.Context, id string) error {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	if _, err := m.rt.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return &ContainerError{Reason: ReasonRunContainerError, Message: err.Error(), Err: err}
	}
	return nil
}

// stopContainer gives the container grace to exit after SIGTERM before the runtime kills it.
func (m *Manager) stopContainer(ctx context.Context, id string, grace time.Duration) error {
	secs := int64(math.Ceil(max(grace, 0).Seconds()))
	cctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout+time.Duration(secs)*time.Second)
	defer cancel()
	_, err := m.rt.StopContainer(cctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: secs})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("stop container %s (grace %ds): %w", id, secs, err)
	}
	return nil
}

func (m *Manager) removeContainer(ctx context.Context, id string) error {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	if _, err := m.rt.RemoveContainer(cctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

func podGracePeriod(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}
