package edged

import (
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestRegistration(t *testing.T) {
	tests := []struct {
		name        string
		preexisting bool
		wantUpdates int
	}{
		{name: "new node", wantUpdates: 0},
		{name: "node already in the cloud", preexisting: true, wantUpdates: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, setup{registered: tt.preexisting})
			// The status report follows registration, so it marks registration as done.
			h.eventually("node status after registration", func() bool { return len(h.meta.sent("nodepatch", "patch")) > 0 })

			inserts := h.meta.sent("node", "insert")
			if len(inserts) != 1 {
				t.Fatalf("got %d node inserts, want 1", len(inserts))
			}
			m := inserts[0]
			if m.Router.Source != modules.Edged || m.Router.Group != modules.MetaGroup ||
				m.Router.Resource != "default/node/edge-1" || !m.Header.Sync {
				t.Errorf("insert route = %+v sync=%v", m.Router, m.Header.Sync)
			}
			data, err := m.GetContentData()
			if err != nil {
				t.Fatal(err)
			}
			node := decodeInto[corev1.Node](t, data)
			if node.Name != testNode || node.Kind != "Node" || node.APIVersion != "v1" {
				t.Errorf("node identity = %s %s/%s", node.Name, node.APIVersion, node.Kind)
			}
			wantLabels := map[string]string{
				"zone":                 "a",
				LabelEdgeRole:          "",
				LabelAgentRole:         "",
				corev1.LabelHostname:   testNode,
				corev1.LabelOSStable:   goruntime.GOOS,
				corev1.LabelArchStable: goruntime.GOARCH,
			}
			for k, v := range wantLabels {
				if got, ok := node.Labels[k]; !ok || got != v {
					t.Errorf("label %s = %q (present %v), want %q", k, got, ok, v)
				}
			}
			if c := findNodeCondition(node.Status.Conditions, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
				t.Errorf("registered node Ready = %+v, want True", c)
			}
			if got := len(h.meta.sent("node", "update")); got != tt.wantUpdates {
				t.Errorf("node updates = %d, want %d", got, tt.wantUpdates)
			}
		})
	}
}

func TestRegistrationRetriesOfflineWithoutBlockingPods(t *testing.T) {
	p := newPod("web", "uid-web", testNode)
	h := start(t, setup{offline: true, pods: []*corev1.Pod{p}})

	h.eventually("pod synced while offline", func() bool { return h.rt.syncCount(p.UID) > 0 })
	h.stepUntil("three registration attempts", time.Second, func() bool { return len(h.meta.sent("node", "insert")) >= 3 })
	if n := len(h.meta.sent("nodepatch", "patch")); n != 0 {
		t.Errorf("%d node status patches before registration", n)
	}
	if n := len(h.meta.sent("podpatch", "patch")); n != 0 {
		t.Errorf("%d pod status patches while offline, want them held", n)
	}

	h.meta.setOnline(true)
	h.stepUntil("registration", time.Second, func() bool { return len(h.meta.sent("nodepatch", "patch")) > 0 })
	h.eventually("held pod status sent", func() bool { return len(h.meta.sent("podpatch", "patch")) == 1 })
}

func TestCloudConnectedEventResumesAtOnce(t *testing.T) {
	p := newPod("web", "uid-web", testNode)
	h := start(t, setup{offline: true, pods: []*corev1.Pod{p}})
	h.eventually("first registration attempt", func() bool { return len(h.meta.sent("node", "insert")) > 0 })
	h.eventually("pod synced", func() bool { return h.rt.syncCount(p.UID) > 0 })

	h.meta.setOnline(true)
	h.push(model.ConnectOperation, model.ResourceNodeConnection, model.ContentCloudConnected)
	// No clock step: the event alone must wake registration and the held status.
	h.eventually("registration", func() bool { return len(h.meta.sent("nodepatch", "patch")) > 0 })
	h.eventually("held pod status", func() bool { return len(h.meta.sent("podpatch", "patch")) == 1 })
}

