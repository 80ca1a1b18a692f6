package devicecontroller

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/twin"
)

// The tutorial's Device on edge1 is announced with its twin and the resourceVersion as cloud version.
func TestSeedDeviceMembership(t *testing.T) {
	h := start(t, interceptor.Funcs{}, seedModel(t), seedDevice(t))
	m := h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
	checkRoute(t, m, model.GroupTwin, model.UpdateOperation, "node/edge1/membership")
	rv := h.get("counter").ResourceVersion
	if rv != "999" {
		t.Fatalf("fake client gave resourceVersion %q; the expected content below assumes 999", rv)
	}
	checkContent(t, m, `{"event_id":"ID","timestamp":%[1]d,
		"added_devices":[{"id":"counter","name":"counter","description":"counter",
			"twin":{"status":{"expected":{"value":"OFF","metadata":{"timestamp":%[1]d}},"optional":false,
				"metadata":{"type":"string"},"expected_version":{"cloud":999,"edge":0}}}}],
		"removed_devices":[]}`)
	if n := len(h.messages("node/edge1/")); n != 1 {
		t.Errorf("sent %d messages to edge1, want 1:\n%s", n, describe(h.messages("node/edge1/")))
	}
}

// Changes of desired values send only what changed; reported values and metadata changes send nothing.
func TestDesiredChanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *v1alpha2.Device)
		want   string // cloud_updated content, "" for no message
	}{
		{
			name:   "desired value of one twin",
			change: func(d *v1alpha2.Device) { d.Status.Twins[0].Desired.Value = "ON" },
			want: `{"event_id":"ID","timestamp":%[1]d,"twin":{"status":{"expected":{"value":"ON","metadata":{"timestamp":%[1]d}},
				"optional":false,"metadata":{"type":"string"},"expected_version":{"cloud":1000,"edge":0}}}}`,
		},
		{
			name:   "desired type",
			change: func(d *v1alpha2.Device) { d.Status.Twins[1].Desired.Metadata = map[string]string{"type": "float"} },
			want: `{"event_id":"ID","timestamp":%[1]d,"twin":{"limit":{"expected":{"value":"10","metadata":{"timestamp":%[1]d}},
				"optional":false,"metadata":{"type":"float"},"expected_version":{"cloud":1000,"edge":0}}}}`,
		},
		{
			name:   "twin added",
			change: func(d *v1alpha2.Device) { d.Status.Twins = append(d.Status.Twins, deviceTwin("mode", "auto", "")) },
			want: `{"event_id":"ID","timestamp":%[1]d,"twin":{"mode":{"expected":{"value":"auto","metadata":{"timestamp":%[1]d}},
				"optional":false,"metadata":{"type":"string"},"expected_version":{"cloud":1000,"edge":0}}}}`,
		},
		{
			name:   "twin removed",
			change: func(d *v1alpha2.Device) { d.Status.Twins = d.Status.Twins[:1] },
			want: `{"event_id":"ID","timestamp":%[1]d,"twin":{"limit":{"expected":{"value":"10","metadata":{"timestamp":%[1]d}},
				"optional":false,"metadata":{"type":"deleted"},"expected_version":{"cloud":1000,"edge":0}}}}`,
		},
		{
			name: "reported value only",
			change: func(d *v1alpha2.Device) {
				d.Status.Twins[0].Reported = v1alpha2.TwinProperty{Value: "7", Metadata: map[string]string{"type": "string"}}
			},
		},
		{
			name:   "labels only",
			change: func(d *v1alpha2.Device) { d.Labels = map[string]string{"team": "a"} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := device("counter", "edge1", deviceTwin("status", "OFF", "string"), deviceTwin("limit", "10", "int"))
			h := start(t, interceptor.Funcs{}, seedModel(t), dev)
			h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
			d := h.get("counter")
			tc.change(d)
			must(t, h.kube.Update(h.ctx, d))
			h.barrier()
			msgs := h.messages("node/edge1/")[1:]
			if tc.want == "" {
				if len(msgs) != 0 {
					t.Fatalf("want no message, got:\n%s", describe(msgs))
				}
				return
			}
			if len(msgs) != 1 {
				t.Fatalf("want one twin update, got:\n%s", describe(msgs))
			}
			checkRoute(t, msgs[0], model.GroupTwin, model.UpdateOperation, "node/edge1/device/counter/twin/cloud_updated")
			checkContent(t, msgs[0], tc.want)
		})
	}
}

