package edgecontroller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestPoolBoundsQueueAndWorkers(t *testing.T) {
	var wg sync.WaitGroup
	p := newPool("test", 2, 1, &wg)
	ctx := context.Background()
	release := make(chan struct{})
	ran := make(chan string, 4)
	job := func(name string) func(context.Context) {
		return func(context.Context) { ran <- name; <-release }
	}
	if !p.submit(ctx, job("a")) {
		t.Fatal("first job refused")
	}
	<-ran // a holds the only worker; the queue is empty again
	if !p.submit(ctx, job("b")) || !p.submit(ctx, func(context.Context) { panic("handler bug") }) {
		t.Fatal("jobs within the queue size refused")
	}
	if p.submit(ctx, job("c")) {
		t.Fatal("job beyond the queue size accepted")
	}
	p.mu.Lock()
	active := p.active
	p.mu.Unlock()
	if active != 1 {
		t.Errorf("active workers = %d, want 1", active)
	}
	close(release)
	wg.Wait() // the worker survives the panic, drains the queue and exits
	if got := <-ran; got != "b" {
		t.Errorf("ran %q, want b", got)
	}
	if p.active != 0 || len(p.queue) != 0 {
		t.Errorf("after drain: active %d, queued %d", p.active, len(p.queue))
	}
}

func TestStatusError(t *testing.T) {
	tests := []struct {
		err  error
		code int32
	}{
		{fmt.Errorf("%w: content", errBadInput), 400},
		{fmt.Errorf("%w: other node", errForbidden), 403},
		{fmt.Errorf("%w: queue full", errBusy), 429},
		{fmt.Errorf("getting pod: %w", apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "x")), 404},
		{fmt.Errorf("updating: %w", apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "x", errors.New("rv"))), 409},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), 504},
		{errors.New("boom"), 500},
	}
	for _, tt := range tests {
		if got := statusError(tt.err); got == nil || got.ErrStatus.Code != tt.code {
			t.Errorf("statusError(%v) = %+v, want code %d", tt.err, got, tt.code)
		}
	}
	if statusError(nil) != nil {
		t.Error("statusError(nil) != nil")
	}
}

func TestAdjustConditionPatch(t *testing.T) {
	now := testNow
	old := now.Add(-24 * time.Hour)
	live := map[string]condState{
		"Ready":          {status: "True", transition: old},
		"MemoryPressure": {status: "False", transition: old},
	}
	at := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	tests := []struct {
		name      string
		patch     string
		heartbeat bool
		want      string // "" means unchanged bytes
		wantErr   bool
	}{
		{name: "same status: live transition time kept",
			patch: `{"status":{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"` + at(-5*time.Second) + `"}]}}`,
			want:  `{"status":{"conditions":[{"lastTransitionTime":"` + old.Format(time.RFC3339) + `","status":"True","type":"Ready"}]}}`},
		{name: "partial entry without status counts as unchanged",
			patch: `{"status":{"conditions":[{"type":"Ready","lastTransitionTime":"` + at(-5*time.Second) + `"}]}}`,
			want:  `{"status":{"conditions":[{"lastTransitionTime":"` + old.Format(time.RFC3339) + `","type":"Ready"}]}}`},
		{name: "changed status keeps the reported time",
			patch: `{"status":{"conditions":[{"type":"MemoryPressure","status":"True","lastTransitionTime":"` + at(-3*time.Second) + `"}]}}`},
		{name: "changed status without a time gets now",
			patch: `{"status":{"conditions":[{"type":"MemoryPressure","status":"True"}]}}`,
			want:  `{"status":{"conditions":[{"lastTransitionTime":"` + at(0) + `","status":"True","type":"MemoryPressure"}]}}`},
		{name: "new condition without a time gets now",
			patch: `{"status":{"conditions":[{"type":"DiskPressure","status":"False"}]}}`,
			want:  `{"status":{"conditions":[{"lastTransitionTime":"` + at(0) + `","status":"False","type":"DiskPressure"}]}}`},
		{name: "stale heartbeat refreshed, numbers preserved", heartbeat: true,
			patch: `{"status":{"capacity":{"pods":110},"conditions":[{"type":"Ready","lastHeartbeatTime":"` + at(-time.Minute) + `"}]}}`,
			want:  `{"status":{"capacity":{"pods":110},"conditions":[{"lastHeartbeatTime":"` + at(0) + `","type":"Ready"}]}}`},
		{name: "fresh heartbeat kept", heartbeat: true,
			patch: `{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":"` + at(-2*time.Second) + `"}]}}`},
		{name: "unparsable heartbeat replaced", heartbeat: true,
			patch: `{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":"yesterday"}]}}`,
			want:  `{"status":{"conditions":[{"lastHeartbeatTime":"` + at(0) + `","type":"Ready"}]}}`},
		{name: "heartbeats untouched for pods",
			patch: `{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":"` + at(-time.Minute) + `"}]}}`},
		{name: "no conditions", patch: `{"metadata":{"labels":{"a":"b"}}}`},
		{name: "odd shapes are left alone", patch: `{"status":{"conditions":[1,{"status":"True"},{"type":7}]}}`},
		{name: "not JSON", patch: `{"status":`, wantErr: true},
		{name: "not an object", patch: `[1]`, wantErr: true},
		{name: "trailing data", patch: `{} {}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := adjustConditionPatch([]byte(tt.patch), live, now, 10*time.Second, tt.heartbeat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			want := tt.want
			if want == "" && !tt.wantErr {
				want = tt.patch
			}
			if string(got) != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestMergeNodeConditionsKeepsUnreported(t *testing.T) {
	live := []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse}}
	got := mergeNodeConditions(live, []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, testNow, 10*time.Second)
	if len(got) != 2 || got[0].Type != corev1.NodeReady || !got[0].LastTransitionTime.Time.Equal(testNow) ||
		!got[0].LastHeartbeatTime.Time.Equal(testNow) || got[1].Type != corev1.NodeNetworkUnavailable {
		t.Errorf("merged = %+v", got)
	}
}
