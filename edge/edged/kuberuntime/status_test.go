package kuberuntime

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodPhase(t *testing.T) {
	running := corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	waiting := corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	term := func(code int32) corev1.ContainerStatus {
		return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
	}
	backOff := func(code int32) corev1.ContainerStatus {
		return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: ReasonCrashLoopBackOff}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
	}
	const (
		always    = corev1.RestartPolicyAlways
		onFailure = corev1.RestartPolicyOnFailure
		never     = corev1.RestartPolicyNever
	)
	tests := []struct {
		name        string
		policy      corev1.RestartPolicy
		inits       []corev1.ContainerStatus
		regular     []corev1.ContainerStatus
		initialized bool
		want        corev1.PodPhase
	}{
		{"all running", always, nil, []corev1.ContainerStatus{running, running}, true, corev1.PodRunning},
		{"one waiting", always, nil, []corev1.ContainerStatus{running, waiting}, true, corev1.PodPending},
		{"crash loop is running", always, nil, []corev1.ContainerStatus{backOff(1)}, true, corev1.PodRunning},
		{"always, all exited", always, nil, []corev1.ContainerStatus{term(0)}, true, corev1.PodRunning},
		{"never, all succeeded", never, nil, []corev1.ContainerStatus{term(0), term(0)}, true, corev1.PodSucceeded},
		{"never, one failed", never, nil, []corev1.ContainerStatus{term(0), term(2)}, true, corev1.PodFailed},
		{"never, one still running", never, nil, []corev1.ContainerStatus{term(1), running}, true, corev1.PodRunning},
		{"onfailure, succeeded", onFailure, nil, []corev1.ContainerStatus{term(0)}, true, corev1.PodSucceeded},
		{"onfailure, failed restarts", onFailure, nil, []corev1.ContainerStatus{term(1)}, true, corev1.PodRunning},
		{"init running", always, []corev1.ContainerStatus{running}, []corev1.ContainerStatus{waiting}, false, corev1.PodPending},
		{"init failed, never", never, []corev1.ContainerStatus{term(1)}, []corev1.ContainerStatus{waiting}, false, corev1.PodFailed},
		{"init failed, backing off", onFailure, []corev1.ContainerStatus{backOff(1)}, []corev1.ContainerStatus{waiting}, false, corev1.PodPending},
		{"nothing yet", always, nil, []corev1.ContainerStatus{waiting}, true, corev1.PodPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := podPhase(tc.policy, tc.inits, tc.regular, tc.initialized); got != tc.want {
				t.Errorf("podPhase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestContainerStatusMapping(t *testing.T) {
	at := func(s int) int64 { return time.Date(2026, 3, 1, 12, 0, s, 0, time.UTC).UnixNano() }
	rec := func(id string, state runtimeapi.ContainerState, code int32, reason string, restarts string) *containerRecord {
		return &containerRecord{
			c: &runtimeapi.Container{Id: id, State: state, ImageRef: "sha256:abc",
				Labels: map[string]string{LabelContainerName: "app"}, Annotations: map[string]string{AnnotationRestartCount: restarts}},
			status: &runtimeapi.ContainerStatus{Id: id, State: state, ExitCode: code, Reason: reason, ImageRef: "sha256:abc",
				StartedAt: at(1), FinishedAt: map[bool]int64{true: at(5)}[state == runtimeapi.ContainerState_CONTAINER_EXITED]},
		}
	}
	c := &corev1.Container{Name: "app", Image: appImage}
	tests := []struct {
		name      string
		recs      []*containerRecord
		w         *ContainerError
		isInit    bool
		check     func(t *testing.T, cs corev1.ContainerStatus)
		wantReady bool
	}{{
		name: "none yet",
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			wantWaiting(t, cs, ReasonContainerCreating, "")
		},
	}, {
		name:      "running with previous exit",
		recs:      []*containerRecord{rec("c2", runtimeapi.ContainerState_CONTAINER_RUNNING, 0, "", "1"), rec("c1", runtimeapi.ContainerState_CONTAINER_EXITED, 137, "OOMKilled", "0")},
		wantReady: true,
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			if cs.State.Running == nil || !cs.State.Running.StartedAt.Time.Equal(ptrTime(at(1))) || cs.RestartCount != 1 ||
				cs.ContainerID != "containerd://c2" || cs.ImageID != "sha256:abc" || cs.Image != appImage || !*cs.Started {
				t.Errorf("%+v", cs)
			}
			if lt := cs.LastTerminationState.Terminated; lt == nil || lt.Reason != "OOMKilled" || lt.ExitCode != 137 || lt.ContainerID != "containerd://c1" {
				t.Errorf("last state %+v", cs.LastTerminationState)
			}
		},
	}, {
		name: "exited without reason",
		recs: []*containerRecord{rec("c1", runtimeapi.ContainerState_CONTAINER_EXITED, 3, "", "0")},
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			if tm := cs.State.Terminated; tm == nil || tm.Reason != "Error" || tm.ExitCode != 3 || !tm.FinishedAt.Time.Equal(ptrTime(at(5))) {
				t.Errorf("%+v", cs.State)
			}
		},
	}, {
		name: "back-off turns terminated into waiting",
		recs: []*containerRecord{rec("c1", runtimeapi.ContainerState_CONTAINER_EXITED, 1, "Error", "4")},
		w:    &ContainerError{Reason: ReasonCrashLoopBackOff, Message: "back-off 40s"},
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			wantWaiting(t, cs, ReasonCrashLoopBackOff, "back-off 40s")
			if cs.LastTerminationState.Terminated == nil || cs.RestartCount != 4 {
				t.Errorf("%+v", cs)
			}
		},
	}, {
		name:      "succeeded init container is ready",
		recs:      []*containerRecord{rec("c1", runtimeapi.ContainerState_CONTAINER_EXITED, 0, "Completed", "0")},
		isInit:    true,
		wantReady: true,
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			if cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" {
				t.Errorf("%+v", cs.State)
			}
		},
	}, {
		name: "unknown",
		recs: []*containerRecord{rec("c1", runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0, "", "0")},
		check: func(t *testing.T, cs corev1.ContainerStatus) {
			if tm := cs.State.Terminated; tm == nil || tm.Reason != "ContainerStatusUnknown" || tm.ExitCode != 137 {
				t.Errorf("%+v", cs.State)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := containerStatus(c, tc.recs, tc.w, "containerd", ReasonContainerCreating, tc.isInit)
			if cs.Ready != tc.wantReady {
				t.Errorf("ready %v, want %v", cs.Ready, tc.wantReady)
			}
			tc.check(t, cs)
		})
	}
}