// Deleting a device, or moving it to another node, removes it from the old node (and adds it to the new one).
func TestUnbinding(t *testing.T) {
	removal := `{"event_id":"ID","timestamp":%[1]d,"added_devices":[],
		"removed_devices":[{"id":"counter","name":"counter","description":"counter"}]}`
	tests := []struct {
		name   string
		change func(h *harness, d *v1alpha2.Device)
		want   map[string]string // node prefix → membership content after the initial one
	}{
		{
			name:   "deleted",
			change: func(h *harness, d *v1alpha2.Device) { must(h.t, h.kube.Delete(h.ctx, d)) },
			want:   map[string]string{"node/edge1/": removal},
		},
		{
			name: "moved to edge2",
			change: func(h *harness, d *v1alpha2.Device) {
				d.Spec.NodeSelector = selector("edge2")
				must(h.t, h.kube.Update(h.ctx, d))
			},
			want: map[string]string{
				"node/edge1/": removal,
				"node/edge2/": `{"event_id":"ID","timestamp":%[1]d,
					"added_devices":[{"id":"counter","name":"counter","description":"counter",
						"twin":{"status":{"expected":{"value":"OFF","metadata":{"timestamp":%[1]d}},"optional":false,
							"metadata":{"type":"string"},"expected_version":{"cloud":1000,"edge":0}}}}],
					"removed_devices":[]}`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, interceptor.Funcs{}, seedModel(t), seedDevice(t))
			h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
			tc.change(h, h.get("counter"))
			h.barrier()
			for prefix, want := range tc.want {
				msgs := h.messages(prefix)
				if prefix == "node/edge1/" {
					msgs = msgs[1:]
				}
				if len(msgs) != 1 {
					t.Fatalf("%s: want one membership message, got:\n%s", prefix, describe(msgs))
				}
				checkRoute(t, msgs[0], model.GroupTwin, model.UpdateOperation, prefix+"membership")
				checkContent(t, msgs[0], want)
			}
			if tc.name == "moved to edge2" {
				all, _ := h.rec.snapshot()
				if i, j := indexOf(all, "node/edge1/membership", 1), indexOf(all, "node/edge2/membership", 0); i > j {
					t.Errorf("edge2 got the device (message %d) before edge1 lost it (message %d)", j, i)
				}
			}
		})
	}
}

