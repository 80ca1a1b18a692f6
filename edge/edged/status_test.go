package edged

import (
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// applyPatch applies a status patch as the API server would.
func applyPatch(t *testing.T, pod corev1.Pod, patch map[string]json.RawMessage) corev1.Pod {
	t.Helper()
	orig, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := strategicpatch.StrategicMergePatch(orig, p, corev1.Pod{})
	if err != nil {
		t.Fatalf("apply %s: %v", p, err)
	}
	return decodeInto[corev1.Pod](t, out)
}

func TestMergeStatus(t *testing.T) {
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	cond := func(ct corev1.PodConditionType, s corev1.ConditionStatus, when metav1.Time) corev1.PodCondition {
		return corev1.PodCondition{Type: ct, Status: s, LastTransitionTime: when}
	}
	base := corev1.PodStatus{
		QOSClass:  corev1.PodQOSBurstable,
		StartTime: &metav1.Time{Time: t0.Add(-time.Hour)},
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionTrue, at(-2*time.Hour)),
			cond(corev1.PodReady, corev1.ConditionFalse, at(-time.Hour)),
		},
	}
	tests := []struct {
		name      string
		prev      *corev1.PodStatus
		got       corev1.PodCondition
		wantReady metav1.Time
	}{
		{"flip from the cloud's view", nil, cond(corev1.PodReady, corev1.ConditionTrue, metav1.Time{}), at(0)},
		{"same as the cloud's view", nil, cond(corev1.PodReady, corev1.ConditionFalse, at(5*time.Minute)), at(-time.Hour)},
		{"same as edged's last", &corev1.PodStatus{Conditions: []corev1.PodCondition{cond(corev1.PodReady, corev1.ConditionTrue, at(-time.Minute))}},
			cond(corev1.PodReady, corev1.ConditionTrue, at(time.Minute)), at(-time.Minute)},
		{"runtime's own transition time kept on a flip", nil, cond(corev1.PodReady, corev1.ConditionTrue, at(-time.Second)), at(-time.Second)},
	}
	pod := newPod("p", "u", testNode)
	pod.Generation = 3
	for _, tt := range tests {
		got := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{tt.got}}
		st := mergeStatus(pod, tt.prev, base, got, at(0), "192.0.2.10")
		ready := findCondition(st.Conditions, corev1.PodReady)
		if !ready.LastTransitionTime.Equal(&tt.wantReady) {
			t.Errorf("%s: Ready transition = %v, want %v", tt.name, ready.LastTransitionTime, tt.wantReady)
		}
		if c := findCondition(st.Conditions, corev1.PodScheduled); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("%s: PodScheduled not kept: %+v", tt.name, st.Conditions)
		}
		if st.QOSClass != corev1.PodQOSBurstable || st.HostIP != "192.0.2.10" || len(st.HostIPs) != 1 ||
			!st.StartTime.Equal(base.StartTime) || st.ObservedGeneration != 3 {
			t.Errorf("%s: merged = %+v", tt.name, st)
		}
	}
}

func TestEqualStatusIgnoresHeartbeatsAndOrder(t *testing.T) {
	a := runningStatus()
	a.Conditions[0].LastProbeTime = metav1.NewTime(t0)
	a.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(300 * time.Millisecond))
	b := runningStatus()
	b.Conditions[0], b.Conditions[1] = b.Conditions[1], b.Conditions[0]
	b.Conditions[1].LastProbeTime = metav1.NewTime(t0.Add(time.Hour))
	b.Conditions[1].LastTransitionTime = metav1.NewTime(t0)
	if !equalStatus(a, b) {
		t.Error("statuses differing in probe times, sub-second times and order compare unequal")
	}
	b.Phase = corev1.PodFailed
	if equalStatus(a, b) {
		t.Error("different phases compare equal")
	}
}

func TestPodStatusPatch(t *testing.T) {
	base := newPod("p", "uid-p", testNode).Status
	latest := *base.DeepCopy()
	if _, ok, err := podStatusPatch("uid-p", base, latest); err != nil || ok {
		t.Fatalf("patch of an unchanged status: ok=%v err=%v", ok, err)
	}
	latest.Phase = corev1.PodRunning
	latest.Message = "running"
	patch, ok, err := podStatusPatch("uid-p", base, latest)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(patch, &fields); err != nil {
		t.Fatal(err)
	}
	if len(fields) != 2 || string(fields["metadata"]) != `{"uid":"uid-p"}` {
		t.Errorf("patch = %s", patch)
	}
	var pod corev1.Pod
	pod.Status = base
	if got := applyPatch(t, pod, fields).Status; !equalStatus(got, latest) {
		t.Errorf("applied = %+v, want %+v", got, latest)
	}
}

func TestOlderRV(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"9", "10", true}, {"10", "9", false}, {"10", "10", false}, {"", "10", false}, {"x", "10", false}, {"10", "", false},
	}
	for _, tt := range tests {
		if got := olderRV(tt.a, tt.b); got != tt.want {
			t.Errorf("olderRV(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