func ptrTime(ns int64) time.Time { return time.Unix(0, ns) }

func TestQOSClass(t *testing.T) {
	q := resource.MustParse
	tests := []struct {
		name      string
		resources corev1.ResourceRequirements
		want      corev1.PodQOSClass
	}{
		{"none", corev1.ResourceRequirements{}, corev1.PodQOSBestEffort},
		{"limits only", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("1Gi")}}, corev1.PodQOSGuaranteed},
		{"equal", corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: q("1000m"), corev1.ResourceMemory: q("1Gi")}}, corev1.PodQOSGuaranteed},
		{"request only", corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m")}}, corev1.PodQOSBurstable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod("q", func(p *corev1.Pod) { p.Spec.Containers[0].Resources = tc.resources })
			if got := qosClass(pod); got != tc.want {
				t.Errorf("qosClass = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLinuxResources(t *testing.T) {
	q := resource.MustParse
	tests := []struct {
		name               string
		res                corev1.ResourceRequirements
		shares, quota, mem int64
	}{
		{"best effort", corev1.ResourceRequirements{}, 2, 0, 0},
		{"request", corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("250m")}}, 256, 0, 0},
		{"limits", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("500m"), corev1.ResourceMemory: q("64Mi")}},
			512, 50000, 64 << 20},
		{"tiny limit", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("1m")}}, 2, 1000, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := linuxResources(&corev1.Container{Resources: tc.res})
			if r.CpuShares != tc.shares || r.CpuQuota != tc.quota || r.MemoryLimitInBytes != tc.mem {
				t.Errorf("got shares %d quota %d mem %d, want %d %d %d", r.CpuShares, r.CpuQuota, r.MemoryLimitInBytes, tc.shares, tc.quota, tc.mem)
			}
			if tc.quota > 0 && r.CpuPeriod != quotaPeriodUs {
				t.Errorf("period %d", r.CpuPeriod)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":       "plain",
		"$(A)":        "1",
		"x$(A)y$(B)z": "x1ytwoz",
		"$$(A)":       "$(A)",
		"$(C)":        "$(C)",
		"$(A":         "$(A",
		"$A":          "$A",
		"cost: 5$":    "cost: 5$",
		"$()":         "$()",
		"$$$(A)":      "$1",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackOff(t *testing.T) {
	b := newBackOff(10*time.Second, 40*time.Second, 10*time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if left, _ := b.remaining("k", t0, t0); left != 0 {
		t.Fatalf("first restart waits %s", left)
	}
	finished := t0
	for _, want := range []time.Duration{10, 20, 40, 40} {
		b.next("k", finished)
		finished = finished.Add(time.Minute)
		if left, delay := b.remaining("k", finished, finished); left != want*time.Second || delay != want*time.Second {
			t.Fatalf("after %s: left %s delay %s, want %s", finished.Sub(t0), left, delay, want*time.Second)
		}
	}
	if left, _ := b.remaining("k", finished.Add(11*time.Minute), finished.Add(11*time.Minute)); left != 0 {
		t.Fatalf("no reset after a long run: %s", left)
	}
	b.forgetPrefix("k")
	if left, _ := b.remaining("k", finished, finished); left != 0 {
		t.Fatal("forgotten key still backs off")
	}
}
