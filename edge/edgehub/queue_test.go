package edgehub

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// Messages as the edge modules build them.

func nodeStatus(name string) model.Message {
	return *model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, "default/nodepatch/"+name, model.PatchOperation).
		FillBody(`{"status":{}}`)
}

func podStatus(name string) model.Message {
	return *model.NewMessage("").BuildRouter(modules.Edged, model.GroupResource, "default/podstatus/"+name, model.UpdateOperation)
}

// twinReport is DeviceTwin's device/{id}/twin/edge_updated carrying props, each with value.
func twinReport(device, value string, props ...string) model.Message {
	twins := map[string]any{}
	for _, p := range props {
		twins[p] = map[string]any{"actual": map[string]any{"value": value}}
	}
	content, _ := json.Marshal(map[string]any{"event_id": "", "timestamp": 1, "twin": twins})
	return *model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupTwin,
		"device/"+device+"/twin/edge_updated", model.UpdateOperation).FillBody(json.RawMessage(content))
}

func stateReport(device, state string) model.Message {
	return *model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupTwin,
		"device/"+device+"/state/update", model.UpdateOperation).FillBody(fmt.Sprintf(`{"state":%q}`, state))
}

func event(name string) model.Message {
	return *model.NewMessage("").BuildRouter(modules.Edged, model.GroupResource, "default/event/"+name, model.InsertOperation)
}

// label names a message in expectations: its resource's last token(s) and, for reports, the value.
func label(m model.Message) string {
	res := m.Router.Resource
	if strings.HasPrefix(res, "device/") {
		data, _ := m.GetContentData()
		var upd struct {
			Twin map[string]struct {
				Actual struct{ Value string } `json:"actual"`
			} `json:"twin"`
			State string `json:"state"`
		}
		_ = json.Unmarshal(data, &upd)
		dev := strings.Split(res, "/")[1]
		if upd.State != "" {
			return dev + "/state=" + upd.State
		}
		props := make([]string, 0, len(upd.Twin))
		for p, t := range upd.Twin {
			props = append(props, p+"="+t.Actual.Value)
		}
		slices.Sort(props)
		return dev + "/" + strings.Join(props, ",")
	}
	return res
}

func TestLaneOf(t *testing.T) {
	resp := func(src, group, res string) model.Message {
		req := model.NewMessage("").BuildRouter(src, group, res, model.UpdateOperation)
		return *model.NewRespByMessage(req, "OK")
	}
	tests := []struct {
		name string
		msg  model.Message
		want lane
	}{
		{"node status patch", nodeStatus("n1"), laneControl},
		{"node registration", *model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, "default/node/n1", model.InsertOperation), laneControl},
		{"lease", *model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, "kube-node-lease/lease/n1", model.UpdateOperation), laneControl},
		{"pod status", podStatus("p1"), laneControl},
		{"configmap query", *model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, "default/configmap/c1", model.QueryOperation), laneControl},
		{"ACK of a cloud object", resp(modules.MetaManager, model.GroupResource, "default/pod/p1"), laneControl},
		{"response from DeviceTwin", resp(modules.DeviceTwin, model.GroupTwin, "device/d1/twin/cloud_updated"), laneControl},
		{"keepalive", *model.NewMessage("").BuildRouter(modules.EdgeHub, model.GroupResource, "node", model.KeepaliveOperation), laneControl},
		{"user message", *model.NewMessage("").BuildRouter("router_eventbus", model.GroupUser, "rule/r1", model.UploadOperation), laneControl},
		{"twin report", twinReport("d1", "1", "status"), laneBulk},
		{"device state", stateReport("d1", "online"), laneBulk},
		{"event", event("e1"), laneBulk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := laneOf(&tc.msg); got != tc.want {
				t.Errorf("laneOf(%s) = %s, want %s", tc.msg.String(), got, tc.want)
			}
		})
	}
}

