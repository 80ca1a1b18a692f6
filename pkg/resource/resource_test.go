package resource

import (
	"errors"
	"strings"
	"testing"
)

func TestBuildCloud(t *testing.T) {
	tests := []struct {
		node, ns, typ, name string
		want                string
		wantErr             bool
	}{
		{"edge-1", "default", TypePod, "nginx", "node/edge-1/default/pod/nginx", false},
		{"edge-1", "default", TypePodList, "", "node/edge-1/default/podlist", false},
		{"edge-1", "", TypeNode, "edge-1", "node/edge-1/null/node/edge-1", false},
		{"edge-1", NullNamespace, TypeNode, "edge-1", "node/edge-1/null/node/edge-1", false},
		{"", "default", TypePod, "nginx", "", true},
		{"edge-1", "default", "", "nginx", "", true},
		{"edge/1", "default", TypePod, "nginx", "", true},
		{"edge-1", "a/b", TypePod, "nginx", "", true},
		{"edge-1", "default", TypePod, "a/b", "", true},
		{"edge-1", "default", TypeTwinEdgeUpdated, "x", "", true},
	}
	for _, tt := range tests {
		got, err := BuildCloud(tt.node, tt.ns, tt.typ, tt.name)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("BuildCloud(%q,%q,%q,%q) = %q, %v; want %q, err=%v", tt.node, tt.ns, tt.typ, tt.name, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("BuildCloud error %v does not wrap ErrMalformed", err)
		}
	}
}

