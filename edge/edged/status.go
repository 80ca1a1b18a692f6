package edged

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// mergeStatus completes the runtime's view of a pod with what only edged or the cloud knows. prev is edged's
// last computed status (nil before the first sync), base the status the cloud has.
func mergeStatus(pod *corev1.Pod, prev *corev1.PodStatus, base corev1.PodStatus, got corev1.PodStatus,
	now metav1.Time, hostIP string) corev1.PodStatus {
	st := *got.DeepCopy()
	ref := &base
	if prev != nil {
		ref = prev
	}
	// Transition times move only when a condition flips; a runtime that stamps every report must not make
	// every sync look like a change.
	for i := range st.Conditions {
		c := &st.Conditions[i]
		old := findCondition(ref.Conditions, c.Type)
		if old == nil {
			old = findCondition(base.Conditions, c.Type)
		}
		switch {
		case old != nil && old.Status == c.Status:
			c.LastTransitionTime = old.LastTransitionTime
		case c.LastTransitionTime.IsZero():
			c.LastTransitionTime = now
		}
	}
	// Conditions other controllers own (PodScheduled, DisruptionTarget, readiness gates) stay as they are;
	// dropping them would make the patch delete them.
	for _, c := range base.Conditions {
		if findCondition(st.Conditions, c.Type) == nil {
			st.Conditions = append(st.Conditions, c)
		}
	}
	if st.QOSClass == "" {
		st.QOSClass = base.QOSClass
	}
	if st.NominatedNodeName == "" {
		st.NominatedNodeName = base.NominatedNodeName
	}
	if st.HostIP == "" && hostIP != "" {
		st.HostIP = hostIP
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	// Like kubelet, the first start time sticks.
	switch {
	case ref.StartTime != nil:
		st.StartTime = ref.StartTime.DeepCopy()
	case base.StartTime != nil:
		st.StartTime = base.StartTime.DeepCopy()
	case st.StartTime == nil:
		st.StartTime = now.DeepCopy()
	}
	if st.ObservedGeneration == 0 {
		st.ObservedGeneration = pod.Generation
	}
	return st
}

func findCondition(conds []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// equalStatus compares what the API server would store: order of conditions and container statuses does
// not matter, probe times are heartbeat-only, and times have second precision on the wire.
func equalStatus(a, b corev1.PodStatus) bool {
	ja, erra := json.Marshal(normalizeStatus(a))
	jb, errb := json.Marshal(normalizeStatus(b))
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

func normalizeStatus(s corev1.PodStatus) corev1.PodStatus {
	s = *s.DeepCopy()
	for i := range s.Conditions {
		s.Conditions[i].LastProbeTime = metav1.Time{}
	}
	slices.SortFunc(s.Conditions, func(a, b corev1.PodCondition) int { return cmp.Compare(a.Type, b.Type) })
	byName := func(a, b corev1.ContainerStatus) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(s.ContainerStatuses, byName)
	slices.SortFunc(s.InitContainerStatuses, byName)
	slices.SortFunc(s.EphemeralContainerStatuses, byName)
	return s
}

// podStatusPatch is the strategic-merge patch from the cloud's status to edged's, as kubelet sends it:
// {"metadata":{"uid":...},"status":{...}}. The uid makes the API server refuse the patch if the pod was
// replaced by one of the same name. ok is false when there is nothing to change.
func podStatusPatch(uid types.UID, base, latest corev1.PodStatus) (patch []byte, ok bool, err error) {
	oldJSON, err := json.Marshal(corev1.Pod{Status: base})
	if err != nil {
		return nil, false, fmt.Errorf("encode status of pod %s: %w", uid, err)
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: latest})
	if err != nil {
		return nil, false, fmt.Errorf("encode status of pod %s: %w", uid, err)
	}
	p, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return nil, false, fmt.Errorf("status patch of pod %s: %w", uid, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(p, &fields); err != nil {
		return nil, false, fmt.Errorf("status patch of pod %s: %w", uid, err)
	}
	if _, changed := fields["status"]; !changed {
		return nil, false, nil
	}
	meta, err := json.Marshal(map[string]types.UID{"uid": uid})
	if err != nil {
		return nil, false, fmt.Errorf("status patch of pod %s: %w", uid, err)
	}
	patch, err = json.Marshal(map[string]json.RawMessage{"metadata": meta, "status": fields["status"]})
	if err != nil {
		return nil, false, fmt.Errorf("status patch of pod %s: %w", uid, err)
	}
	return patch, true, nil
}

// olderRV reports whether resource version a is known to precede b. Versions are compared numerically
// (spec §21.4); anything unparsable is not older, so an odd version never freezes a pod.
func olderRV(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}