func TestOutboxOrderAndCoalescing(t *testing.T) {
	tests := []struct {
		name string
		max  int
		push []model.Message
		// want is the order pop returns, by label.
		want          []string
		wantCoalesced int
		wantEvicted   []string
	}{
		{
			name: "control before bulk, each in arrival order",
			max:  10,
			push: []model.Message{twinReport("d1", "1", "status"), event("e1"), podStatus("p1"), twinReport("d2", "1", "status"),
				nodeStatus("n1"), podStatus("p2")},
			want: []string{"default/podstatus/p1", "default/nodepatch/n1", "default/podstatus/p2", "d1/status=1", "default/event/e1",
				"d2/status=1"},
		},
		{
			name: "a device's newer report replaces the queued one in its place",
			max:  10,
			push: []model.Message{twinReport("d1", "1", "status"), twinReport("d2", "1", "status"), twinReport("d1", "2", "status"),
				twinReport("d1", "3", "status")},
			want:          []string{"d1/status=3", "d2/status=1"},
			wantCoalesced: 2,
		},
		{
			name: "a newer report with more properties replaces",
			max:  10,
			push: []model.Message{twinReport("d1", "1", "a"), twinReport("d1", "2", "a", "b")},
			want: []string{"d1/a=2,b=2"}, wantCoalesced: 1,
		},
		{
			name: "a newer report that lacks a property of the queued one does not replace it",
			max:  10,
			push: []model.Message{twinReport("d1", "1", "a", "b"), twinReport("d1", "2", "a"), twinReport("d1", "3", "a")},
			// The third replaces the second, the newest queued one for d1.
			want: []string{"d1/a=1,b=1", "d1/a=3"}, wantCoalesced: 1,
		},
		{
			name:          "state reports coalesce, separately from twin reports",
			max:           10,
			push:          []model.Message{stateReport("d1", "online"), twinReport("d1", "1", "s"), stateReport("d1", "offline")},
			want:          []string{"d1/state=offline", "d1/s=1"},
			wantCoalesced: 1,
		},
		{
			name: "events and control messages never coalesce",
			max:  10,
			push: []model.Message{event("e1"), event("e1"), nodeStatus("n1"), nodeStatus("n1")},
			want: []string{"default/nodepatch/n1", "default/nodepatch/n1", "default/event/e1", "default/event/e1"},
		},
		{
			name: "a full bulk lane drops its oldest, never control",
			max:  2,
			push: []model.Message{nodeStatus("n1"), twinReport("d1", "1", "s"), twinReport("d2", "1", "s"), podStatus("p1"),
				twinReport("d3", "1", "s"), twinReport("d2", "2", "s")},
			want:          []string{"default/nodepatch/n1", "default/podstatus/p1", "d2/s=2", "d3/s=1"},
			wantEvicted:   []string{"d1/s=1"},
			wantCoalesced: 1,
		},
		{
			name: "a full control lane drops its oldest, never bulk",
			max:  2,
			push: []model.Message{twinReport("d1", "1", "s"), podStatus("p1"), podStatus("p2"), nodeStatus("n1")},
			want: []string{"default/podstatus/p2", "default/nodepatch/n1", "d1/s=1"}, wantEvicted: []string{"default/podstatus/p1"},
		},
		{
			name: "an evicted report is no longer replaced",
			max:  1,
			push: []model.Message{twinReport("d1", "1", "s"), twinReport("d2", "1", "s"), twinReport("d1", "2", "s")},
			want: []string{"d1/s=2"}, wantEvicted: []string{"d1/s=1", "d2/s=1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newOutbox(tc.max)
			coalesced := 0
			var evicted []string
			for _, m := range tc.push {
				res := q.push(m)
				if res.coalesced {
					coalesced++
				}
				if res.evicted != nil {
					evicted = append(evicted, label(*res.evicted))
				}
			}
			got := drain(t, q)
			if !slices.Equal(got, tc.want) {
				t.Errorf("popped %q, want %q", got, tc.want)
			}
			if coalesced != tc.wantCoalesced {
				t.Errorf("coalesced %d, want %d", coalesced, tc.wantCoalesced)
			}
			if !slices.Equal(evicted, tc.wantEvicted) {
				t.Errorf("evicted %q, want %q", evicted, tc.wantEvicted)
			}
		})
	}
}

func drain(t *testing.T, q *outbox) []string {
	t.Helper()
	var got []string
	for q.len() > 0 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		m, l, err := q.pop(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if l != laneOf(&m) {
			t.Errorf("%s popped from lane %s", m.String(), l)
		}
		got = append(got, label(m))
	}
	return got
}

