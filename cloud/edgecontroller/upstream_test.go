package edgecontroller

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

var (
	tOld   = metav1.NewTime(testNow.Add(-24 * time.Hour))
	tStale = metav1.NewTime(testNow.Add(-time.Hour))
	tEdge  = metav1.NewTime(testNow.Add(-5 * time.Second)) // what a restarted edge claims
	tFlip  = metav1.NewTime(testNow.Add(-3 * time.Second))
	tFresh = metav1.NewTime(testNow.Add(-2 * time.Second))
)

func rfc(t metav1.Time) string { return t.UTC().Format(time.RFC3339) }

// upstreamObjects is the cluster every upstream case starts from.
func upstreamObjects() []runtime.Object {
	n := edgeNode("edge-1", "5")
	n.Labels["a"] = "1"
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: tStale, LastTransitionTime: tOld},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: tStale, LastTransitionTime: tOld},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, LastTransitionTime: tOld},
	}
	web := pod("web", "edge-1", "6", withVolumeConfigMap("cfg"), withVolumeConfigMap("nope"), withVolumeSecret("sec"),
		withTokenProjection("api"))
	web.Status = corev1.PodStatus{
		Phase:     corev1.PodPending,
		StartTime: &tOld,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: tOld},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: tOld},
		},
	}
	done := pod("done", "edge-1", "7")
	done.DeletionTimestamp = &tFresh
	done.Finalizers = nil
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: "edge-1", ResourceVersion: "8"}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}}
	return []runtime.Object{
		n, edgeNode("edge-2", "2"), web, done, pod("other", "edge-2", "9"),
		configMap("cfg", "10"), secret("sec", "11"), lease, sa,
	}
}

// request sends msg to edgecontroller the way CloudHub forwards it (decoded from the wire) and returns the reply.
func (h *harness) request(res, op string, body any) (model.Message, model.Message) {
	h.t.Helper()
	msg := model.NewMessage("").BuildRouter(modules.Edged, model.GroupMeta, res, op).FillBody(body)
	data, err := json.Marshal(msg)
	must(h.t, err)
	var wire model.Message
	must(h.t, json.Unmarshal(data, &wire))
	must(h.t, h.bus.SendToGroup(h.ctx, modules.EdgeController, wire))
	reply := h.waitFor("reply to "+op+" "+res, func(m model.Message) bool { return m.Header.ParentID == msg.Header.ID })
	return *msg, reply
}

func objectResp(t *testing.T, m model.Message) (json.RawMessage, *apierrors.StatusError) {
	t.Helper()
	var r struct {
		Object json.RawMessage
		Err    *apierrors.StatusError
	}
	decodeContent(t, m, &r)
	if _, ok := m.Content.(*ObjectResp); !ok {
		t.Errorf("content is %T, want *ObjectResp", m.Content)
	}
	return r.Object, r.Err
}

// wantStatus checks a bare StatusError reply.
func wantStatus(t *testing.T, m model.Message, code int32) {
	t.Helper()
	if _, ok := m.Content.(error); !ok {
		t.Errorf("error reply content is %T, want an error (CloudHub sends those without ACK)", m.Content)
	}
	var se apierrors.StatusError
	decodeContent(t, m, &se)
	if se.ErrStatus.Code != code {
		t.Errorf("status = %+v, want code %d", se.ErrStatus, code)
	}
}

func wantOK(t *testing.T, m model.Message) {
	t.Helper()
	if s, ok := m.Content.(string); !ok || s != "OK" {
		t.Errorf("reply content = %s, want OK", content(t, m))
	}
}

func wantErrCode(t *testing.T, err *apierrors.StatusError, code int32) {
	t.Helper()
	if err == nil || err.ErrStatus.Code != code {
		t.Errorf("Err = %v, want code %d", err, code)
	}
}

