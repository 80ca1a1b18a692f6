package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// SyncPod makes the runtime match the pod and returns the pod's status. Problems of single containers (a
// missing image, a missing ConfigMap key, a back-off) are returned as *ContainerError values joined into the
// error, and shown in the containers' Waiting states; they never stop the other containers from syncing.
func (m *Manager) SyncPod(ctx context.Context, pod *corev1.Pod, objects ObjectGetter) (corev1.PodStatus, error) {
	unlock := m.locks.lock(pod.UID)
	defer unlock()
	m.markSynced(pod.UID, true)

	rtName, err := m.runtimeName(ctx)
	if err != nil {
		return *pod.Status.DeepCopy(), fmt.Errorf("sync pod %s: %w", podKey(pod), err)
	}
	withIP := !pod.Spec.HostNetwork
	state, err := m.podState(ctx, pod.UID, withIP)
	if err != nil {
		return *pod.Status.DeepCopy(), fmt.Errorf("sync pod %s: %w", podKey(pod), err)
	}
	s := &podSync{m: m, pod: pod, objs: newObjectCache(objects), rt: state, waiting: map[string]*ContainerError{}, killed: map[string]bool{}}

	terminal := isTerminal(pod.Status.Phase)
	switch {
	case terminal:
		// A pod the API server already sees as finished never runs again; stop what may still run.
		s.killRunning(ctx)
	case pod.DeletionTimestamp != nil:
		// Edged calls KillPod; starting anything now would only prolong the deletion.
	default:
		if reason, err := m.admissionError(pod, state); err != nil {
			return m.rejectedStatus(pod, state, rtName, reason, err), nil
		}
		s.run(ctx)
	}
	if s.changed || len(s.killed) > 0 {
		if s.rt, err = m.podState(ctx, pod.UID, withIP); err != nil {
			return *pod.Status.DeepCopy(), errors.Join(append(s.errs, fmt.Errorf("sync pod %s: %w", podKey(pod), err))...)
		}
	}
	if terminal && len(s.rt.containers) == 0 {
		// Nothing left to read a status from (garbage collected): the last reported status stands.
		return *pod.Status.DeepCopy(), errors.Join(s.errs...)
	}
	status := m.buildStatus(pod, s.rt, s.waiting, rtName)
	if isTerminal(status.Phase) {
		// The pod is done: release the sandbox (pause process, pod IP) but keep the containers for logs.
		if sb := s.rt.newestSandbox(); sb != nil && sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			if err := m.stopSandbox(ctx, sb.GetId()); err != nil {
				s.errs = append(s.errs, fmt.Errorf("pod %s finished: %w", podKey(pod), err))
			} else {
				sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
				status = m.buildStatus(pod, s.rt, s.waiting, rtName)
			}
		}
	}
	return status, errors.Join(s.errs...)
}

func isTerminal(p corev1.PodPhase) bool {
	return p == corev1.PodSucceeded || p == corev1.PodFailed
}

func shouldRestart(policy corev1.RestartPolicy, exitCode int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	}
	return true
}

func crashKey(pod *corev1.Pod, container string) string {
	return string(pod.UID) + "/crash/" + container
}

// podSync is one SyncPod pass.
type podSync struct {
	m       *Manager
	pod     *corev1.Pod
	objs    *objectCache
	rt      *podRuntime
	waiting map[string]*ContainerError
	errs    []error
	changed bool
	// killed holds containers this pass stopped because their sandbox was gone.
	killed map[string]bool

	sandboxID  string
	sandboxCfg *runtimeapi.PodSandboxConfig
	ips        podIPs
	vols       podVolumes
}

func (s *podSync) fail(c *corev1.Container, err error) {
	var ce *ContainerError
	if !errors.As(err, &ce) {
		ce = &ContainerError{Reason: ReasonCreateContainerErr, Message: err.Error(), Err: err}
	}
	ce.Pod, ce.Container = podKey(s.pod), c.Name
	s.waiting[c.Name] = ce
	s.errs = append(s.errs, ce)
}

