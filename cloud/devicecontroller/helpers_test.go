package devicecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	tetherscheme "github.com/tether-edge/tether/pkg/apis/scheme"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/twin"
)

func TestMain(m *testing.M) {
	// klog's flush daemon is process-wide and started by klog itself. Informer goroutines are not ignored: the
	// controller must stop them.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// waitTimeout bounds every wait; reaching it is a failure, never part of the expected behaviour.
const waitTimeout = 10 * time.Second

// testNow is the controller's clock in tests.
var testNow = time.UnixMilli(1748779200123).UTC()

// recorder stands in for CloudHub: it keeps everything sent to module "cloudhub".
type recorder struct {
	bus *beehive.Bus

	mu     sync.Mutex
	msgs   []model.Message
	notify chan struct{} // closed and replaced on every new message
}

func (r *recorder) Name() string  { return modules.CloudHub }
func (r *recorder) Group() string { return modules.CloudHub }
func (r *recorder) Enable() bool  { return true }

func (r *recorder) Start(ctx context.Context) error {
	for {
		msg, err := r.bus.Receive(ctx, modules.CloudHub)
		if err != nil {
			return nil
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, msg)
		close(r.notify)
		r.notify = make(chan struct{})
		r.mu.Unlock()
	}
}

func (r *recorder) snapshot() ([]model.Message, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]model.Message(nil), r.msgs...), r.notify
}

type harness struct {
	t    *testing.T
	kube client.WithWatch // the fake API server as the test (the "web app") sees it, without interceptors
	bus  *beehive.Bus
	rec  *recorder
	ctx  context.Context
	seq  int // barrier generations
}

// start runs the controller and a recording "cloudhub" on a real bus until the test ends, and returns once the
// controller has announced the seeded devices and both its watches are open (the fake client does not replay
// changes made between an informer's list and its watch).
func start(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *harness {
	t.Helper()
	scheme, err := tetherscheme.New()
	must(t, err)
	kube := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()

	watching := make(chan struct{})
	var watches atomic.Int32
	funcs.Watch = func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
		w, err := c.Watch(ctx, list, opts...)
		if err == nil && watches.Add(1) == 2 {
			close(watching)
		}
		return w, err
	}

	bus := beehive.New(beehive.Options{})
	rec := &recorder{bus: bus, notify: make(chan struct{})}
	ctrl := New(Options{
		Bus:    bus,
		Client: interceptor.NewClient(kube, funcs),
		Config: v1alpha1.DeviceController{
			Enable: true,
			Buffer: map[string]int32{"updateDeviceStatus": 16, "deviceEvent": 1},
			Load:   map[string]int32{"updateDeviceStatusWorkers": 2},
		},
		Now: func() time.Time { return testNow },
	})
	ready := make(chan struct{})
	ctrl.onReady = func() { close(ready) }
	for _, m := range []beehive.Module{rec, ctrl} {
		must(t, bus.Register(m))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus run: %v", err)
		}
	})
	for _, c := range []chan struct{}{ready, watching} {
		select {
		case <-c:
		case <-time.After(waitTimeout):
			t.Fatal("timed out waiting for the controller to start")
		}
	}
	return &harness{t: t, kube: kube, bus: bus, rec: rec, ctx: ctx}
}

// waitFor returns the first message (in arrival order) matching pred, waiting for it.
func (h *harness) waitFor(what string, pred func(model.Message) bool) model.Message {
	h.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		msgs, notify := h.rec.snapshot()
		for _, m := range msgs {
			if pred(m) {
				return m
			}
		}
		select {
		case <-notify:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; got:\n%s", what, describe(msgs))
		}
	}
}

// messages returns what was sent for resources starting with prefix, in order.
func (h *harness) messages(prefix string) []model.Message {
	msgs, _ := h.rec.snapshot()
	var out []model.Message
	for _, m := range msgs {
		if len(m.Router.Resource) >= len(prefix) && m.Router.Resource[:len(prefix)] == prefix {
			out = append(out, m)
		}
	}
	return out
}

func describe(msgs []model.Message) string {
	s := ""
	for _, m := range msgs {
		data, _ := m.GetContentData()
		s += fmt.Sprintf("  %s %s parent=%s %s\n", m.Router.Operation, m.Router.Resource, m.Header.ParentID, data)
	}
	return s
}

