package device

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/apis/scheme"
)

var key = types.NamespacedName{Namespace: "default", Name: "counter"}

// instance is crds/kubeedge-counter-instance.yaml as the API server stores it.
func instance() *v1alpha2.Device {
	return &v1alpha2.Device{
		ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, Labels: map[string]string{"description": "counter"}},
		Spec: v1alpha2.DeviceSpec{
			DeviceModelRef: &corev1.LocalObjectReference{Name: "counter-model"},
			NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"edge1"}}}}}},
		},
		Status: v1alpha2.DeviceStatus{Twins: []v1alpha2.Twin{{
			PropertyName: "status",
			Desired:      v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string"}},
			Reported:     v1alpha2.TwinProperty{Value: "0", Metadata: map[string]string{"type": "string"}},
		}}},
	}
}

func withTwins(twins ...v1alpha2.Twin) *v1alpha2.Device {
	d := instance()
	d.Status.Twins = twins
	return d
}

func twinOf(name, desired, reported string) v1alpha2.Twin {
	return v1alpha2.Twin{PropertyName: name,
		Desired:  v1alpha2.TwinProperty{Value: desired, Metadata: map[string]string{"type": "string"}},
		Reported: v1alpha2.TwinProperty{Value: reported, Metadata: map[string]string{"type": "string", "timestamp": "1700000000000"}}}
}

func newClient(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	t.Helper()
	s, err := scheme.New()
	if err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

func newTwin(t *testing.T, c client.Client) *Twin {
	t.Helper()
	tw, err := New(c, key.Namespace, key.Name, "status")
	if err != nil {
		t.Fatal(err)
	}
	tw.now = func() time.Time { return time.UnixMilli(1761000000123) }
	return tw
}

func get(t *testing.T, c client.Client) *v1alpha2.Device {
	t.Helper()
	d := &v1alpha2.Device{}
	if err := c.Get(context.Background(), key, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNewValidates(t *testing.T) {
	c := newClient(t, nil)
	for _, tc := range []struct {
		name          string
		c             client.Client
		ns, dev, prop string
	}{
		{"nil client", nil, "default", "counter", "status"},
		{"no namespace", c, "", "counter", "status"},
		{"no name", c, "default", "", "status"},
		{"no property", c, "default", "counter", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.c, tc.ns, tc.dev, tc.prop); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestSetDesired(t *testing.T) {
	const ts = "1761000000123"
	other := twinOf("other", "x", "y")
	for _, tc := range []struct {
		name    string
		dev     *v1alpha2.Device
		command string
		want    []v1alpha2.Twin
	}{{
		name:    "ON sets only desired of the tutorial's instance",
		dev:     instance(),
		command: On,
		want: []v1alpha2.Twin{{PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string", "timestamp": ts}},
			Reported: v1alpha2.TwinProperty{Value: "0", Metadata: map[string]string{"type": "string"}}}},
	}, {
		name:    "OFF keeps a running count",
		dev:     withTwins(twinOf("status", "ON", "17")),
		command: Off,
		want: []v1alpha2.Twin{{PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string", "timestamp": ts}},
			Reported: v1alpha2.TwinProperty{Value: "17", Metadata: map[string]string{"type": "string", "timestamp": "1700000000000"}}}},
	}, {
		name:    "ON again is written again (no in-memory guard)",
		dev:     withTwins(twinOf("status", "ON", "3")),
		command: On,
		want: []v1alpha2.Twin{{PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string", "timestamp": ts}},
			Reported: v1alpha2.TwinProperty{Value: "3", Metadata: map[string]string{"type": "string", "timestamp": "1700000000000"}}}},
	}, {
		name:    "twin at index 1; other twins untouched",
		dev:     withTwins(other, twinOf("status", "OFF", "0")),
		command: On,
		want: []v1alpha2.Twin{other, {PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string", "timestamp": ts}},
			Reported: v1alpha2.TwinProperty{Value: "0", Metadata: map[string]string{"type": "string", "timestamp": "1700000000000"}}}},
	}, {
		name: "twin without a desired side gets one",
		dev: withTwins(v1alpha2.Twin{PropertyName: "status",
			Reported: v1alpha2.TwinProperty{Value: "5", Metadata: map[string]string{"type": "string"}}}),
		command: On,
		want: []v1alpha2.Twin{{PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string", "timestamp": ts}},
			Reported: v1alpha2.TwinProperty{Value: "5", Metadata: map[string]string{"type": "string"}}}},
	}, {
		name: "desired without metadata: value only",
		dev: withTwins(v1alpha2.Twin{PropertyName: "status", Desired: v1alpha2.TwinProperty{Value: "OFF"},
			Reported: v1alpha2.TwinProperty{Value: "0"}}),
		command: On,
		want: []v1alpha2.Twin{{PropertyName: "status", Desired: v1alpha2.TwinProperty{Value: "ON"},
			Reported: v1alpha2.TwinProperty{Value: "0"}}},
	}, {
		name:    "missing twin is appended",
		dev:     withTwins(other),
		command: On,
		want: []v1alpha2.Twin{other, {PropertyName: "status",
			Desired: v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string", "timestamp": ts}}}},
	}, {
		name:    "device without twins gets one",
		dev:     withTwins(),
		command: Off,
		want: []v1alpha2.Twin{{PropertyName: "status",
			Desired: v1alpha2.TwinProperty{Value: "OFF", Metadata: map[string]string{"type": "string", "timestamp": ts}}}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, nil, tc.dev)
			if err := newTwin(t, c).SetDesired(context.Background(), tc.command); err != nil {
				t.Fatal(err)
			}
			got := get(t, c)
			assertTwins(t, got.Status.Twins, tc.want)
			if got.Spec.NodeSelector == nil || got.Labels["description"] != "counter" {
				t.Errorf("spec or labels changed: %+v %v", got.Spec, got.Labels)
			}
		})
	}
}

func assertTwins(t *testing.T, got, want []v1alpha2.Twin) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("twins = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.PropertyName != w.PropertyName || !sameProp(g.Desired, w.Desired) || !sameProp(g.Reported, w.Reported) {
			t.Errorf("twin %d = %+v, want %+v", i, g, w)
		}
	}
}

func sameProp(a, b v1alpha2.TwinProperty) bool {
	if a.Value != b.Value || len(a.Metadata) != len(b.Metadata) {
		return false
	}
	for k, v := range b.Metadata {
		if a.Metadata[k] != v {
			return false
		}
	}
	return true
}

// TestSetDesiredKeepsConcurrentReport: the device controller writes a new count between our read and our
// patch. The original demo's merge patch of the whole list put its stale (even fake) reported value back.
func TestSetDesiredKeepsConcurrentReport(t *testing.T) {
	var once sync.Once
	var c client.WithWatch
	c = newClient(t, &interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			once.Do(func() {
				d := &v1alpha2.Device{}
				if err := cl.Get(ctx, key, d); err != nil {
					t.Error(err)
					return
				}
				d.Status.Twins[0].Reported.Value = "42"
				if err := cl.Update(ctx, d); err != nil {
					t.Error(err)
				}
			})
			return cl.Patch(ctx, obj, p, opts...)
		},
	}, withTwins(twinOf("status", "ON", "41")))
	if err := newTwin(t, c).SetDesired(context.Background(), Off); err != nil {
		t.Fatal(err)
	}
	got := get(t, c).Status.Twins[0]
	if got.Desired.Value != "OFF" || got.Reported.Value != "42" {
		t.Fatalf("twin = %+v, want desired OFF and the concurrent reported 42", got)
	}
}

// TestSetDesiredRetriesReorderedTwins: the twins list changes order between read and patch; the "test" of
// the property name fails and the command is retried on a fresh read instead of writing the wrong twin.
func TestSetDesiredRetriesReorderedTwins(t *testing.T) {
	patches := 0
	c := newClient(t, &interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			patches++
			if patches == 1 {
				d := &v1alpha2.Device{}
				if err := cl.Get(ctx, key, d); err != nil {
					return err
				}
				d.Status.Twins[0], d.Status.Twins[1] = d.Status.Twins[1], d.Status.Twins[0]
				if err := cl.Update(ctx, d); err != nil {
					return err
				}
			}
			return cl.Patch(ctx, obj, p, opts...)
		},
	}, withTwins(twinOf("status", "OFF", "0"), twinOf("other", "x", "y")))
	if err := newTwin(t, c).SetDesired(context.Background(), On); err != nil {
		t.Fatal(err)
	}
	if patches != 2 {
		t.Errorf("patches = %d, want 2 (one failed test, one retry)", patches)
	}
	twins := get(t, c).Status.Twins
	if twins[0].PropertyName != "other" || twins[0].Desired.Value != "x" {
		t.Errorf("other twin changed: %+v", twins[0])
	}
	if twins[1].PropertyName != "status" || twins[1].Desired.Value != "ON" || twins[1].Reported.Value != "0" {
		t.Errorf("status twin = %+v, want desired ON, reported 0", twins[1])
	}
}