func (s *podSync) run(ctx context.Context) {
	pod := s.pod
	s.ips = podIPs{host: s.m.opts.NodeIP, pod: s.rt.sandboxIP}
	if pod.Spec.HostNetwork {
		s.ips.pod = s.m.opts.NodeIP
	}
	sb := s.rt.newestSandbox()
	if sb != nil && sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
		cfg, err := s.m.sandboxConfig(pod, sb.GetMetadata().GetAttempt())
		if err != nil {
			s.sandboxFailed(err)
			return
		}
		s.sandboxID, s.sandboxCfg = sb.GetId(), cfg
	} else {
		if !s.needsSandbox() {
			return
		}
		// Containers can outlive a sandbox that was stopped underneath them; they restart in the new one.
		s.killRunning(ctx)
		attempt := uint32(0)
		if sb != nil {
			attempt = sb.GetMetadata().GetAttempt() + 1
		}
		cfg, err := s.m.sandboxConfig(pod, attempt)
		if err != nil {
			s.sandboxFailed(err)
			return
		}
		id, ip, err := s.m.createSandbox(ctx, pod, cfg)
		if err != nil {
			s.sandboxFailed(err)
			return
		}
		s.changed = true
		s.sandboxID, s.sandboxCfg = id, cfg
		if !pod.Spec.HostNetwork {
			s.ips.pod = ip
		}
	}
	// After the sandbox: downward API files may carry the pod IP.
	s.vols = s.m.syncVolumes(ctx, pod, s.objs, s.ips)
	for _, name := range slices.Sorted(maps.Keys(s.vols.errs)) {
		s.errs = append(s.errs, fmt.Errorf("pod %s: %w", podKey(pod), s.vols.errs[name]))
	}
	if !s.syncInitContainers(ctx) {
		return
	}
	for i := range pod.Spec.Containers {
		s.syncContainer(ctx, &pod.Spec.Containers[i])
	}
}

// needsSandbox decides whether a pod without a ready sandbox gets a new one: not when it has finished for
// good, or a completed run-once pod would run again (the kubelet's rule).
func (s *podSync) needsSandbox() bool {
	if len(s.rt.containers) == 0 {
		return true
	}
	policy := s.pod.Spec.RestartPolicy
	if policy == corev1.RestartPolicyNever {
		return false
	}
	for _, c := range s.pod.Spec.Containers {
		r := s.rt.latest(c.Name)
		if r == nil || !r.exited() || shouldRestart(policy, r.exitCode()) {
			return true
		}
	}
	return false
}

func (s *podSync) sandboxFailed(err error) {
	err = fmt.Errorf("failed to create pod sandbox: %w", err)
	klog.ErrorS(err, "Pod cannot start", "pod", klog.KObj(s.pod))
	for _, c := range allContainers(s.pod) {
		if r := s.rt.latest(c.Name); r != nil && r.exited() && !shouldRestart(s.pod.Spec.RestartPolicy, r.exitCode()) {
			continue
		}
		ce := &ContainerError{Pod: podKey(s.pod), Container: c.Name, Reason: ReasonContainerCreating, Message: err.Error(), Err: err}
		s.waiting[c.Name] = ce
	}
	s.errs = append(s.errs, fmt.Errorf("pod %s: %w", podKey(s.pod), err))
}

func (s *podSync) killRunning(ctx context.Context) {
	grace := podGracePeriod(s.pod)
	for _, r := range s.rt.containers {
		if r.exited() {
			continue
		}
		if err := s.m.stopContainer(ctx, r.id(), grace); err != nil {
			s.errs = append(s.errs, fmt.Errorf("pod %s container %s: %w", podKey(s.pod), r.name(), err))
			continue
		}
		s.killed[r.id()] = true
	}
}

// syncInitContainers runs init containers one at a time, in order, in the current sandbox; it reports whether
// all have succeeded there, so the regular containers may start.
func (s *podSync) syncInitContainers(ctx context.Context) bool {
	for i := range s.pod.Spec.InitContainers {
		c := &s.pod.Spec.InitContainers[i]
		prev := s.rt.latest(c.Name)
		if prev == nil || prev.sandboxID() != s.sandboxID {
			// Not run in this sandbox yet (a new sandbox reruns them all, as with the kubelet).
			s.start(ctx, c, containerTypeInit, prev, false)
			return false
		}
		switch prev.state() {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			return false
		case runtimeapi.ContainerState_CONTAINER_CREATED:
			s.startCreated(ctx, c, containerTypeInit, prev)
			return false
		}
		if prev.exitCode() == 0 {
			continue
		}
		if s.pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			s.start(ctx, c, containerTypeInit, prev, true)
		}
		return false
	}
	return true
}