func (h *harness) getNode(name string) *corev1.Node {
	h.t.Helper()
	n, err := h.kube.CoreV1().Nodes().Get(h.ctx, name, metav1.GetOptions{})
	must(h.t, err)
	return n
}

func (h *harness) getPod(name string) *corev1.Pod {
	h.t.Helper()
	p, err := h.kube.CoreV1().Pods("default").Get(h.ctx, name, metav1.GetOptions{})
	must(h.t, err)
	return p
}

func nodeCond(n *corev1.Node, typ corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func podCond(p *corev1.Pod, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

// checkNodeConditions verifies transition-time preservation and heartbeat freshening on edge-1.
func checkNodeConditions(t *testing.T, n *corev1.Node) {
	t.Helper()
	ready, mem := nodeCond(n, corev1.NodeReady), nodeCond(n, corev1.NodeMemoryPressure)
	if !ready.LastTransitionTime.Equal(&tOld) {
		t.Errorf("Ready status unchanged: transition = %v, want the live %v", ready.LastTransitionTime, tOld)
	}
	if !ready.LastHeartbeatTime.Time.Equal(testNow) {
		t.Errorf("stale Ready heartbeat = %v, want now", ready.LastHeartbeatTime)
	}
	if mem.Status != corev1.ConditionTrue || !mem.LastTransitionTime.Equal(&tFlip) || !mem.LastHeartbeatTime.Equal(&tFresh) {
		t.Errorf("MemoryPressure = %+v, want True with the reported times", mem)
	}
	if nodeCond(n, corev1.NodeNetworkUnavailable).Type == "" {
		t.Error("unreported live condition NetworkUnavailable was dropped")
	}
}

func reportedNodeConditions() []corev1.NodeCondition {
	return []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: tStale, LastTransitionTime: tEdge},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue, LastHeartbeatTime: tFresh, LastTransitionTime: tFlip},
	}
}