func TestParseCloud(t *testing.T) {
	tests := []struct {
		in      string
		want    Cloud
		wantErr bool
	}{
		{"node/edge-1/default/pod/nginx", Cloud{"edge-1", "default", TypePod, "nginx"}, false},
		{"node/edge-1/default/podlist", Cloud{"edge-1", "default", TypePodList, ""}, false},
		{"node/edge-1/null/node/edge-1", Cloud{"edge-1", NullNamespace, TypeNode, "edge-1"}, false},
		{"node/edge-1/default/nodepatch/edge-1", Cloud{"edge-1", "default", TypeNodePatch, "edge-1"}, false},
		{"node/edge-1/k8s/ca.crt", Cloud{NodeID: "edge-1", Type: TypeK8sCA}, false},
		{"", Cloud{}, true},
		{"node", Cloud{}, true},
		{"node/edge-1", Cloud{}, true},
		{"node/edge-1/membership", Cloud{}, true},
		{"nodes/edge-1/default/pod/x", Cloud{}, true},
		{"default/pod/nginx", Cloud{}, true},
		{"node//default/pod/x", Cloud{}, true},
		{"node/edge-1/default//x", Cloud{}, true},
		{"node/edge-1/default/pod/", Cloud{}, true},
		{"/node/edge-1/default/pod/x", Cloud{}, true},
		{"node/edge-1/default/pod/x/y", Cloud{}, true},
	}
	for _, tt := range tests {
		got, err := ParseCloud(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCloud(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			continue
		}
		if err != nil {
			checkErr(t, err, tt.in)
			continue
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseCloud(%q).String() = %q", tt.in, s)
		}
	}
	if !(Cloud{Namespace: NullNamespace}).ClusterScoped() || (Cloud{Namespace: "default"}).ClusterScoped() {
		t.Error("ClusterScoped wrong")
	}
}

func TestWireConversion(t *testing.T) {
	tests := []struct {
		cloud, node, wire string
	}{
		{"node/edge-1/default/pod/nginx", "edge-1", "default/pod/nginx"},
		{"node/edge-1/membership", "edge-1", "membership"},
		{"node/edge-1/membership/detail", "edge-1", "membership/detail"},
		{"node/edge-1/twin", "edge-1", "twin"},
		{"node/edge-1/device/ns/d1/twin/edge_updated", "edge-1", "device/ns/d1/twin/edge_updated"},
		{"node/edge-1/k8s/ca.crt", "edge-1", "k8s/ca.crt"},
	}
	for _, tt := range tests {
		node, wire, err := StripNodePrefix(tt.cloud)
		if err != nil || node != tt.node || wire != tt.wire {
			t.Errorf("StripNodePrefix(%q) = %q, %q, %v; want %q, %q", tt.cloud, node, wire, err, tt.node, tt.wire)
		}
		back, err := AddNodePrefix(tt.node, tt.wire)
		if err != nil || back != tt.cloud {
			t.Errorf("AddNodePrefix(%q, %q) = %q, %v; want %q", tt.node, tt.wire, back, err, tt.cloud)
		}
		if id, err := NodeID(tt.cloud); err != nil || id != tt.node {
			t.Errorf("NodeID(%q) = %q, %v", tt.cloud, id, err)
		}
	}

	for _, in := range []string{"", "node", "node/edge-1", "node//x", "pod/x/y", "node/edge-1/", "node/edge-1/a//b"} {
		if _, _, err := StripNodePrefix(in); err == nil {
			t.Errorf("StripNodePrefix(%q): want error", in)
		} else {
			checkErr(t, err, in)
		}
	}
	for _, tt := range []struct{ node, wire string }{{"", "x"}, {"a/b", "x"}, {"n", ""}, {"n", "a//b"}, {"n", "/a"}} {
		if _, err := AddNodePrefix(tt.node, tt.wire); err == nil {
			t.Errorf("AddNodePrefix(%q, %q): want error", tt.node, tt.wire)
		}
	}

	if id, err := NodeID("node/edge-1"); err != nil || id != "edge-1" {
		t.Errorf("NodeID(node/edge-1) = %q, %v", id, err)
	}
	for _, in := range []string{"", "node", "node/", "edge/edge-1/x"} {
		if _, err := NodeID(in); err == nil {
			t.Errorf("NodeID(%q): want error", in)
		}
	}
	if s, err := BuildNode("edge-1"); err != nil || s != "node/edge-1" {
		t.Errorf("BuildNode = %q, %v", s, err)
	}
	if _, err := BuildNode(""); err == nil {
		t.Error("BuildNode(\"\"): want error")
	}
	if s, err := BuildMembership("edge-1"); err != nil || s != "node/edge-1/membership" {
		t.Errorf("BuildMembership = %q, %v", s, err)
	}
}

func TestEdge(t *testing.T) {
	tests := []struct {
		in, op  string
		want    Edge
		wantErr bool
	}{
		{"default/configmap/cm1", "insert", Edge{"default", TypeConfigMap, "cm1"}, false},
		{"null/node/edge-1", "update", Edge{NullNamespace, TypeNode, "edge-1"}, false},
		{"default/configmap", "query", Edge{"default", TypeConfigMap, ""}, false},
		{"default/pod", "response", Edge{"default", TypePod, ""}, false},
		{"k8s/ca.crt", "query", Edge{Type: TypeK8sCA}, false},
		{"default/configmap", "insert", Edge{}, true},
		{"default", "query", Edge{}, true},
		{"", "query", Edge{}, true},
		{"a/b/c/d", "query", Edge{}, true},
		{"a//c", "insert", Edge{}, true},
		{"/b/c", "insert", Edge{}, true},
	}
	for _, tt := range tests {
		got, err := ParseEdge(tt.in, tt.op)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseEdge(%q, %q) = %+v, %v; want %+v, err=%v", tt.in, tt.op, got, err, tt.want, tt.wantErr)
			continue
		}
		if err != nil {
			checkErr(t, err, tt.in)
			continue
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseEdge(%q).String() = %q", tt.in, s)
		}
	}
	if s, err := BuildEdge("", TypeNode, "edge-1"); err != nil || s != "null/node/edge-1" {
		t.Errorf("BuildEdge cluster-scoped = %q, %v", s, err)
	}
	if s, err := BuildEdge("default", TypeConfigMap, ""); err != nil || s != "default/configmap" {
		t.Errorf("BuildEdge list = %q, %v", s, err)
	}
	c := Cloud{NodeID: "n", Namespace: "default", Type: TypePod, Name: "p"}
	if e := c.Edge(); e.String() != "default/pod/p" || e.ClusterScoped() {
		t.Errorf("Cloud.Edge = %+v", e)
	}
}