func (s *podSync) syncContainer(ctx context.Context, c *corev1.Container) {
	prev := s.rt.latest(c.Name)
	if prev == nil {
		s.start(ctx, c, containerTypeMain, nil, false)
		return
	}
	inSandbox := prev.sandboxID() == s.sandboxID
	switch {
	case inSandbox && prev.state() == runtimeapi.ContainerState_CONTAINER_RUNNING:
		if prev.hash() == containerHash(c) {
			return
		}
		klog.InfoS("Container spec changed; replacing the container", "pod", klog.KObj(s.pod), "container", c.Name,
			"containerID", prev.id())
		if err := s.m.stopContainer(ctx, prev.id(), podGracePeriod(s.pod)); err != nil {
			s.fail(c, &ContainerError{Reason: ReasonCreateContainerErr, Message: "stop the outdated container: " + err.Error(), Err: err})
			return
		}
		s.changed = true
		// A spec change is not a crash: the new container starts now and the back-off starts over.
		s.m.crash.forget(crashKey(s.pod, c.Name))
		s.start(ctx, c, containerTypeMain, prev, false)
	case inSandbox && prev.state() == runtimeapi.ContainerState_CONTAINER_CREATED:
		s.startCreated(ctx, c, containerTypeMain, prev)
	case !prev.exited() || s.killed[prev.id()]:
		// Left behind in an older sandbox: it is dead with that sandbox, whatever the runtime last said.
		s.start(ctx, c, containerTypeMain, prev, false)
	case shouldRestart(s.pod.Spec.RestartPolicy, prev.exitCode()):
		changed := prev.hash() != containerHash(c)
		if changed {
			// A new spec is the usual fix for a crash loop: try it now.
			s.m.crash.forget(crashKey(s.pod, c.Name))
		}
		s.start(ctx, c, containerTypeMain, prev, !changed)
	}
}

// startCreated starts a container that was created but never started (edgecore stopped in between), unless
// its spec has changed since.
func (s *podSync) startCreated(ctx context.Context, c *corev1.Container, kind string, prev *containerRecord) {
	if prev.hash() != containerHash(c) {
		if err := s.m.removeContainer(ctx, prev.id()); err != nil {
			s.fail(c, err)
			return
		}
		s.changed = true
		s.start(ctx, c, kind, prev, false)
		return
	}
	s.changed = true
	if err := s.m.startContainer(ctx, prev.id()); err != nil {
		s.fail(c, err)
	}
}

// start creates and starts a new instance of c. prev is the instance it replaces, if any: it sets the restart
// count and, with backOff, the crash back-off.
func (s *podSync) start(ctx context.Context, c *corev1.Container, kind string, prev *containerRecord, backOff bool) {
	pod := s.pod
	restartCount := int32(0)
	if prev != nil {
		restartCount = prev.restartCount() + 1
	}
	if backOff {
		key, finished := crashKey(pod, c.Name), prev.finishedAt()
		if left, delay := s.m.crash.remaining(key, finished, s.m.now()); left > 0 {
			s.fail(c, &ContainerError{Reason: ReasonCrashLoopBackOff, RetryAfter: left,
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, c.Name, pod.Name, pod.Namespace, pod.UID)})
			return
		}
		s.m.crash.next(key, finished)
	}
	imageID, err := s.m.ensureImage(ctx, pod, c, s.sandboxCfg)
	if err != nil {
		var ce *ContainerError
		if !errors.As(err, &ce) {
			err = &ContainerError{Reason: "ImageInspectError", Message: err.Error(), Err: err}
		}
		s.fail(c, err)
		return
	}
	// Before anything is mounted: a container that must not run as root never gets that far.
	user, err := s.m.imageUser(ctx, imageID)
	if err != nil {
		s.fail(c, &ContainerError{Reason: ReasonCreateConfigError, Message: err.Error(), Err: err})
		return
	}
	if err := verifyRunAsNonRoot(pod, c, user); err != nil {
		s.fail(c, &ContainerError{Reason: ReasonCreateConfigError, Message: err.Error(), Err: err})
		return
	}
	// The environment first: subPathExpr is expanded with it.
	env, err := makeEnv(ctx, pod, c, s.objs, s.ips, s.m.opts.NodeAllocatable)
	if err != nil {
		s.fail(c, &ContainerError{Reason: ReasonCreateConfigError, Message: err.Error(), Err: err})
		return
	}
	mounts, err := s.m.containerMounts(pod, c, s.vols, env)
	if err != nil {
		s.fail(c, &ContainerError{Reason: ReasonCreateConfigError, Message: err.Error(), Err: err})
		return
	}
	id, err := s.m.createAndStart(ctx, &containerSpec{
		pod: pod, c: c, kind: kind, sandboxID: s.sandboxID, sandboxCfg: s.sandboxCfg, imageID: imageID,
		restartCount: restartCount, env: env, mounts: mounts, user: user,
	})
	if id != "" {
		s.changed = true
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	klog.V(2).InfoS("Started container", "pod", klog.KObj(pod), "container", c.Name, "containerID", id,
		"restartCount", restartCount)
}