func TestUpstream(t *testing.T) {
	nodePatch := fmt.Sprintf(`{"status":{"$setElementOrder/conditions":[{"type":"Ready"},{"type":"MemoryPressure"}],`+
		`"conditions":[{"type":"Ready","status":"True","lastHeartbeatTime":%q,"lastTransitionTime":%q},`+
		`{"type":"MemoryPressure","status":"True","lastHeartbeatTime":%q,"lastTransitionTime":%q}],"capacity":{"pods":"110"}}}`,
		rfc(tStale), rfc(tEdge), rfc(tFresh), rfc(tFlip))
	podPatch := fmt.Sprintf(`{"metadata":{"uid":"uid-web"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastTransitionTime":%q}]}}`, rfc(tEdge))
	newNode := func(name string, labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}}}}
	}
	podStatus := func(name, uid string) PodStatusRequest {
		return PodStatusRequest{UID: ktypes.UID(uid), Name: name, Status: corev1.PodStatus{
			Phase:     corev1.PodRunning,
			StartTime: &tFresh,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: tEdge},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "b"}, {Name: "a"}},
		}}
	}
	checkWebStatus := func(t *testing.T, h *harness) {
		t.Helper()
		p := h.getPod("web")
		if p.Status.Phase != corev1.PodRunning || !p.Status.StartTime.Equal(&tOld) {
			t.Errorf("status = %+v, want Running with the original start time", p.Status)
		}
		if c := podCond(p, corev1.PodReady); !c.LastTransitionTime.Equal(&tOld) {
			t.Errorf("Ready transition = %v, want the live %v", c.LastTransitionTime, tOld)
		}
		if c := podCond(p, corev1.ContainersReady); !c.LastTransitionTime.Time.Equal(testNow) {
			t.Errorf("new condition transition = %v, want now", c.LastTransitionTime)
		}
		if podCond(p, corev1.PodScheduled).Type == "" {
			t.Error("PodScheduled (not reported by the edge) was dropped")
		}
		if len(p.Status.ContainerStatuses) == 2 && p.Status.ContainerStatuses[0].Name != "a" {
			t.Errorf("container statuses not sorted: %+v", p.Status.ContainerStatuses)
		}
	}
	expectPodDelete := func(t *testing.T, h *harness, name, uid string) {
		t.Helper()
		i := h.find("node/edge-1/default/pod/"+name, model.DeleteOperation)
		if i < 0 {
			t.Fatalf("no pod delete sent to the edge")
		}
		var p corev1.Pod
		decodeContent(t, h.message(i), &p)
		if string(p.UID) != uid || p.Kind != "Pod" {
			t.Errorf("pod delete content = %s, want UID %s", content(t, h.message(i)), uid)
		}
	}

	tests := []struct {
		name     string
		res, op  string
		body     any
		replyRes string // when not the request's resource
		check    func(t *testing.T, h *harness, reply model.Message)
	}{
		// ---- v1.7 ----
		{
			name: "v1.7 nodestatus insert registers a new node", res: "node/edge-9/default/nodestatus/edge-9", op: model.InsertOperation,
			body: newNode("edge-9", map[string]string{"kubernetes.io/hostname": "edge-9"}), replyRes: "node/edge-9/default/node/edge-9",
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				n := h.getNode("edge-9")
				if _, ok := n.Labels[EdgeRoleLabel]; !ok || n.Labels["kubernetes.io/hostname"] != "edge-9" {
					t.Errorf("labels = %v", n.Labels)
				}
			},
		},
		{
			name: "v1.7 nodestatus insert of an existing node updates it", res: "node/edge-1/default/nodestatus/edge-1", op: model.InsertOperation,
			body: newNode("edge-1", map[string]string{"b": "2"}), replyRes: "node/edge-1/default/node/edge-1",
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				n := h.getNode("edge-1")
				if n.Labels["a"] != "1" || n.Labels["b"] != "2" || n.Status.Addresses[0].Address != "10.0.0.2" {
					t.Errorf("node = %v %v, want labels merged and addresses updated", n.Labels, n.Status.Addresses)
				}
			},
		},
		{
			name: "v1.7 nodestatus update", res: "node/edge-1/default/nodestatus/edge-1", op: model.UpdateOperation,
			body: NodeStatusRequest{UID: "edged-fixed-uid", Status: corev1.NodeStatus{Conditions: reportedNodeConditions()},
				ExtendResources: map[corev1.ResourceName][]ExtendResource{gpuResource: {{Name: "gpu0", Type: "t4"}}}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				if reply.Header.ResourceVersion != "5" {
					t.Errorf("reply RV = %q, want the node's", reply.Header.ResourceVersion)
				}
				n := h.getNode("edge-1")
				checkNodeConditions(t, n)
				if n.Annotations[gpuStatusAnnotation] == "" {
					t.Errorf("GPU status annotation missing: %v", n.Annotations)
				}
			},
		},
		{
			name: "v1.7 nodestatus update of a missing node", res: "node/edge-7/default/nodestatus/edge-7", op: model.UpdateOperation,
			body:  NodeStatusRequest{Status: corev1.NodeStatus{Conditions: reportedNodeConditions()}},
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 404) },
		},
		{
			name: "v1.7 podstatus update", res: "node/edge-1/default/podstatus/web", op: model.UpdateOperation,
			body: podStatus("web", "uid-web"),
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				checkWebStatus(t, h)
			},
		},
		{
			name: "v1.7 podstatus list", res: "node/edge-1/default/podstatus", op: model.UpdateOperation,
			body: []PodStatusRequest{podStatus("web", "uid-web"), podStatus("gone", "uid-gone")},
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				checkWebStatus(t, h)
				expectPodDelete(t, h, "gone", "uid-gone")
			},
		},
		{
			name: "v1.7 podstatus for a missing pod", res: "node/edge-1/default/podstatus/gone", op: model.UpdateOperation,
			body: podStatus("gone", "uid-gone"),
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				expectPodDelete(t, h, "gone", "uid-gone")
			},
		},
		{
			name: "v1.7 podstatus for a replaced pod", res: "node/edge-1/default/podstatus/web", op: model.UpdateOperation,
			body: podStatus("web", "uid-old-web"),
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				expectPodDelete(t, h, "web", "uid-old-web")
				if h.getPod("web").Status.Phase != corev1.PodPending {
					t.Error("status of the replaced pod was applied to the new one")
				}
			},
		},
		{
			name: "v1.7 podstatus finishing a deleted pod removes it", res: "node/edge-1/default/podstatus/done", op: model.UpdateOperation,
			body: PodStatusRequest{UID: "uid-done", Name: "done", Status: corev1.PodStatus{Phase: corev1.PodSucceeded,
				ContainerStatuses: []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}}}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				if _, err := h.kube.CoreV1().Pods("default").Get(h.ctx, "done", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("finished pod still exists: %v", err)
				}
			},
		},
		{
			name: "v1.7 pod delete with a UID", res: "node/edge-1/default/pod/web", op: model.DeleteOperation, body: "uid-web",
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				if _, err := h.kube.CoreV1().Pods("default").Get(h.ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("pod still exists: %v", err)
				}
				var del *k8stesting.DeleteActionImpl
				for _, a := range h.kube.Actions() {
					if d, ok := a.(k8stesting.DeleteActionImpl); ok && d.Name == "web" {
						del = &d
					}
				}
				if del == nil || del.DeleteOptions.Preconditions == nil || *del.DeleteOptions.Preconditions.UID != "uid-web" ||
					*del.DeleteOptions.GracePeriodSeconds != 0 {
					t.Errorf("delete action = %+v, want grace 0 with a UID precondition", del)
				}
			},
		},
		// ---- v1.2x ----
		{
			name: "node insert creates the node", res: "node/edge-9/default/node/edge-9", op: model.InsertOperation,
			body: newNode("edge-9", map[string]string{"kubernetes.io/hostname": "edge-9"}),
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				var n corev1.Node
				must(t, json.Unmarshal(obj, &n))
				if n.Kind != "Node" || n.Name != "edge-9" {
					t.Errorf("Object = %s", obj)
				}
				if _, ok := h.getNode("edge-9").Labels[EdgeRoleLabel]; !ok {
					t.Error("edge role label not ensured")
				}
				if !json.Valid(content(t, reply)) || !containsKey(t, content(t, reply), "Err") {
					t.Errorf("reply lacks an explicit Err: %s", content(t, reply))
				}
			},
		},
		{
			name: "node insert of an existing node merges labels and addresses", res: "node/edge-1/default/node/edge-1", op: model.InsertOperation,
			body: newNode("edge-1", map[string]string{"b": "2"}),
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				var n corev1.Node
				must(t, json.Unmarshal(obj, &n))
				_, edge := n.Labels[EdgeRoleLabel]
				if n.Labels["a"] != "1" || n.Labels["b"] != "2" || !edge || n.Status.Addresses[0].Address != "10.0.0.2" {
					t.Errorf("Object = %s", obj)
				}
			},
		},
		{
			name: "node insert for another node is forbidden", res: "node/edge-1/default/node/edge-2", op: model.InsertOperation,
			body: newNode("edge-2", nil),
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				wantErrCode(t, err, 403)
				if string(obj) != "null" {
					t.Errorf("Object = %s, want null", obj)
				}
			},
		},
		{
			name: "node query", res: "node/edge-1/default/node/edge-1", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				if tm := typeMeta(t, reply); tm.Kind != "Node" || reply.Header.ResourceVersion != "5" {
					t.Errorf("reply = %s rv %q", content(t, reply), reply.Header.ResourceVersion)
				}
			},
		},
		{
			name: "node query of a missing node", res: "node/edge-7/default/node/edge-7", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 404) },
		},
		{
			name: "node update merges labels and annotations", res: "node/edge-1/default/node/edge-1", op: model.UpdateOperation,
			body: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"c": "3"}, Annotations: map[string]string{"an": "x"}}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				n := h.getNode("edge-1")
				_, edge := n.Labels[EdgeRoleLabel]
				if n.Labels["a"] != "1" || n.Labels["c"] != "3" || !edge || n.Annotations["an"] != "x" {
					t.Errorf("node metadata = %v %v", n.Labels, n.Annotations)
				}
			},
		},
		{
			name: "nodepatch patches status keeping transition times", res: "node/edge-1/default/nodepatch/edge-1", op: model.PatchOperation,
			body: nodePatch,
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				var n corev1.Node
				must(t, json.Unmarshal(obj, &n))
				if n.Kind != "Node" || reply.Header.ResourceVersion == "" {
					t.Errorf("Object = %s, rv %q", obj, reply.Header.ResourceVersion)
				}
				live := h.getNode("edge-1")
				checkNodeConditions(t, live)
				if q := live.Status.Capacity[corev1.ResourcePods]; q.String() != "110" {
					t.Errorf("capacity not patched: %v", live.Status.Capacity)
				}
			},
		},
		{
			name: "podpatch patches status keeping transition times", res: "node/edge-1/default/podpatch/web", op: model.PatchOperation,
			body: podPatch,
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				if tm := typeMeta(t, model.Message{Content: obj}); tm.Kind != "Pod" {
					t.Errorf("Object = %s", obj)
				}
				p := h.getPod("web")
				if p.Status.Phase != corev1.PodRunning || !podCond(p, corev1.PodReady).LastTransitionTime.Time.Equal(tOld.Time) {
					t.Errorf("pod status = %+v", p.Status)
				}
			},
		},
		{
			name: "podpatch of another node's pod is forbidden", res: "node/edge-1/default/podpatch/other", op: model.PatchOperation,
			body: podPatch,
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 403)
			},
		},
		{
			name: "podpatch of a missing pod", res: "node/edge-1/default/podpatch/gone", op: model.PatchOperation, body: podPatch,
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 404)
			},
		},
		{
			name: "pod delete with DeleteOptions", res: "node/edge-1/default/pod/web", op: model.DeleteOperation,
			body: metav1.DeleteOptions{GracePeriodSeconds: new(int64), Preconditions: metav1.NewUIDPreconditions("uid-web")},
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantOK(t, reply)
				if _, err := h.kube.CoreV1().Pods("default").Get(h.ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("pod still exists: %v", err)
				}
			},
		},
		{
			name: "pod delete of a missing pod is OK", res: "node/edge-1/default/pod/gone", op: model.DeleteOperation, body: "uid-gone",
			check: func(t *testing.T, h *harness, reply model.Message) { wantOK(t, reply) },
		},
		{
			name: "pod delete of another node's pod is forbidden", res: "node/edge-1/default/pod/other", op: model.DeleteOperation, body: "uid-other",
			check: func(t *testing.T, h *harness, reply model.Message) {
				wantStatus(t, reply, 403)
				h.getPod("other")
			},
		},
		{
			name: "pod insert creates a mirror pod", res: "node/edge-1/default/pod/static-edge-1", op: model.InsertOperation,
			body: mirrorPod("static-edge-1", "edge-1"),
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				if tm := typeMeta(t, model.Message{Content: obj}); tm.Kind != "Pod" {
					t.Errorf("Object = %s", obj)
				}
				h.getPod("static-edge-1")
			},
		},
		{
			name: "pod insert in the wrong namespace", res: "node/edge-1/default/pod/static", op: model.InsertOperation,
			body: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "static"}, Spec: corev1.PodSpec{NodeName: "edge-1"}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 400)
			},
		},
		{
			name: "lease insert", res: "node/edge-9/kube-node-lease/lease/edge-9", op: model.InsertOperation,
			body: &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: "edge-9"},
				Spec: coordv1.LeaseSpec{HolderIdentity: new("edge-9")}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				if _, err := objectResp(t, reply); err != nil {
					t.Fatalf("Err = %v", err)
				}
				if _, err := h.kube.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(h.ctx, "edge-9", metav1.GetOptions{}); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "lease update", res: "node/edge-1/kube-node-lease/lease/edge-1", op: model.UpdateOperation,
			body: &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: "edge-1", ResourceVersion: "8"},
				Spec: coordv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: testNow}}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				obj, err := objectResp(t, reply)
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				var l coordv1.Lease
				must(t, json.Unmarshal(obj, &l))
				if l.Kind != "Lease" || l.APIVersion != "coordination.k8s.io/v1" || l.Spec.RenewTime == nil || reply.Header.ResourceVersion != "8" {
					t.Errorf("Object = %s", obj)
				}
			},
		},
		{
			name: "lease query", res: "node/edge-1/kube-node-lease/lease/edge-1", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				if obj, err := objectResp(t, reply); err != nil || typeMeta(t, model.Message{Content: obj}).Kind != "Lease" {
					t.Errorf("Object = %s, Err = %v", obj, err)
				}
			},
		},
		{
			name: "lease query of a missing lease", res: "node/edge-9/kube-node-lease/lease/edge-9", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 404)
			},
		},
		{
			name: "lease outside kube-node-lease", res: "node/edge-1/default/lease/edge-1", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 400)
			},
		},
		{
			name: "lease of another node", res: "node/edge-1/kube-node-lease/lease/edge-2", op: model.UpdateOperation,
			body: &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: "edge-2"}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 403)
			},
		},
		{
			name: "configmap query", res: "node/edge-1/default/configmap/cfg", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				var cm corev1.ConfigMap
				decodeContent(t, reply, &cm)
				if cm.Kind != "ConfigMap" || cm.APIVersion != "v1" || cm.Data["k"] != "v" || reply.Header.ResourceVersion != "10" {
					t.Errorf("reply = %s rv %q", content(t, reply), reply.Header.ResourceVersion)
				}
			},
		},
		{
			name: "secret query", res: "node/edge-1/default/secret/sec", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) {
				var s corev1.Secret
				decodeContent(t, reply, &s)
				if s.Kind != "Secret" || string(s.Data["k"]) != "v" || reply.Header.ResourceVersion != "11" {
					t.Errorf("reply = %s rv %q", content(t, reply), reply.Header.ResourceVersion)
				}
			},
		},
		{
			name: "configmap query of a missing configmap", res: "node/edge-1/default/configmap/nope", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 404) },
		},
		{
			name: "configmap query without a namespace", res: "node/edge-1/null/configmap/cfg", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
		{
			name: "serviceaccounttoken query", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body: &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{"api"},
				BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "web", UID: "uid-web"}}},
			check: func(t *testing.T, h *harness, reply model.Message) {
				var tr authv1.TokenRequest
				decodeContent(t, reply, &tr)
				if tr.Status.Token != "token-for-default" || tr.Kind != "TokenRequest" {
					t.Errorf("reply = %s", content(t, reply))
				}
			},
		},
		{
			name: "serviceaccounttoken for another node's pod", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body:  &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", Name: "other"}}},
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 403) },
		},
		// ---- malformed input ----
		{
			name: "nodepatch with a broken patch", res: "node/edge-1/default/nodepatch/edge-1", op: model.PatchOperation, body: `{"status":`,
			check: func(t *testing.T, h *harness, reply model.Message) {
				_, err := objectResp(t, reply)
				wantErrCode(t, err, 400)
			},
		},
		{
			name: "nodestatus update with unparsable content", res: "node/edge-1/default/nodestatus/edge-1", op: model.UpdateOperation, body: "{",
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
		{
			name: "podstatus without content", res: "node/edge-1/default/podstatus/web", op: model.UpdateOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
		{
			name: "pod delete without content", res: "node/edge-1/default/pod/web", op: model.DeleteOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400); h.getPod("web") },
		},
		{
			name: "unknown resource type", res: "node/edge-1/default/gadget/x", op: model.QueryOperation,
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
		{
			name: "unknown operation", res: "node/edge-1/default/configmap/cfg", op: model.InsertOperation, body: configMap("cfg", ""),
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
		{
			name: "unparsable resource", res: "node/edge-1/default/pod/a/b", op: model.DeleteOperation, body: "x",
			check: func(t *testing.T, h *harness, reply model.Message) { wantStatus(t, reply, 400) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := fake.NewClientset(upstreamObjects()...)
			kube.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
				ca, ok := a.(k8stesting.CreateActionImpl)
				if !ok || ca.GetSubresource() != "token" {
					return false, nil, nil
				}
				tr := ca.GetObject().(*authv1.TokenRequest).DeepCopy()
				tr.Status.Token = "token-for-" + ca.Name
				return true, tr, nil
			})
			h := startKube(t, kube)
			req, reply := h.request(tt.res, tt.op, tt.body)
			wantRes := tt.res
			if tt.replyRes != "" {
				wantRes = tt.replyRes
			}
			r := reply.Router
			if reply.Header.ParentID != req.Header.ID || r.Source != modules.EdgeController || r.Group != model.GroupResource ||
				r.Operation != model.ResponseOperation || r.Resource != wantRes {
				t.Errorf("reply envelope = %+v %+v; want parent %s, response from edgecontroller on %s", reply.Header, r, req.Header.ID, wantRes)
			}
			tt.check(t, h, reply)
		})
	}
}