// TestReappliedInstance is kubeedge/examples#92: after ON, the instance YAML is applied again (desired back
// to OFF); STATUS must say OFF and ON must work again.
func TestReappliedInstance(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, nil, instance())
	tw := newTwin(t, c)
	if err := tw.SetDesired(ctx, On); err != nil {
		t.Fatal(err)
	}
	// kubectl apply of the unchanged YAML restores its status block.
	d := get(t, c)
	d.Status = instance().Status
	if err := c.Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st, err := tw.Status(ctx); err != nil || st != (Status{Status: "OFF", Value: "0"}) {
		t.Fatalf("Status after re-apply = %+v, %v; want OFF, 0", st, err)
	}
	if err := tw.SetDesired(ctx, On); err != nil {
		t.Fatal(err)
	}
	if st, err := tw.Status(ctx); err != nil || st.Status != "ON" {
		t.Fatalf("Status after ON = %+v, %v; want ON", st, err)
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  *v1alpha2.Device
		want Status
	}{
		{"tutorial instance", instance(), Status{Status: "OFF", Value: "0"}},
		{"counting", withTwins(twinOf("other", "a", "b"), twinOf("status", "ON", "17")), Status{Status: "ON", Value: "17"}},
		{"no twin", withTwins(twinOf("other", "a", "b")), Status{Status: "OFF", Value: "0"}},
		{"empty values", withTwins(v1alpha2.Twin{PropertyName: "status"}), Status{Status: "OFF", Value: "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newTwin(t, newClient(t, nil, tc.dev)).Status(context.Background())
			if err != nil || got != tc.want {
				t.Fatalf("Status = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestMissingDevice(t *testing.T) {
	tw := newTwin(t, newClient(t, nil))
	if _, err := tw.Status(context.Background()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status error = %v, want ErrNotFound", err)
	}
	err := tw.SetDesired(context.Background(), On)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "default/counter") {
		t.Errorf("SetDesired error = %v, want ErrNotFound naming default/counter", err)
	}
}

func TestSetDesiredGivesUp(t *testing.T) {
	patches := 0
	c := newClient(t, &interceptor.Funcs{
		Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
			patches++
			return errors.New("test operation failed")
		},
	}, instance())
	if err := newTwin(t, c).SetDesired(context.Background(), On); err == nil {
		t.Fatal("SetDesired succeeded")
	}
	if patches != maxAttempts {
		t.Errorf("patches = %d, want %d", patches, maxAttempts)
	}
}