func TestOutboxPushFront(t *testing.T) {
	q := newOutbox(10)
	q.push(twinReport("d1", "1", "s"))
	q.push(podStatus("p1"))
	ctx := t.Context()
	ctl, _, _ := q.pop(ctx)
	bulk, _, _ := q.pop(ctx)
	// Taken but not sent (write failed, or the writer made way for control): back to the front of their lanes.
	q.push(twinReport("d2", "1", "s"))
	q.pushFront(bulk)
	q.push(podStatus("p2"))
	q.pushFront(ctl)
	// A report put back can still be replaced by a newer one of its device.
	if res := q.push(twinReport("d1", "2", "s")); !res.coalesced {
		t.Error("report put back was not replaced by a newer one")
	}
	want := []string{"default/podstatus/p1", "default/podstatus/p2", "d1/s=2", "d2/s=1"}
	if got := drain(t, q); !slices.Equal(got, want) {
		t.Errorf("popped %q, want %q", got, want)
	}
}

func TestOutboxPopWaits(t *testing.T) {
	q := newOutbox(10)
	got := make(chan string, 1)
	go func() {
		m, _, err := q.pop(t.Context())
		if err != nil {
			got <- err.Error()
			return
		}
		got <- label(m)
	}()
	select {
	case g := <-got:
		t.Fatalf("pop returned %q from an empty outbox", g)
	case <-time.After(20 * time.Millisecond):
	}
	q.push(event("e1"))
	select {
	case g := <-got:
		if g != "default/event/e1" {
			t.Errorf("pop = %q", g)
		}
	case <-time.After(waitTimeout):
		t.Fatal("pop did not wake up")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := q.pop(ctx); err == nil {
		t.Error("pop on a cancelled context succeeded")
	}
}

// TestControlNotHeldBehindBulk runs the writer against a slow budget (2 messages a second, burst 1): a node
// status queued behind a flood of device reports goes out next, without waiting for the bulk budget, and the
// reports follow at the budget's rate, coalesced per device.
func TestControlNotHeldBehindBulk(t *testing.T) {
	e := newEnv(t, func(c *v1alpha2.EdgeHub) { c.MessageQPS, c.MessageBurst = 2, 1 })
	c := e.conn()
	e.expectEvent(modules.MetaManager, model.ContentCloudConnected)
	isUpdate := func(m model.Message) bool {
		return m.Router.Operation == model.UpdateOperation || m.Router.Operation == model.PatchOperation
	}

	// 20 devices report 10 times each: at most one queued report per device, the first goes out at once.
	for v := range 10 {
		for d := range 20 {
			if err := e.bus.Send(e.ctx, modules.EdgeHub, twinReport(fmt.Sprintf("d%02d", d), fmt.Sprint(v), "s")); err != nil {
				t.Fatal(err)
			}
		}
	}
	first, _ := mustNext(t, c, isUpdate)
	if !strings.HasPrefix(first.Router.Resource, "device/") {
		t.Fatalf("first frame %s, want a device report", first.String())
	}
	waitFor(t, "reports to be queued and coalesced", func() bool {
		return e.metric("tether_edgehub_dropped_messages_total", "reason", "coalesced") >= 150
	})
	if n := e.metric("tether_edgehub_queued_messages", "lane", "bulk"); n > 20 {
		t.Errorf("bulk lane holds %v messages for 20 devices", n)
	}

	sent := time.Now()
	status := nodeStatus(testNode)
	if err := e.bus.Send(e.ctx, modules.EdgeHub, status); err != nil {
		t.Fatal(err)
	}
	next, _ := mustNext(t, c, isUpdate)
	if next.Header.ID != status.Header.ID {
		t.Fatalf("next frame %s, want the node status %s ahead of queued device reports", next.String(), status.Header.ID)
	}
	// The bulk budget has no token for another 500 ms; control has its own.
	if d := time.Since(sent); d > 300*time.Millisecond {
		t.Errorf("node status took %s behind device reports", d)
	}

	// The reports keep flowing at the budget's rate, each device with a newer value than its first.
	var devices []string
	for range 2 {
		m, _ := mustNext(t, c, isUpdate)
		if !strings.HasPrefix(m.Router.Resource, "device/") {
			t.Fatalf("frame %s, want a device report", m.String())
		}
		devices = append(devices, label(m))
	}
	t.Logf("reports after the node status: %v", devices)
	if e.metric("tether_edgehub_dropped_messages_total", "reason", "bulk_queue_full") != 0 {
		t.Error("bulk reports dropped although the lane had room")
	}
}
