package devicecontroller

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/twin"
)

// edgeReport is a message as DeviceTwin sends it and CloudHub forwards it: source twin, node prefix added, the
// content as raw JSON.
func edgeReport(res, content string) *model.Message {
	return model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupResource, res, model.UpdateOperation).
		FillBody(json.RawMessage(content))
}

// The counter mapper's report as DeviceTwin forwards it (counter-demo §5.2).
const countReport = `{"event_id":"e1","timestamp":1748779201000,"twin":{"status":{
	"actual":{"value":"5","metadata":{"timestamp":1748779200999}},"optional":false,
	"metadata":{"type":"string"},"actual_version":{"cloud":0,"edge":3}}}}`

func TestEdgeUpdated(t *testing.T) {
	tests := []struct {
		name    string
		res     string
		content string
		want    []v1alpha2.Twin
	}{
		{
			name: "reported value", res: "node/edge1/device/counter/twin/edge_updated", content: countReport,
			want: []v1alpha2.Twin{{PropertyName: "status",
				Desired:  v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string"}},
				Reported: v1alpha2.TwinProperty{Value: "5", Metadata: map[string]string{"type": "string", "timestamp": "1748779200999"}}}},
		},
		{
			name: "namespaced device id", res: "node/edge1/device/default/counter/twin/edge_updated", content: countReport,
			want: []v1alpha2.Twin{{PropertyName: "status",
				Desired:  v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string"}},
				Reported: v1alpha2.TwinProperty{Value: "5", Metadata: map[string]string{"type": "string", "timestamp": "1748779200999"}}}},
		},
		{
			name: "new property and expected-only twin", res: "node/edge1/device/counter/twin/edge_updated",
			content: `{"event_id":"e2","timestamp":1,"twin":{
				"count":{"actual":{"value":"12","metadata":{"timestamp":42}},"metadata":{"type":"int"}},
				"status":{"expected":{"value":"HACK"},"metadata":{"type":"string"}}}}`,
			want: []v1alpha2.Twin{
				{PropertyName: "status",
					Desired:  v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string"}},
					Reported: v1alpha2.TwinProperty{Value: "0", Metadata: map[string]string{"type": "string"}}},
				{PropertyName: "count",
					Reported: v1alpha2.TwinProperty{Value: "12", Metadata: map[string]string{"type": "int", "timestamp": "42"}}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, interceptor.Funcs{}, seedModel(t), seedDevice(t))
			req := edgeReport(tc.res, tc.content)
			h.toEdge(req)
			checkOK(t, h.reply(req))
			if got := h.get("counter").Status.Twins; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("twins = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The web app changes desired between the controller's read and its write: the write conflicts, is redone on
// the fresh object, and both changes survive.
func TestEdgeUpdatedConcurrentDesired(t *testing.T) {
	var patches atomic.Int32
	funcs := interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if patches.Add(1) == 1 {
				d := &v1alpha2.Device{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(obj), d); err != nil {
					return err
				}
				d.Status.Twins[0].Desired.Value = "ON"
				if err := c.Update(ctx, d); err != nil {
					return err
				}
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	}
	h := start(t, funcs, seedModel(t), seedDevice(t))
	req := edgeReport("node/edge1/device/counter/twin/edge_updated", countReport)
	h.toEdge(req)
	checkOK(t, h.reply(req))
	if n := patches.Load(); n != 2 {
		t.Errorf("patched %d times, want 2 (a conflict, then success)", n)
	}
	got := h.get("counter").Status.Twins
	if len(got) != 1 || got[0].Desired.Value != "ON" || got[0].Reported.Value != "5" {
		t.Errorf("twins = %+v, want desired ON (web app) and reported 5 (edge)", got)
	}
	// The desired change reaches the edge; the controller's own write does not echo anything.
	u := h.waitFor("cloud_updated", func(m model.Message) bool {
		return m.Router.Resource == "node/edge1/device/counter/twin/cloud_updated"
	})
	var c twin.DeviceTwinUpdate
	must(t, u.UnmarshalContent(&c))
	if v := c.Twin["status"].Expected.Value; v == nil || *v != "ON" {
		t.Errorf("cloud_updated expected = %v, want ON", v)
	}
	h.barrier()
	if n := len(h.messages("node/edge1/device/")); n != 1 {
		t.Errorf("want one twin update for edge1, got:\n%s", describe(h.messages("node/edge1/device/")))
	}
}

// Reports that can never be applied are answered with an error (which stops the edge resending them).
func TestRejectedReports(t *testing.T) {
	tests := []struct {
		name    string
		res     string
		content any
		want    string
	}{
		{"unknown device", "node/edge1/device/ghost/twin/edge_updated", json.RawMessage(countReport), `device "ghost" not found`},
		{"unknown namespaced device", "node/edge1/device/other/counter/twin/edge_updated", json.RawMessage(countReport),
			"device other/counter not found"},
		{"device of another node", "node/edge2/device/counter/twin/edge_updated", json.RawMessage(countReport),
			`device "counter" is not bound to node "edge2"`},
		{"malformed JSON", "node/edge1/device/counter/twin/edge_updated", "{not json", "twin report for device"},
		{"state without state", "node/edge1/device/counter/state/update", `{"event_id":"e","timestamp":1}`, "has no state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, interceptor.Funcs{}, seedModel(t), seedDevice(t))
			before := h.get("counter")
			req := model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupResource, tc.res, model.UpdateOperation).FillBody(tc.content)
			h.toEdge(req)
			r := h.reply(req)
			node := strings.Split(tc.res, "/")[1]
			checkRoute(t, r, model.GroupTwin, model.ResponseOperation, "node/"+node+"/twin")
			err, ok := r.Content.(error)
			if !ok || !errors.Is(err, errRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reply content = %#v, want an error mentioning %q", r.Content, tc.want)
			}
			var wire string
			must(t, json.Unmarshal(mustJSON(t, r.Content), &wire))
			if wire != err.Error() {
				t.Errorf("error on the wire = %q, want the error text", wire)
			}
			if after := h.get("counter"); after.ResourceVersion != before.ResourceVersion {
				t.Errorf("device was written: %+v", after.Status)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	must(t, err)
	return data
}

// Messages devicecontroller does not handle are ignored without an answer and without stopping the module.
func TestIgnoredMessages(t *testing.T) {
	h := start(t, interceptor.Funcs{}, seedDevice(t))
	for _, res := range []string{"bogus", "node/edge1/device/counter/twin/get", "node/edge1/membership"} {
		h.toEdge(edgeReport(res, "{}"))
	}
	req := edgeReport("node/edge1/device/counter/twin/edge_updated", countReport)
	h.toEdge(req)
	checkOK(t, h.reply(req))
	all, _ := h.rec.snapshot()
	for _, m := range all {
		if m.Header.ParentID != "" && m.Header.ParentID != req.Header.ID {
			t.Errorf("unexpected reply:\n%s", describe([]model.Message{m}))
		}
	}
}

// Device state reports become annotations, in both content shapes edges have used.
func TestStateUpdate(t *testing.T) {
	tests := []struct {
		name           string
		content        any
		state, lastOne string
	}{
		{"v1.7 string content", `{"event_id":"","timestamp":0,"state":"online"}`, "online", ""},
		{"device object", json.RawMessage(`{"event_id":"e","timestamp":1,"device":{"name":"counter","state":"offline","lastOnlineTime":"2025-06-01T12:00:00Z"}}`),
			"offline", "2025-06-01T12:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, interceptor.Funcs{}, seedDevice(t))
			req := model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupResource,
				"node/edge1/device/counter/state/update", model.UpdateOperation).FillBody(tc.content)
			h.toEdge(req)
			checkOK(t, h.reply(req))
			d := h.get("counter")
			if d.Annotations[AnnotationState] != tc.state || d.Annotations[AnnotationLastOnline] != tc.lastOne {
				t.Errorf("annotations = %v, want state %q last online %q", d.Annotations, tc.state, tc.lastOne)
			}
			if d.Status.Twins[0].Desired.Value != "OFF" || d.Status.Twins[0].Reported.Value != "0" {
				t.Errorf("twins changed: %+v", d.Status.Twins)
			}
		})
	}
}

// A device name used in two namespaces on one node resolves to "default"; elsewhere it is ambiguous.
func TestResolveByName(t *testing.T) {
	inNS := func(ns, name, node string) *v1alpha2.Device {
		d := device(name, node, deviceTwin("status", "OFF", "string"))
		d.Namespace = ns
		return d
	}
	h := start(t, interceptor.Funcs{},
		inNS("default", "dup", "edge1"), inNS("lab", "dup", "edge1"),
		inNS("a", "twice", "edge1"), inNS("b", "twice", "edge1"),
		inNS("lab", "only", "edge1"), inNS("default", "only", "edge2"))
	tests := []struct {
		name, device, want string // want: namespace written, or error text
	}{
		{"default wins", "dup", "default"},
		{"ambiguous", "twice", "ambiguous"},
		{"the one on this node", "only", "lab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := edgeReport("node/edge1/device/"+tc.device+"/twin/edge_updated", countReport)
			h.toEdge(req)
			r := h.reply(req)
			if err, ok := r.Content.(error); ok {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("reply error %v, want %q", err, tc.want)
				}
				return
			}
			checkOK(t, r)
			d := &v1alpha2.Device{}
			must(t, h.kube.Get(h.ctx, client.ObjectKey{Namespace: tc.want, Name: tc.device}, d))
			if d.Status.Twins[0].Reported.Value != "5" {
				t.Errorf("%s/%s twins = %+v, want reported 5", tc.want, tc.device, d.Status.Twins)
			}
		})
	}
}

func checkOK(t *testing.T, r model.Message) {
	t.Helper()
	checkRoute(t, r, model.GroupTwin, model.ResponseOperation, "node/edge1/twin")
	if r.Content != contentOK {
		t.Errorf("reply content = %#v, want %q", r.Content, contentOK)
	}
}