// indexOf returns the index of the n-th (0-based) message for res.
func indexOf(msgs []model.Message, res string, n int) int {
	for i, m := range msgs {
		if m.Router.Resource == res {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}

// Devices that name no single node get a Warning event and no membership, and never stop the controller.
func TestInvalidNodeSelector(t *testing.T) {
	tests := []struct {
		name     string
		selector *corev1.NodeSelector
		want     string // in the event message
	}{
		{"no selector", nil, "spec.nodeSelector is missing"},
		{"no terms", &corev1.NodeSelector{}, "has no nodeSelectorTerms"},
		{"no expressions", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}, "has no matchExpressions"},
		{"exists without values", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpExists}},
		}}}, `(operator "Exists") has no values`},
		{"two values", selector("edge1", "edge2"), `lists 2 values`},
		{"not a node name", selector("a/b"), `"a/b" is not a node name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, interceptor.Funcs{})
			d := device("bad", "x", deviceTwin("status", "OFF", "string"))
			d.Spec.NodeSelector = tc.selector
			must(t, h.kube.Create(h.ctx, d))
			h.barrier()
			checkOnlyBarriers(t, h)
			checkEvents(t, h, "bad", tc.want)

			// Fixing the selector binds the device.
			d = h.get("bad")
			d.Spec.NodeSelector = selector("edge1")
			must(t, h.kube.Update(h.ctx, d))
			h.waitFor("membership after fix", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
		})
	}
}

// A bound device whose selector becomes invalid is removed from its node; the problem is reported once.
func TestSelectorBecomesInvalid(t *testing.T) {
	h := start(t, interceptor.Funcs{}, seedDevice(t))
	h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
	d := h.get("counter")
	d.Spec.NodeSelector.NodeSelectorTerms[0].MatchExpressions[0].Values = nil
	must(t, h.kube.Update(h.ctx, d))
	d = h.get("counter")
	d.Status.Twins[0].Desired.Value = "ON" // another change of the still-invalid device: no second event
	must(t, h.kube.Update(h.ctx, d))
	h.barrier()
	msgs := h.messages("node/edge1/")
	if len(msgs) != 2 {
		t.Fatalf("want membership add and removal for edge1, got:\n%s", describe(msgs))
	}
	checkContent(t, msgs[1], `{"event_id":"ID","timestamp":%[1]d,"added_devices":[],
		"removed_devices":[{"id":"counter","name":"counter","description":"counter"}]}`)
	checkEvents(t, h, "counter", "has no values")
}

func checkOnlyBarriers(t *testing.T, h *harness) {
	t.Helper()
	all, _ := h.rec.snapshot()
	for _, m := range all {
		if !strings.HasPrefix(m.Router.Resource, "node/barrier/") {
			t.Errorf("unexpected message:\n%s", describe([]model.Message{m}))
		}
	}
}

// checkEvents wants exactly one InvalidNodeSelector Warning for device, mentioning want.
func checkEvents(t *testing.T, h *harness, device, want string) {
	t.Helper()
	var evs corev1.EventList
	must(t, h.kube.List(h.ctx, &evs, client.InNamespace("default")))
	var got []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == device {
			got = append(got, e)
		}
	}
	if len(got) != 1 {
		t.Fatalf("want one event for %s, got %+v", device, got)
	}
	e := got[0]
	if e.Reason != ReasonInvalidNodeSelector || e.Type != corev1.EventTypeWarning || e.InvolvedObject.Kind != "Device" ||
		e.InvolvedObject.APIVersion != "devices.kubeedge.io/v1alpha2" || e.Source.Component != modules.DeviceController ||
		!strings.Contains(e.Message, want) {
		t.Errorf("event = reason %q type %q object %+v source %+v message %q; want %s Warning mentioning %q",
			e.Reason, e.Type, e.InvolvedObject, e.Source, e.Message, ReasonInvalidNodeSelector, want)
	}
}

// A connecting node gets its complete device list again: as membership/detail (a replacement, so devices it
// should no longer have go) and as a membership update.
func TestConnectedResync(t *testing.T) {
	other := device("other", "edge2", deviceTwin("status", "ON", "string"))
	h := start(t, interceptor.Funcs{}, seedModel(t), seedDevice(t), other)
	h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
	h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge2/membership" })

	connected := func(node string) {
		h.toEdge(model.NewMessage("").BuildRouter(modules.CloudHub, model.GroupResource, "node/"+node, model.ConnectedOperation).
			FillBody(map[string]any{"event_type": "connected", "client_id": node}))
	}
	connected("edge1")
	connected("empty")
	h.waitFor("detail for empty", func(m model.Message) bool { return m.Router.Resource == "node/empty/membership/detail" })

	device := `{"id":"counter","name":"counter","description":"counter",
		"twin":{"status":{"expected":{"value":"OFF","metadata":{"timestamp":%[1]d}},"optional":false,
			"metadata":{"type":"string"},"expected_version":{"cloud":999,"edge":0}}}}`
	msgs := h.messages("node/edge1/")
	if len(msgs) != 3 {
		t.Fatalf("want initial membership, detail and membership for edge1, got:\n%s", describe(msgs))
	}
	checkRoute(t, msgs[1], model.GroupTwin, model.UpdateOperation, "node/edge1/membership/detail")
	checkContent(t, msgs[1], `{"event_id":"ID","timestamp":%[1]d,"devices":[`+device+`]}`)
	checkRoute(t, msgs[2], model.GroupTwin, model.UpdateOperation, "node/edge1/membership")
	checkContent(t, msgs[2], `{"event_id":"ID","timestamp":%[1]d,"added_devices":[`+device+`],"removed_devices":[]}`)

	empty := h.messages("node/empty/")
	if len(empty) != 1 {
		t.Fatalf("want only a detail message for a node without devices, got:\n%s", describe(empty))
	}
	checkContent(t, empty[0], `{"event_id":"ID","timestamp":%[1]d,"devices":[]}`)

	// The v1.7 edge's own request after reconnecting has the same effect.
	h.toEdge(model.NewMessage("").BuildRouter(modules.DeviceTwin, model.GroupResource, "node/edge2/membership/detail", model.GetOperation).
		FillBody(`{"event_type":"group_membership_event","event_id":"e","group_id":"edge2","operation":"detail","timestamp":1}`))
	h.waitFor("detail for edge2", func(m model.Message) bool { return m.Router.Resource == "node/edge2/membership/detail" })
}

// Twin types fall back to the model's property type, mapped to what edges accept, and follow model changes.
func TestModelTypes(t *testing.T) {
	model1 := seedModel(t)
	model1.Spec.Properties = append(model1.Spec.Properties,
		v1alpha2.DeviceProperty{Name: "temp", Type: v1alpha2.PropertyType{Double: &v1alpha2.PropertyTypeDouble{AccessMode: v1alpha2.ReadOnly}}})
	h := start(t, interceptor.Funcs{}, model1, device("thermo", "edge1", deviceTwin("temp", "", ""), deviceTwin("status", "OFF", "")))
	m := h.waitFor("membership", func(m model.Message) bool { return m.Router.Resource == "node/edge1/membership" })
	var c twin.MembershipUpdate
	must(t, m.UnmarshalContent(&c))
	if got := c.AddedDevices[0].Twin["temp"].Metadata.Type; got != "float" {
		t.Errorf("double property announced as %q, want float", got)
	}
	if got := c.AddedDevices[0].Twin["status"].Metadata.Type; got != "string" {
		t.Errorf("string property announced as %q, want string", got)
	}

	dm := &v1alpha2.DeviceModel{}
	must(t, h.kube.Get(context.Background(), client.ObjectKeyFromObject(model1), dm))
	dm.Spec.Properties[0].Type = v1alpha2.PropertyType{Int: &v1alpha2.PropertyTypeInt64{AccessMode: v1alpha2.ReadWrite}}
	must(t, h.kube.Update(h.ctx, dm))
	u := h.waitFor("cloud_updated", func(m model.Message) bool {
		return m.Router.Resource == "node/edge1/device/thermo/twin/cloud_updated"
	})
	checkContent(t, u, `{"event_id":"ID","timestamp":%[1]d,"twin":{"status":{"expected":{"value":"OFF","metadata":{"timestamp":%[1]d}},
		"optional":false,"metadata":{"type":"int"},"expected_version":{"cloud":999,"edge":0}}}}`)
}

// Edges know devices by bare name: removing one of two same-named devices on a node announces the other again.
func TestSameNameOnOneNode(t *testing.T) {
	lab := device("dup", "edge1", deviceTwin("status", "LAB", "string"))
	lab.Namespace = "lab"
	h := start(t, interceptor.Funcs{}, device("dup", "edge1", deviceTwin("status", "OFF", "string")), lab)
	must(t, h.kube.Delete(h.ctx, h.get("dup")))
	h.barrier()
	msgs := h.messages("node/edge1/")
	if len(msgs) != 4 {
		t.Fatalf("want two adds, a removal and a re-add, got:\n%s", describe(msgs))
	}
	checkContent(t, msgs[2], `{"event_id":"ID","timestamp":%[1]d,"added_devices":[],"removed_devices":[{"id":"dup","name":"dup"}]}`)
	checkContent(t, msgs[3], `{"event_id":"ID","timestamp":%[1]d,"removed_devices":[],
		"added_devices":[{"id":"dup","name":"dup","twin":{"status":{"expected":{"value":"LAB","metadata":{"timestamp":%[1]d}},
			"optional":false,"metadata":{"type":"string"},"expected_version":{"cloud":999,"edge":0}}}}]}`)
}