// barrier makes sure every Device event that happened before it has been handled: it creates a device on node
// "barrier" and waits for its membership, which the single downstream loop sends in event order.
func (h *harness) barrier() {
	h.t.Helper()
	h.seq++
	name := fmt.Sprintf("barrier-%d", h.seq)
	must(h.t, h.kube.Create(h.ctx, device(name, "barrier")))
	h.waitFor("barrier "+name, func(m model.Message) bool {
		if m.Router.Resource != "node/barrier/membership" {
			return false
		}
		var c twin.MembershipUpdate
		return m.UnmarshalContent(&c) == nil && len(c.AddedDevices) == 1 && c.AddedDevices[0].ID == name
	})
}

// toEdge sends msg to devicecontroller as CloudHub forwards an edge message.
func (h *harness) toEdge(msg *model.Message) {
	h.t.Helper()
	must(h.t, h.bus.SendToGroup(h.ctx, modules.DeviceController, *msg))
}

// reply waits for the answer to req.
func (h *harness) reply(req *model.Message) model.Message {
	h.t.Helper()
	return h.waitFor("reply to "+req.Header.ID, func(m model.Message) bool { return m.Header.ParentID == req.Header.ID })
}

func (h *harness) get(name string) *v1alpha2.Device {
	h.t.Helper()
	d := &v1alpha2.Device{}
	must(h.t, h.kube.Get(h.ctx, client.ObjectKey{Namespace: "default", Name: name}, d))
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ---- content checks ----

// contentOf decodes a message content as the edge would see it on the wire, with the event id replaced by "ID".
func contentOf(t *testing.T, m model.Message) map[string]any {
	t.Helper()
	wire, err := json.Marshal(m)
	must(t, err)
	var back model.Message
	must(t, json.Unmarshal(wire, &back))
	var c map[string]any
	must(t, back.UnmarshalContent(&c))
	if id, ok := c["event_id"].(string); ok && id != "" {
		c["event_id"] = "ID"
	}
	return c
}

// checkContent compares m's content with want, a JSON document in which %[1]d stands for the test clock in ms.
func checkContent(t *testing.T, m model.Message, want string) {
	t.Helper()
	var w map[string]any
	must(t, json.Unmarshal([]byte(fmt.Sprintf(want, testNow.UnixMilli())), &w))
	got := contentOf(t, m)
	if !reflect.DeepEqual(got, w) {
		g, _ := json.Marshal(got)
		ww, _ := json.Marshal(w)
		t.Errorf("content of %s:\n got %s\nwant %s", m.Router.Resource, g, ww)
	}
}

func checkRoute(t *testing.T, m model.Message, group, op, res string) {
	t.Helper()
	r := m.Router
	if r.Source != modules.DeviceController || r.Group != group || r.Operation != op || r.Resource != res {
		t.Errorf("route = %+v, want source %s group %s op %s resource %s", r, modules.DeviceController, group, op, res)
	}
}

// ---- fixtures ----

// seedDevice is the tutorial's Device, read from the repository (namespace "default", as kubectl would set it).
func seedDevice(t *testing.T) *v1alpha2.Device {
	t.Helper()
	data, err := os.ReadFile("../../examples/counter-demo/crds/kubeedge-counter-instance.yaml")
	must(t, err)
	d := &v1alpha2.Device{}
	must(t, yaml.UnmarshalStrict(data, d))
	d.Namespace = "default"
	return d
}

func seedModel(t *testing.T) *v1alpha2.DeviceModel {
	t.Helper()
	data, err := os.ReadFile("../../examples/counter-demo/crds/kubeedge-counter-model.yaml")
	must(t, err)
	m := &v1alpha2.DeviceModel{}
	must(t, yaml.UnmarshalStrict(data, m))
	return m
}

func device(name, node string, twins ...v1alpha2.Twin) *v1alpha2.Device {
	return &v1alpha2.Device{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1alpha2.DeviceSpec{
			DeviceModelRef: &corev1.LocalObjectReference{Name: "counter-model"},
			NodeSelector:   selector(node),
		},
		Status: v1alpha2.DeviceStatus{Twins: twins},
	}
}

func selector(values ...string) *corev1.NodeSelector {
	return &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "", Operator: corev1.NodeSelectorOpIn, Values: values}},
	}}}
}

func deviceTwin(name, desired, typ string) v1alpha2.Twin {
	t := v1alpha2.Twin{PropertyName: name, Desired: v1alpha2.TwinProperty{Value: desired}}
	if typ != "" {
		t.Desired.Metadata = map[string]string{"type": typ}
	}
	return t
}
