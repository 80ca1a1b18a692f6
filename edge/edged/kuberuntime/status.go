package kuberuntime

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// buildStatus turns what the runtime shows into the pod status the API server should see, following the
// kubelet's rules for phase, conditions and container states.
func (m *Manager) buildStatus(pod *corev1.Pod, rt *podRuntime, waiting map[string]*ContainerError, rtName string) corev1.PodStatus {
	now := metav1.NewTime(m.now())
	st := corev1.PodStatus{HostIP: m.opts.NodeIP, QOSClass: pod.Status.QOSClass}
	if st.QOSClass == "" {
		st.QOSClass = qosClass(pod)
	}
	if m.opts.NodeIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: m.opts.NodeIP}}
	}
	podIP := rt.sandboxIP
	if pod.Spec.HostNetwork {
		podIP = m.opts.NodeIP
	}
	if podIP == "" {
		// A stopped sandbox has no address any more; the pod keeps the one it had, as with the kubelet.
		podIP = pod.Status.PodIP
	}
	if podIP != "" {
		st.PodIP = podIP
		st.PodIPs = []corev1.PodIP{{IP: podIP}}
	}
	switch {
	case pod.Status.StartTime != nil:
		st.StartTime = pod.Status.StartTime.DeepCopy()
	case len(rt.sandboxes) > 0:
		t := metav1.NewTime(time.Unix(0, rt.sandboxes[len(rt.sandboxes)-1].GetCreatedAt()))
		st.StartTime = &t
	default:
		st.StartTime = &now
	}

	sb := rt.newestSandbox()
	sandboxID := sb.GetId()
	initialized := true
	var incomplete []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(c, rt.byName(c.Name), waiting[c.Name], rtName, ReasonPodInitializing, true)
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		r := rt.latest(c.Name)
		if r == nil || r.sandboxID() != sandboxID || !r.exited() || r.exitCode() != 0 {
			initialized = false
			incomplete = append(incomplete, c.Name)
		}
	}
	defReason := ReasonContainerCreating
	if !initialized {
		defReason = ReasonPodInitializing
	}
	var unready []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := containerStatus(c, rt.byName(c.Name), waiting[c.Name], rtName, defReason, false)
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.Phase = podPhase(pod.Spec.RestartPolicy, st.InitContainerStatuses, st.ContainerStatuses, initialized)
	if isTerminal(pod.Status.Phase) {
		// Terminal phases are final, whatever the runtime shows now.
		st.Phase = pod.Status.Phase
	}

	sandboxReady := sb != nil && sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
		if !ok {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, reason, msg
		}
		// Keep the transition time while the status holds, so unchanged pods produce unchanged statuses.
		for _, old := range pod.Status.Conditions {
			if old.Type == t && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	ready := len(unready) == 0
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	if isTerminal(st.Phase) {
		ready, readyReason = false, "PodCompleted"
		readyMsg = ""
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sandboxReady, "", ""),
		cond(corev1.PodInitialized, initialized, "ContainersNotInitialized",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))),
		cond(corev1.ContainersReady, ready, readyReason, readyMsg),
		cond(corev1.PodReady, ready, readyReason, readyMsg),
		cond(corev1.PodScheduled, true, "", ""),
	}
	if isTerminal(st.Phase) && len(incomplete) == 0 {
		// The kubelet reports Initialized with reason PodCompleted once the pod is done.
		st.Conditions[1].Reason = "PodCompleted"
	}
	return st
}

// containerStatus reports the newest instance (recs[0]) as the state and the one before as lastState.
// A pending restart or failure (w) turns a terminated state into Waiting, with the termination as lastState.
func containerStatus(c *corev1.Container, recs []*containerRecord, w *ContainerError, rtName, defReason string, isInit bool) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	started := false
	cs.Started = &started
	waitingState := func(reason string) *corev1.ContainerStateWaiting {
		if w != nil {
			return &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		}
		return &corev1.ContainerStateWaiting{Reason: reason}
	}
	if len(recs) == 0 {
		cs.State.Waiting = waitingState(defReason)
		return cs
	}
	cur := recs[0]
	cs.ContainerID = rtName + "://" + cur.id()
	cs.ImageID = cur.status.GetImageRef()
	if cs.ImageID == "" {
		cs.ImageID = cur.c.GetImageRef()
	}
	cs.RestartCount = cur.restartCount()
	switch cur.state() {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		started = true
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: nanoTime(cur.status.GetStartedAt())}
		// No probes: a running regular container is ready. Init containers are ready once they succeed.
		cs.Ready = !isInit
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		cs.State.Waiting = waitingState(ReasonContainerCreating)
	default:
		term := terminated(cur, rtName)
		if w != nil {
			cs.State.Waiting = waitingState("")
			cs.LastTerminationState.Terminated = term
		} else {
			cs.State.Terminated = term
			cs.Ready = isInit && term.ExitCode == 0
		}
	}
	if cs.LastTerminationState.Terminated == nil && len(recs) > 1 && recs[1].exited() {
		cs.LastTerminationState.Terminated = terminated(recs[1], rtName)
	}
	return cs
}

func terminated(r *containerRecord, rtName string) *corev1.ContainerStateTerminated {
	st := r.status
	t := &corev1.ContainerStateTerminated{
		ExitCode:    r.exitCode(),
		Reason:      st.GetReason(),
		Message:     st.GetMessage(),
		StartedAt:   nanoTime(st.GetStartedAt()),
		FinishedAt:  nanoTime(st.GetFinishedAt()),
		ContainerID: rtName + "://" + r.id(),
	}
	if r.state() == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
		t.Reason = "ContainerStatusUnknown"
		t.Message = "The container could not be located when the pod was terminated"
	}
	if t.Reason == "" {
		t.Reason = "Completed"
		if t.ExitCode != 0 {
			t.Reason = "Error"
		}
	}
	return t
}

func nanoTime(ns int64) metav1.Time {
	if ns <= 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, ns))
}

// podPhase is the kubelet's getPhase: waiting containers keep a pod Pending; any running one makes it Running;
// when all have stopped, the restart policy decides between Running (they will restart), Succeeded and Failed.
func podPhase(policy corev1.RestartPolicy, inits, regular []corev1.ContainerStatus, initialized bool) corev1.PodPhase {
	if !initialized {
		for _, s := range inits {
			t := s.State.Terminated
			if t == nil && s.State.Waiting != nil {
				t = s.LastTerminationState.Terminated
			}
			if t != nil && t.ExitCode != 0 && policy == corev1.RestartPolicyNever {
				return corev1.PodFailed
			}
		}
		return corev1.PodPending
	}
	var waiting, running, stopped, succeeded int
	for _, s := range regular {
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.LastTerminationState.Terminated != nil:
			// Waiting to restart after a run.
			stopped++
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		switch {
		case policy == corev1.RestartPolicyAlways:
			return corev1.PodRunning
		case stopped == succeeded:
			return corev1.PodSucceeded
		case policy == corev1.RestartPolicyNever:
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// qosClass is the API server's classification, for pods that arrive without one.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	set, guaranteed := false, true
	for _, c := range allContainers(pod) {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if hasReq || hasLim {
				set = true
			}
			if !hasLim || (hasReq && req.Cmp(lim) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !set:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}