func TestNodeStatus(t *testing.T) {
	h := start(t, setup{})
	h.eventually("first node status", func() bool { return len(h.meta.sent("nodepatch", "patch")) == 1 })

	first := h.meta.sent("nodepatch", "patch")[0]
	if first.Router.Resource != "default/nodepatch/edge-1" {
		t.Errorf("resource = %q", first.Router.Resource)
	}
	st := decodeInto[corev1.NodeStatus](t, patchOf(t, first)["status"])

	wantCap := map[corev1.ResourceName]string{
		corev1.ResourceCPU:    resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI).String(),
		corev1.ResourceMemory: resource.NewQuantity(2048000*1024, resource.BinarySI).String(),
		corev1.ResourcePods:   "50",
	}
	for name, want := range wantCap {
		for _, list := range []corev1.ResourceList{st.Capacity, st.Allocatable} {
			if q, ok := list[name]; !ok || q.String() != want {
				t.Errorf("%s = %v (present %v), want %s", name, q.String(), ok, want)
			}
		}
	}
	for _, ct := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
		if c := findNodeCondition(st.Conditions, ct); c == nil || c.Status != corev1.ConditionFalse {
			t.Errorf("condition %s = %+v, want False", ct, c)
		}
	}
	ready := findNodeCondition(st.Conditions, corev1.NodeReady)
	if ready == nil || ready.Status != corev1.ConditionTrue || ready.Reason != ReasonReady || ready.Message != MessageReady {
		t.Errorf("Ready = %+v", ready)
	}
	wantAddrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: testNode}}
	if len(st.Addresses) != 2 || st.Addresses[0] != wantAddrs[0] || st.Addresses[1] != wantAddrs[1] {
		t.Errorf("addresses = %+v, want %+v", st.Addresses, wantAddrs)
	}
	info := st.NodeInfo
	if !strings.HasPrefix(info.KubeletVersion, KubeletVersion+"-tether-") || info.ContainerRuntimeVersion != "fake://1.0" ||
		info.KernelVersion != "6.1.0-test" || info.MachineID != "machine-1" || info.BootID != "boot-1" ||
		info.SystemUUID != "abc-uuid" || info.OSImage != "Debian GNU/Linux 13 (trixie)" ||
		info.OperatingSystem != goruntime.GOOS || info.Architecture != goruntime.GOARCH {
		t.Errorf("nodeInfo = %+v", info)
	}
	if st.DaemonEndpoints.KubeletEndpoint.Port != 10350 {
		t.Errorf("kubelet port = %d", st.DaemonEndpoints.KubeletEndpoint.Port)
	}

	// Each step is one status interval later; Ready's transition time moves only when Ready flips.
	steps := []struct {
		name           string
		versionErr     error
		wantReady      corev1.ConditionStatus
		wantReason     string
		wantTransition int // in intervals after t0
	}{
		{"steady", nil, corev1.ConditionTrue, ReasonReady, 0},
		{"runtime down", errRuntimeDown, corev1.ConditionFalse, ReasonRuntimeDown, 2},
		{"still down", errRuntimeDown, corev1.ConditionFalse, ReasonRuntimeDown, 2},
		{"runtime back", nil, corev1.ConditionTrue, ReasonReady, 4},
		{"steady again", nil, corev1.ConditionTrue, ReasonReady, 4},
	}
	const interval = 10 * time.Second
	for i, s := range steps {
		h.rt.set(func(r *fakeRuntime) { r.versionErr = s.versionErr })
		h.clk.Step(interval)
		h.eventually("status "+s.name, func() bool { return len(h.meta.sent("nodepatch", "patch")) == i+2 })
		st := decodeInto[corev1.NodeStatus](t, patchOf(t, h.meta.sent("nodepatch", "patch")[i+1])["status"])
		now := t0.Add(time.Duration(i+1) * interval)
		ready := findNodeCondition(st.Conditions, corev1.NodeReady)
		switch {
		case ready == nil:
			t.Fatalf("%s: no Ready condition", s.name)
		case ready.Status != s.wantReady || ready.Reason != s.wantReason:
			t.Errorf("%s: Ready = %s/%s, want %s/%s", s.name, ready.Status, ready.Reason, s.wantReady, s.wantReason)
		case !ready.LastHeartbeatTime.Time.Equal(now):
			t.Errorf("%s: heartbeat = %v, want %v", s.name, ready.LastHeartbeatTime, now)
		case !ready.LastTransitionTime.Time.Equal(t0.Add(time.Duration(s.wantTransition) * interval)):
			t.Errorf("%s: transition = %v, want t0+%d intervals", s.name, ready.LastTransitionTime, s.wantTransition)
		}
		if mp := findNodeCondition(st.Conditions, corev1.NodeMemoryPressure); mp == nil || !mp.LastTransitionTime.Time.Equal(t0) {
			t.Errorf("%s: MemoryPressure transition moved: %+v", s.name, mp)
		}
	}
}

func findNodeCondition(conds []corev1.NodeCondition, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

func TestHostFacts(t *testing.T) {
	tests := []struct {
		name, meminfo string
		want          int64
	}{
		{"kB", "MemTotal:       1000 kB\n", 1024000},
		{"no unit", "MemTotal: 42\n", 42},
		{"missing", "MemFree: 1 kB\n", 0},
		{"garbage", "MemTotal: lots kB\n", 0},
	}
	for _, tt := range tests {
		if got := memTotal(tt.meminfo); got != tt.want {
			t.Errorf("%s: memTotal = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := prettyName("ID=x\nPRETTY_NAME='Alpine'\n"); got != "Alpine" {
		t.Errorf("prettyName = %q", got)
	}
	empty := readHostInfo(t.TempDir())
	if empty != (hostInfo{}) {
		t.Errorf("host info from an empty root = %+v, want zero", empty)
	}
}
