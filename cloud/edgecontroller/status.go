package edgecontroller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

func retryOnConflict(fn func() error) error { return retry.RetryOnConflict(retry.DefaultRetry, fn) }

// condState is what transition-time preservation needs of a live condition.
type condState struct {
	status     string
	transition time.Time
}

func nodeConditionStates(conds []corev1.NodeCondition) map[string]condState {
	m := make(map[string]condState, len(conds))
	for _, c := range conds {
		m[string(c.Type)] = condState{status: string(c.Status), transition: c.LastTransitionTime.Time}
	}
	return m
}

func podConditionStates(conds []corev1.PodCondition) map[string]condState {
	m := make(map[string]condState, len(conds))
	for _, c := range conds {
		m[string(c.Type)] = condState{status: string(c.Status), transition: c.LastTransitionTime.Time}
	}
	return m
}

// keepTransition returns the transition time a reported condition should carry. An edge rebuilds its conditions
// after a restart or reconnect with fresh transition times; when the status did not actually change, the live
// time stays, or every reconnect would look like a flap.
func keepTransition(live map[string]condState, typ, status string, reported, now time.Time) time.Time {
	if cur, ok := live[typ]; ok && cur.status == status && !cur.transition.IsZero() {
		return cur.transition
	}
	if reported.IsZero() {
		return now
	}
	return reported
}

// freshHeartbeat replaces heartbeats older than freq: edge clocks drift, and an old heartbeat makes the node
// lifecycle controller declare a reporting node dead.
func freshHeartbeat(reported, now time.Time, freq time.Duration) time.Time {
	if now.Sub(reported) > freq {
		return now
	}
	return reported
}

// mergeNodeConditions applies reported conditions over live ones. Live conditions the edge does not report (set by
// other controllers, e.g. NetworkUnavailable) are kept, as a kubelet's strategic-merge patch would keep them.
func mergeNodeConditions(live, reported []corev1.NodeCondition, now time.Time, freq time.Duration) []corev1.NodeCondition {
	states := nodeConditionStates(live)
	out := make([]corev1.NodeCondition, 0, len(reported)+len(live))
	seen := make(map[corev1.NodeConditionType]bool, len(reported))
	for _, c := range reported {
		c.LastTransitionTime = metav1.NewTime(keepTransition(states, string(c.Type), string(c.Status), c.LastTransitionTime.Time, now))
		c.LastHeartbeatTime = metav1.NewTime(freshHeartbeat(c.LastHeartbeatTime.Time, now, freq))
		out = append(out, c)
		seen[c.Type] = true
	}
	for _, c := range live {
		if !seen[c.Type] {
			out = append(out, c)
		}
	}
	return out
}

func mergePodConditions(live, reported []corev1.PodCondition, now time.Time) []corev1.PodCondition {
	states := podConditionStates(live)
	out := make([]corev1.PodCondition, 0, len(reported)+len(live))
	seen := make(map[corev1.PodConditionType]bool, len(reported))
	for _, c := range reported {
		c.LastTransitionTime = metav1.NewTime(keepTransition(states, string(c.Type), string(c.Status), c.LastTransitionTime.Time, now))
		out = append(out, c)
		seen[c.Type] = true
	}
	for _, c := range live {
		// PodScheduled and readiness-gate conditions belong to others; a [v1.7] edge does not report them.
		if !seen[c.Type] {
			out = append(out, c)
		}
	}
	return out
}

// normalizePodStatus prepares a [v1.7] reported status for UpdateStatus, as KubeEdge does.
func normalizePodStatus(live, status *corev1.PodStatus, now time.Time) {
	status.Conditions = mergePodConditions(live.Conditions, status.Conditions, now)
	switch {
	case live.StartTime != nil && !live.StartTime.IsZero():
		status.StartTime = live.StartTime.DeepCopy() // never moves once set
	case status.StartTime == nil || status.StartTime.IsZero():
		t := metav1.NewTime(now)
		status.StartTime = &t
	}
	// A stable order keeps identical reports from looking like changes.
	slices.SortFunc(status.ContainerStatuses, func(a, b corev1.ContainerStatus) int { return strings.Compare(a.Name, b.Name) })
}

// podFinished reports a terminal phase with nothing running.
func podFinished(s *corev1.PodStatus) bool {
	if s.Phase != corev1.PodSucceeded && s.Phase != corev1.PodFailed {
		return false
	}
	for _, c := range s.ContainerStatuses {
		if c.State.Running != nil {
			return false
		}
	}
	return true
}

// adjustConditionPatch applies transition-time preservation (and, for nodes, heartbeat freshening) to the
// conditions of a strategic-merge status patch. Conditions are list entries keyed by type; entries may be partial,
// and a missing status means the live one. Anything it does not understand is left untouched.
func adjustConditionPatch(patch []byte, live map[string]condState, now time.Time, freq time.Duration, heartbeat bool) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.UseNumber() // re-encoding must not turn integers into floats
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding patch: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding patch: data after the JSON object")
	}
	status, _ := doc["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	changed := false
	set := func(m map[string]any, key string, t time.Time) {
		v := t.UTC().Format(time.RFC3339)
		if m[key] != v {
			m[key] = v
			changed = true
		}
	}
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := m["type"].(string)
		if typ == "" {
			continue
		}
		st, hasStatus := m["status"].(string)
		cur, known := live[typ]
		if !hasStatus && known {
			st = cur.status
		}
		_, hasTransition := m["lastTransitionTime"]
		switch {
		case known && st == cur.status && !cur.transition.IsZero():
			if hasTransition {
				set(m, "lastTransitionTime", cur.transition)
			}
		case hasStatus && !hasTransition:
			set(m, "lastTransitionTime", now)
		}
		if hb, ok := m["lastHeartbeatTime"]; ok && heartbeat {
			t, err := parseTime(hb)
			if err != nil {
				t = time.Time{}
			}
			if fresh := freshHeartbeat(t, now, freq); !fresh.Equal(t) {
				set(m, "lastHeartbeatTime", fresh)
			}
		}
	}
	if !changed {
		return patch, nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding adjusted patch: %w", err)
	}
	return out, nil
}

func parseTime(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf("time %v is not a string", v)
	}
	return time.Parse(time.RFC3339, s)
}
