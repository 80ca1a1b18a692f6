package devicecontroller

import (
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/twin"
)

func TestNodeOf(t *testing.T) {
	expr := func(op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "k", Operator: op, Values: values}}}
	}
	tests := []struct {
		name string
		sel  *corev1.NodeSelector
		want string // "" means an error
	}{
		{"tutorial", selector("edge1"), "edge1"},
		{"key and operator ignored", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{expr(corev1.NodeSelectorOpNotIn, "n1")}}, "n1"},
		{"later terms ignored", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{expr(corev1.NodeSelectorOpIn, "n1"), {}}}, "n1"},
		{"nil", nil, ""},
		{"no terms", &corev1.NodeSelector{}, ""},
		{"no expressions", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}, ""},
		{"exists", &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{expr(corev1.NodeSelectorOpExists)}}, ""},
		{"two values", selector("a", "b"), ""},
		{"empty value", selector(""), ""},
		{"slash", selector("a/b"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := device("d", "x")
			d.Spec.NodeSelector = tc.sel
			got, err := nodeOf(d)
			if tc.want == "" {
				if !errors.Is(err, errNoNode) {
					t.Errorf("nodeOf = %q, %v; want an error wrapping errNoNode", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("nodeOf = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestApplyReported(t *testing.T) {
	str := func(s string) *string { return &s }
	base := func() *v1alpha2.Device {
		return device("d", "n", v1alpha2.Twin{PropertyName: "p",
			Desired:  v1alpha2.TwinProperty{Value: "ON", Metadata: map[string]string{"type": "string"}},
			Reported: v1alpha2.TwinProperty{Value: "1", Metadata: map[string]string{"type": "string", "timestamp": "5", "unit": "C"}}})
	}
	tests := []struct {
		name    string
		twins   map[string]*twin.MsgTwin
		changed bool
		want    v1alpha2.TwinProperty // reported of "p"
	}{
		{"same value and metadata", map[string]*twin.MsgTwin{"p": {Actual: &twin.Value{Value: str("1"), Metadata: &twin.ValueMetadata{Timestamp: 5}}}},
			false, v1alpha2.TwinProperty{Value: "1", Metadata: map[string]string{"type": "string", "timestamp": "5", "unit": "C"}}},
		{"new value keeps other metadata", map[string]*twin.MsgTwin{"p": {Actual: &twin.Value{Value: str("2"), Metadata: &twin.ValueMetadata{Timestamp: 6}},
			Metadata: &twin.TypeMetadata{Type: "int"}}},
			true, v1alpha2.TwinProperty{Value: "2", Metadata: map[string]string{"type": "int", "timestamp": "6", "unit": "C"}}},
		{"null actual", map[string]*twin.MsgTwin{"p": {Actual: &twin.Value{}}},
			false, v1alpha2.TwinProperty{Value: "1", Metadata: map[string]string{"type": "string", "timestamp": "5", "unit": "C"}}},
		{"deleted twin", map[string]*twin.MsgTwin{"p": {Actual: &twin.Value{Value: str("")}, Metadata: &twin.TypeMetadata{Type: twin.TypeDeleted}}},
			false, v1alpha2.TwinProperty{Value: "1", Metadata: map[string]string{"type": "string", "timestamp": "5", "unit": "C"}}},
		{"nil twin", map[string]*twin.MsgTwin{"p": nil},
			false, v1alpha2.TwinProperty{Value: "1", Metadata: map[string]string{"type": "string", "timestamp": "5", "unit": "C"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			if got := applyReported(d, tc.twins); got != tc.changed {
				t.Errorf("changed = %v, want %v", got, tc.changed)
			}
			if len(d.Status.Twins) != 1 || d.Status.Twins[0].Desired.Value != "ON" {
				t.Fatalf("twins = %+v, want one twin with desired untouched", d.Status.Twins)
			}
			if got := d.Status.Twins[0].Reported; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reported = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPropertyType(t *testing.T) {
	props := []v1alpha2.DeviceProperty{
		{Name: "i", Type: v1alpha2.PropertyType{Int: &v1alpha2.PropertyTypeInt64{}}},
		{Name: "s", Type: v1alpha2.PropertyType{String: &v1alpha2.PropertyTypeString{}}},
		{Name: "d", Type: v1alpha2.PropertyType{Double: &v1alpha2.PropertyTypeDouble{}}},
		{Name: "f", Type: v1alpha2.PropertyType{Float: &v1alpha2.PropertyTypeFloat{}}},
		{Name: "b", Type: v1alpha2.PropertyType{Boolean: &v1alpha2.PropertyTypeBoolean{}}},
		{Name: "y", Type: v1alpha2.PropertyType{Bytes: &v1alpha2.PropertyTypeBytes{}}},
	}
	want := map[string]string{"i": "int", "s": "string", "d": "float", "f": "float", "b": "boolean", "y": "string", "missing": "string"}
	for name, w := range want {
		if got := propertyType(props, name); got != w {
			t.Errorf("propertyType(%q) = %q, want %q", name, got, w)
		}
	}
}