func TestDevice(t *testing.T) {
	tests := []struct {
		in      string
		want    Device
		wantID  string
		wantErr bool
	}{
		{"node/edge-1/device/default/d1/twin/edge_updated", Device{"edge-1", "default", "d1", TypeTwinEdgeUpdated}, "default/d1", false},
		{"node/edge-1/device/default/d1/state/update", Device{"edge-1", "default", "d1", TypeStateUpdate}, "default/d1", false},
		{"node/edge-1/device/d1/twin/cloud_updated", Device{"edge-1", "", "d1", TypeTwinCloudUpdated}, "d1", false},
		{"node/edge-1/device/d1/twin", Device{"edge-1", "", "d1", TypeTwin}, "d1", false},
		{"node/edge-1/device/default/d1", Device{"edge-1", "default", "d1", ""}, "default/d1", false},
		{"node/edge-1/device/d1", Device{"edge-1", "", "d1", ""}, "d1", false},
		// Namespaced reading wins when a device is literally named "twin".
		{"node/edge-1/device/ns/twin/twin/edge_updated", Device{"edge-1", "ns", "twin", TypeTwinEdgeUpdated}, "ns/twin", false},
		{"device/default/d1/twin/edge_updated", Device{"", "default", "d1", TypeTwinEdgeUpdated}, "default/d1", false},
		{"node/edge-1/device", Device{}, "", true},
		{"node/edge-1/device/", Device{}, "", true},
		{"node/edge-1/membership", Device{}, "", true},
		{"node/edge-1/device/a/b/c", Device{}, "", true},
		{"node/edge-1/device/a/b/c/d", Device{}, "", true},
		{"node//device/d1", Device{}, "", true},
		{"node/edge-1", Device{}, "", true},
		{"", Device{}, "", true},
	}
	for _, tt := range tests {
		got, err := ParseDevice(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDevice(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			continue
		}
		if err != nil {
			checkErr(t, err, tt.in)
			continue
		}
		if got.ID() != tt.wantID {
			t.Errorf("ParseDevice(%q).ID() = %q, want %q", tt.in, got.ID(), tt.wantID)
		}
		if got.NodeID == "" {
			continue
		}
		back, err := BuildDevice(got.NodeID, got.Namespace, got.Name, got.Sub)
		if err != nil || back != tt.in {
			t.Errorf("BuildDevice(%+v) = %q, %v; want %q", got, back, err, tt.in)
		}
	}
	for _, args := range [][4]string{{"", "ns", "d", ""}, {"n", "a/b", "d", ""}, {"n", "ns", "", ""}, {"n", "ns", "d", "bogus"}} {
		if _, err := BuildDevice(args[0], args[1], args[2], args[3]); err == nil {
			t.Errorf("BuildDevice%q: want error", args)
		}
	}
}

// checkErr asserts that parse errors are typed and name the input.
func checkErr(t *testing.T, err error, input string) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error %q does not wrap ErrMalformed", err)
	}
	if !strings.Contains(err.Error(), `"`+input+`"`) {
		t.Errorf("error %q does not name input %q", err, input)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"node/e/default/pod/p", "node/e/device/ns/d/twin/edge_updated", "a/b", "//", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Must never panic; results are checked by the table tests.
		_, _ = ParseCloud(s)
		_, _ = ParseEdge(s, "query")
		_, _ = ParseDevice(s)
		_, _, _ = StripNodePrefix(s)
		_, _ = NodeID(s)
	})
}
