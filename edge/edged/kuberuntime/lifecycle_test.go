package kuberuntime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edge/edged/kuberuntime/internal/fakecri"
)

func twoContainerPod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	return testPod(name, append([]func(*corev1.Pod){func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent})
	}}, mutate...)...)
}

// After an edgecore restart, a new Manager adopts what is running: same IDs, nothing created or stopped.
func TestAdoption(t *testing.T) {
	for _, hostNetwork := range []bool{true, false} {
		t.Run(map[bool]string{true: "hostnet", false: "podnet"}[hostNetwork], func(t *testing.T) {
			h := newHarness(t)
			pod := twoContainerPod("adopt", func(p *corev1.Pod) { p.Spec.HostNetwork = hostNetwork })
			h.mustSync(pod)
			h.exit(pod.UID, "side", 1)
			before := h.mustSync(pod) // side restarted once: its count must survive too
			calls := map[string]int{}
			mutating := []string{"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "PullImage"}
			for _, m := range mutating {
				calls[m] = h.cri.Calls(m)
			}

			restarted := h.newManager()
			uids, err := restarted.RunningPods(h.ctx)
			if err != nil || !slices.Equal(uids, []types.UID{pod.UID}) {
				t.Fatalf("RunningPods = %v, %v", uids, err)
			}
			h.clock.Step(time.Minute)
			// The pod comes back from the local database with the status last reported.
			after, err := h.syncWith(restarted, pod)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range mutating {
				if h.cri.Calls(m) != calls[m] {
					t.Errorf("%s called %d times during adoption", m, h.cri.Calls(m)-calls[m])
				}
			}
			for _, name := range []string{"app", "side"} {
				b, a := containerStatusOf(t, before, name), containerStatusOf(t, after, name)
				if a.ContainerID != b.ContainerID || a.RestartCount != b.RestartCount || a.State.Running == nil {
					t.Errorf("%s: before %s/%d, after %s/%d running=%v", name, b.ContainerID, b.RestartCount, a.ContainerID, a.RestartCount, a.State.Running != nil)
				}
			}
			if after.PodIP != before.PodIP || after.Phase != corev1.PodRunning {
				t.Errorf("podIP %s -> %s, phase %s", before.PodIP, after.PodIP, after.Phase)
			}
			// Unchanged status, unchanged transition times: nothing to patch.
			for _, c := range after.Conditions {
				if bt := condition(before, c.Type).LastTransitionTime; !c.LastTransitionTime.Equal(&bt) {
					t.Errorf("condition %s transition time moved", c.Type)
				}
			}
		})
	}
}

// A reboot leaves NOTREADY sandboxes and exited containers: the pod comes back in a new sandbox at once (no
// back-off from before the reboot), with restart counts carried on.
func TestRebootRecovery(t *testing.T) {
	for _, clockJump := range []time.Duration{time.Minute, -time.Hour} {
		t.Run("clock"+clockJump.String(), func(t *testing.T) { testRebootRecovery(t, clockJump) })
	}
}

// testRebootRecovery reboots with the clock moved by clockJump: devices without a real-time clock come back
// with a time behind the one their old containers were stamped with.
func testRebootRecovery(t *testing.T, clockJump time.Duration) {
	h := newHarness(t)
	pod := twoContainerPod("reboot")
	h.mustSync(pod)
	h.cri.Reboot()
	h.clock.Step(clockJump)
	restarted := h.newManager()
	st, err := h.syncWith(restarted, pod)
	if err != nil {
		t.Fatal(err)
	}
	sbs := h.sandboxes(pod.UID)
	slices.SortFunc(sbs, func(a, b fakecri.Sandbox) int {
		return int(a.Config.GetMetadata().GetAttempt()) - int(b.Config.GetMetadata().GetAttempt())
	})
	if len(sbs) != 2 || sbs[1].State != runtimeapi.PodSandboxState_SANDBOX_READY || sbs[1].Config.GetMetadata().GetAttempt() != 1 {
		t.Fatalf("sandboxes after reboot: %+v", sbs)
	}
	for _, name := range []string{"app", "side"} {
		cs := containerStatusOf(t, st, name)
		if cs.State.Running == nil || cs.RestartCount != 1 || cs.LastTerminationState.Terminated == nil ||
			cs.LastTerminationState.Terminated.ExitCode != 255 {
			t.Errorf("%s after reboot: %+v", name, cs)
		}
		if c := h.running(pod.UID, name); c.SandboxID != sbs[1].ID {
			t.Errorf("%s runs in sandbox %s, want %s", name, c.SandboxID, sbs[1].ID)
		}
	}
	if st.Phase != corev1.PodRunning {
		t.Errorf("phase %s", st.Phase)
	}
	creates := h.cri.Calls("CreateContainer")
	if st := h.mustSyncWith(restarted, pod); st.Phase != corev1.PodRunning || h.cri.Calls("CreateContainer") != creates {
		t.Errorf("resync after reboot: phase %s, %d new containers", st.Phase, h.cri.Calls("CreateContainer")-creates)
	}
}

func TestKillPod(t *testing.T) {
	h := newHarness(t)
	h.objs.setConfigMap("cfg", map[string]string{"k": "v"})
	pod := twoContainerPod("kill", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}, {Name: "scratch", MountPath: "/s"}}
	})
	other := testPod("other")
	h.mustSync(pod)
	h.mustSync(other)
	h.exit(pod.UID, "side", 1)
	h.mustSync(pod) // an exited container and a restarted one

	// Pod cgroups as runc leaves them on a hybrid cgroup v1 host: per controller, plus unified.
	podCg := filepath.Join("tether-pods", "pod"+string(pod.UID))
	for _, ctl := range []string{"cpu,cpuacct", "memory", "pids", "unified"} {
		if err := os.MkdirAll(filepath.Join(h.cgroups, ctl, podCg, "ctr0001"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("cpu,cpuacct", filepath.Join(h.cgroups, "cpu")); err != nil {
		t.Fatal(err)
	}
	otherCg := filepath.Join(h.cgroups, "memory", "tether-pods", "pod"+string(other.UID))
	if err := os.MkdirAll(otherCg, 0o755); err != nil {
		t.Fatal(err)
	}

	if err := h.m.KillPod(h.ctx, pod.UID, 7*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, m := len(h.sandboxes(pod.UID)), len(h.containers(pod.UID)); n+m != 0 {
		t.Fatalf("%d sandboxes and %d containers left", n, m)
	}
	if got := h.cri.Calls("StopContainer"); got != 2 {
		t.Errorf("StopContainer called %d times, want 2 (the running ones)", got)
	}
	for _, p := range []string{
		filepath.Join(h.root, "pods", string(pod.UID)),
		filepath.Join(h.logs, "default_kill_"+string(pod.UID)),
		filepath.Join(h.cgroups, "memory", podCg),
		filepath.Join(h.cgroups, "unified", podCg),
		filepath.Join(h.cgroups, "cpu,cpuacct", podCg),
	} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", p, err)
		}
	}
	if _, err := os.Stat(otherCg); err != nil {
		t.Errorf("other pod's cgroup removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.cgroups, "memory", "tether-pods")); err != nil {
		t.Errorf("the pods' parent cgroup removed: %v", err)
	}
	if other.Status.Phase != corev1.PodRunning || len(h.containers(other.UID)) != 1 {
		t.Error("other pod affected")
	}
	uids, err := h.m.RunningPods(h.ctx)
	if err != nil || !slices.Equal(uids, []types.UID{other.UID}) {
		t.Errorf("RunningPods = %v, %v", uids, err)
	}
	// Idempotent: a retry after success is a no-op.
	if err := h.m.KillPod(h.ctx, pod.UID, time.Second); err != nil {
		t.Fatal(err)
	}
}

// A failed step leaves the pod's files in place, and a retry finishes the job.
func TestKillPodRetry(t *testing.T) {
	h := newHarness(t)
	pod := testPod("retry")
	h.mustSync(pod)
	h.cri.FailNext("RemovePodSandbox", os.ErrPermission)
	if err := h.m.KillPod(h.ctx, pod.UID, 1500*time.Millisecond); err == nil {
		t.Fatal("KillPod succeeded despite a failed sandbox removal")
	}
	if got := h.cri.StopTimeouts(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("StopContainer timeouts %v, want [2] (the grace period rounded up)", got)
	}
	if n := len(h.sandboxes(pod.UID)); n != 1 {
		t.Fatalf("%d sandboxes, want the one whose removal failed", n)
	}
	if _, err := os.Stat(filepath.Join(h.logs, "default_retry_"+string(pod.UID))); err != nil {
		t.Errorf("logs removed before the pod was: %v", err)
	}
	if err := h.m.KillPod(h.ctx, pod.UID, time.Second); err != nil {
		t.Fatal(err)
	}
	if n, m := len(h.sandboxes(pod.UID)), len(h.containers(pod.UID)); n+m != 0 {
		t.Fatalf("%d sandboxes and %d containers left after the retry", n, m)
	}
	if _, err := os.Stat(filepath.Join(h.logs, "default_retry_"+string(pod.UID))); !os.IsNotExist(err) {
		t.Errorf("logs left after the retry: %v", err)
	}
}

func TestGarbageCollect(t *testing.T) {
	h := newHarness(t)
	pod := testPod("gc")
	h.mustSync(pod)
	// Three crashes: four instances of "app", three exited.
	for range 3 {
		h.exit(pod.UID, "app", 1)
		h.clock.Step(6 * time.Minute)
		h.mustSync(pod)
	}
	if n := len(h.containers(pod.UID)); n != 4 {
		t.Fatalf("%d containers before GC, want 4", n)
	}
	if err := h.m.GarbageCollect(h.ctx); err != nil {
		t.Fatal(err)
	}
	cs := h.containers(pod.UID)
	if len(cs) != 2 || cs[1].State != runtimeapi.ContainerState_CONTAINER_RUNNING || cs[0].Config.GetMetadata().GetAttempt() != 2 {
		t.Fatalf("after GC: %+v, want the newest exited (attempt 2) and the running one", cs)
	}
	// Status still knows the last termination and the restart count.
	st := h.mustSync(pod)
	if c := containerStatusOf(t, st, "app"); c.RestartCount != 3 || c.LastTerminationState.Terminated == nil {
		t.Fatalf("status after GC: %+v", c)
	}

	// After a reboot the old sandbox keeps the newest exited container until a newer one exits.
	h.cri.Reboot()
	h.clock.Step(time.Minute) // past the back-off this Manager remembers
	h.mustSync(pod)
	if err := h.m.GarbageCollect(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.sandboxes(pod.UID)); n != 2 {
		t.Fatalf("%d sandboxes, want 2 (the old one still holds the last exited container)", n)
	}
	h.exit(pod.UID, "app", 1)
	if err := h.m.GarbageCollect(h.ctx); err != nil {
		t.Fatal(err)
	}
	sbs := h.sandboxes(pod.UID)
	if len(sbs) != 1 || sbs[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandboxes %+v, want only the current one", sbs)
	}

	// An empty dead sandbox: kept as the newest of a synced pod, removed for a pod nobody synced.
	if err := h.m.KillPod(h.ctx, pod.UID, 0); err != nil {
		t.Fatal(err)
	}
	job := testPod("job", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever })
	h.mustSync(job)
	h.exit(job.UID, "app", 0)
	h.mustSync(job)
	for _, c := range h.containers(job.UID) {
		if _, err := h.cri.RemoveContainer(h.ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ID}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.m.GarbageCollect(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.sandboxes(job.UID)); n != 1 {
		t.Fatalf("%d sandboxes of a synced pod, want 1", n)
	}
	if err := h.newManager().GarbageCollect(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.sandboxes(job.UID)); n != 0 {
		t.Fatalf("%d sandboxes of an unsynced pod, want 0", n)
	}
}

func TestRunningPodsIncludesLeftoverDirectories(t *testing.T) {
	h := newHarness(t)
	if err := os.MkdirAll(filepath.Join(h.root, "pods", "uid-gone", "volumes"), 0o755); err != nil {
		t.Fatal(err)
	}
	pod := testPod("live")
	h.mustSync(pod)
	uids, err := h.m.RunningPods(h.ctx)
	if err != nil || !slices.Equal(uids, []types.UID{"uid-gone", pod.UID}) {
		t.Fatalf("RunningPods = %v, %v", uids, err)
	}
	if err := h.m.KillPod(h.ctx, "uid-gone", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.root, "pods", "uid-gone")); !os.IsNotExist(err) {
		t.Errorf("leftover directory not removed: %v", err)
	}
}

func TestVersion(t *testing.T) {
	h := newHarness(t)
	v, err := h.m.Version(h.ctx)
	if err != nil || v != "containerd://1.6.20-fake" {
		t.Fatalf("Version = %q, %v", v, err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{RootDir: "/x", Endpoint: "tcp://127.0.0.1:1"},
		{RootDir: "/x", DefaultImagePullPolicy: "Sometimes"},
	} {
		if m, err := New(o); err == nil {
			_ = m.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