func containsKey(t *testing.T, data []byte, key string) bool {
	t.Helper()
	var m map[string]json.RawMessage
	must(t, json.Unmarshal(data, &m))
	_, ok := m[key]
	return ok
}

func TestEvents(t *testing.T) {
	for _, op := range []string{model.InsertOperation, model.UpdateOperation, model.PatchOperation} {
		if h, ok := lookup(resource.TypeEvent, op); !ok || h.shape != shapeNone {
			t.Errorf("event %s: handler %+v, want one that never replies", op, h)
		}
	}
	h := start(t, upstreamObjects()...)
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web.1"}, Reason: "Started", Count: 1,
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web", Namespace: "default"}}
	send := func(op string, body any) {
		msg := model.NewMessage("").BuildRouter(modules.Edged, model.GroupMeta, "node/edge-1/default/event/web.1", op).FillBody(body)
		must(t, h.bus.SendToGroup(h.ctx, modules.EdgeController, *msg))
	}
	waitEvent := func(what string, ok func(*corev1.Event) bool) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			e, err := h.kube.CoreV1().Events("default").Get(h.ctx, "web.1", metav1.GetOptions{})
			if err == nil && ok(e) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %v %v", what, e, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	send(model.PatchOperation, "not an event patch") // malformed: logged, nothing else
	send(model.InsertOperation, ev)
	waitEvent("event created", func(*corev1.Event) bool { return true })
	send(model.PatchOperation, EventPatch{Event: *ev, PatchData: json.RawMessage(`"{\"count\":2}"`)})
	waitEvent("event patched", func(e *corev1.Event) bool { return e.Count == 2 })
	ev.Count = 3
	send(model.UpdateOperation, ev)
	waitEvent("event updated", func(e *corev1.Event) bool { return e.Count == 3 })
	msgs, _ := h.rec.snapshot()
	for _, m := range msgs {
		if slices.Contains([]string{model.ResponseOperation, model.ResponseErrorOperation}, m.Router.Operation) {
			t.Errorf("unexpected reply to an event: %s", m.String())
		}
	}
}
