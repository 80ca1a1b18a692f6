package edgecontroller

import (
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// TestUpstreamAuthorization sends, as node edge-1, every request a compromised node could try against cloudcore
// and checks each is refused with the rule that forbids it and that nothing in the API server changed. The
// legitimate forms of the same requests are covered by TestUpstream.
func TestUpstreamAuthorization(t *testing.T) {
	tokenFor := func(sa string, ref *authv1.BoundObjectReference, audiences ...string) *authv1.TokenRequest {
		return &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{BoundObjectRef: ref, Audiences: audiences}}
	}
	webRef := &authv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "web", UID: "uid-web"}
	withSecret := mirrorPod("static-a", "edge-1")
	withSecret.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}}}
	withSA := mirrorPod("static-b", "edge-1")
	withSA.Spec.ServiceAccountName = "admin"
	noOwner := mirrorPod("static-c", "edge-1")
	noOwner.OwnerReferences = nil
	wrongUID := mirrorPod("static-d", "edge-1")
	wrongUID.OwnerReferences[0].UID = "forged"
	plain := pod("plain", "edge-1", "")
	plain.UID = ""
	otherNode := mirrorPod("static-e", "edge-2")

	tests := []struct {
		name     string
		res, op  string
		body     any
		wantCode int32  // the refusal's HTTP code
		wantRule string // in the refusal's message
		// unchanged checks the API server still has what the attack aimed at.
		unchanged func(t *testing.T, h *harness)
	}{
		{name: "CA secret", res: "node/edge-1/kubeedge/secret/casecret", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "secret no pod of the node uses", res: "node/edge-1/default/secret/other-sec", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "secret another node's pod uses", res: "node/edge-1/default/secret/sec2", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "configmap in another namespace", res: "node/edge-1/kube-system/configmap/cfg", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "claim no pod uses", res: "node/edge-1/default/persistentvolumeclaim/data", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "volume no claim binds", res: "node/edge-1/null/persistentvolume/pv-1", op: model.QueryOperation, wantCode: 403, wantRule: "referenced-object"},
		{name: "token without a pod binding", res: "node/edge-1/kube-system/serviceaccounttoken/admin", op: model.QueryOperation,
			body: tokenFor("admin", nil), wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "token for another service account", res: "node/edge-1/default/serviceaccounttoken/admin", op: model.QueryOperation,
			body: tokenFor("admin", webRef, "api"), wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "token for another node's pod", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body: tokenFor("default", &authv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "other", UID: "uid-other"}), wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "token bound to a pod's earlier UID", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body: tokenFor("default", &authv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "web", UID: "old"}, "api"), wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "token for an audience the pod does not mount", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body: tokenFor("default", webRef, "vault"), wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "token living longer than the pod's volume asks", res: "node/edge-1/default/serviceaccounttoken/default", op: model.QueryOperation,
			body:     &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{BoundObjectRef: webRef, Audiences: []string{"api"}, ExpirationSeconds: ptr.To[int64](86400 * 365)}},
			wantCode: 403, wantRule: "serviceaccount-token"},
		{name: "plain pod", res: "node/edge-1/default/pod/plain", op: model.InsertOperation, body: plain, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("plain")},
		{name: "mirror pod using a secret", res: "node/edge-1/default/pod/static-a", op: model.InsertOperation, body: withSecret, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("static-a")},
		{name: "mirror pod with a service account", res: "node/edge-1/default/pod/static-b", op: model.InsertOperation, body: withSA, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("static-b")},
		{name: "mirror pod without its node as owner", res: "node/edge-1/default/pod/static-c", op: model.InsertOperation, body: noOwner, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("static-c")},
		{name: "mirror pod owned by a forged node UID", res: "node/edge-1/default/pod/static-d", op: model.InsertOperation, body: wrongUID, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("static-d")},
		{name: "mirror pod for another node", res: "node/edge-1/default/pod/static-e", op: model.InsertOperation, body: otherNode, wantCode: 403, wantRule: "mirror-pod",
			unchanged: podAbsent("static-e")},
		{name: "node-restriction label on update", res: "node/edge-1/null/node/edge-1", op: model.UpdateOperation,
			body:     &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"node-restriction.kubernetes.io/pci": "true"}}},
			wantCode: 403, wantRule: "node-labels", unchanged: nodeLacksLabel("edge-1", "node-restriction.kubernetes.io/pci")},
		{name: "kubernetes.io label on update", res: "node/edge-1/null/node/edge-1", op: model.UpdateOperation,
			body:     &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}},
			wantCode: 403, wantRule: "node-labels", unchanged: nodeLacksLabel("edge-1", "node-role.kubernetes.io/control-plane")},
		{name: "node-restriction label through the status patch", res: "node/edge-1/default/nodepatch/edge-1", op: model.PatchOperation,
			body:     `{"metadata":{"labels":{"node-restriction.kubernetes.io/pci":"true"}},"status":{}}`,
			wantCode: 403, wantRule: "node-labels", unchanged: nodeLacksLabel("edge-1", "node-restriction.kubernetes.io/pci")},
		{name: "node-restriction label on re-registration", res: "node/edge-1/default/node/edge-1", op: model.InsertOperation,
			body:     &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"node-restriction.kubernetes.io/pci": "true"}}},
			wantCode: 403, wantRule: "node-labels", unchanged: nodeLacksLabel("edge-1", "node-restriction.kubernetes.io/pci")},
		{name: "registration with a configSource", res: "node/edge-9/default/node/edge-9", op: model.InsertOperation,
			body: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-9"}, Spec: corev1.NodeSpec{ConfigSource: &corev1.NodeConfigSource{
				ConfigMap: &corev1.ConfigMapNodeConfigSource{Namespace: "kube-system", Name: "x", KubeletConfigKey: "k"}}}},
			wantCode: 403, wantRule: "node-spec"},
		{name: "another node's status", res: "node/edge-1/default/nodepatch/edge-2", op: model.PatchOperation, body: `{"status":{}}`,
			wantCode: 403, wantRule: "own-node"},
		{name: "another node's lease", res: "node/edge-1/kube-node-lease/lease/edge-2", op: model.UpdateOperation,
			body:     &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-node-lease", Name: "edge-2"}},
			wantCode: 403, wantRule: "own-node"},
		{name: "another node's pod status", res: "node/edge-1/default/podpatch/other", op: model.PatchOperation, body: `{"status":{"phase":"Failed"}}`,
			wantCode: 403, wantRule: "pod-bound", unchanged: func(t *testing.T, h *harness) {
				if p := h.getPod("other"); p.Status.Phase == corev1.PodFailed {
					t.Error("pod status changed")
				}
			}},
		{name: "status for a pod's earlier UID", res: "node/edge-1/default/podpatch/web", op: model.PatchOperation,
			body: `{"metadata":{"uid":"old"},"status":{"phase":"Failed"}}`, wantCode: 409, unchanged: func(t *testing.T, h *harness) {
				if p := h.getPod("web"); p.Status.Phase == corev1.PodFailed {
					t.Error("pod status changed")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append(upstreamObjects(), secret("sec2", "20"), secret("other-sec", "21"),
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubeedge", Name: "casecret"}, Data: map[string][]byte{"cakeydata": []byte("key")}},
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cfg"}},
				&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}},
				&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"}},
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "admin"}})
			// other's pod on edge-2 uses sec2
			for i, o := range objs {
				if p, ok := o.(*corev1.Pod); ok && p.Name == "other" {
					objs[i] = pod("other", "edge-2", "9", withVolumeSecret("sec2"))
				}
			}
			kube := fake.NewClientset(objs...)
			writes := 0
			kube.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if isAutonomyPatch(a) {
					return false, nil, nil // cloudcore's own toleration patches, not the edge's doing
				}
				switch a.GetVerb() {
				case "create", "update", "patch", "delete":
					writes++
				}
				return false, nil, nil
			})
			h := startKube(t, kube)
			_, reply := h.request(tt.res, tt.op, tt.body)
			se := refusal(t, reply)
			if se == nil || se.ErrStatus.Code != tt.wantCode || !strings.Contains(se.ErrStatus.Message, tt.wantRule) {
				t.Fatalf("reply %s, want a %d refusal naming rule %q", content(t, reply), tt.wantCode, tt.wantRule)
			}
			if tt.wantCode == 403 && writes != 0 {
				t.Errorf("%d writes reached the API server", writes)
			}
			if tt.unchanged != nil {
				tt.unchanged(t, h)
			}
		})
	}
}

// refusal returns the error a reply carries, in either reply shape.
func refusal(t *testing.T, m model.Message) *apierrors.StatusError {
	t.Helper()
	if _, ok := m.Content.(error); ok {
		var se apierrors.StatusError
		decodeContent(t, m, &se)
		return &se
	}
	_, err := objectResp(t, m)
	return err
}

func podAbsent(name string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		if _, err := h.kube.CoreV1().Pods("default").Get(h.ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod %s exists (err %v)", name, err)
		}
	}
}

func nodeLacksLabel(node, label string) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		if _, ok := h.getNode(node).Labels[label]; ok {
			t.Errorf("node %s got label %s", node, label)
		}
	}
}

// TestUpstreamAuthorizationKeepsLegitimateTraffic checks the sanitised forms of status writes still land: a
// status patch that also tries to change taints and labels has only its status applied, and the node's own
// allowed labels go through.
func TestUpstreamAuthorizationKeepsLegitimateTraffic(t *testing.T) {
	h := start(t, upstreamObjects()...)
	_, reply := h.request("node/edge-1/default/nodepatch/edge-1", model.PatchOperation,
		`{"spec":{"taints":[]},"metadata":{"name":"x","labels":{"topology.kubernetes.io/zone":"z1"}},"status":{"capacity":{"pods":"7"}}}`)
	if _, err := objectResp(t, reply); err != nil {
		t.Fatalf("Err = %v", err)
	}
	n := h.getNode("edge-1")
	if n.Status.Capacity.Pods().Value() != 7 || n.Labels["topology.kubernetes.io/zone"] != "z1" || n.Name != "edge-1" {
		t.Errorf("node = %+v", n)
	}
	_, reply = h.request("node/edge-1/default/podpatch/web", model.PatchOperation, `{"metadata":{"labels":{"app":"evil"}},"status":{"phase":"Running"}}`)
	if _, err := objectResp(t, reply); err != nil {
		t.Fatalf("Err = %v", err)
	}
	if p := h.getPod("web"); p.Status.Phase != corev1.PodRunning || p.Labels["app"] == "evil" {
		t.Errorf("pod = %+v", p.ObjectMeta)
	}
	_, reply = h.request("node/edge-1/null/node/edge-1", model.UpdateOperation,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"site": "shop-7", "kubernetes.io/hostname": "edge-1"}}})
	wantOK(t, reply)
	if n := h.getNode("edge-1"); n.Labels["site"] != "shop-7" {
		t.Errorf("labels = %v", n.Labels)
	}
}

// TestEventsAuthorization checks a node records events only about itself and its own pods.
func TestEventsAuthorization(t *testing.T) {
	h := start(t, upstreamObjects()...)
	send := func(name string, obj corev1.ObjectReference, ns string) {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Reason: "Started", InvolvedObject: obj}
		msg := model.NewMessage("").BuildRouter(modules.Edged, model.GroupMeta, "node/edge-1/"+ns+"/event/"+name, model.InsertOperation).FillBody(ev)
		must(t, h.bus.SendToGroup(h.ctx, modules.EdgeController, *msg))
	}
	send("other.1", corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "other"}, "default")
	send("edge-2.1", corev1.ObjectReference{Kind: "Node", Name: "edge-2"}, "default")
	send("sa.1", corev1.ObjectReference{Kind: "ServiceAccount", Namespace: "default", Name: "default"}, "default")
	send("web.1", corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web"}, "default")
	send("edge-1.1", corev1.ObjectReference{Kind: "Node", Name: "edge-1"}, "default")
	deadline := time.Now().Add(waitTimeout)
	for {
		list, err := h.kube.CoreV1().Events("default").List(h.ctx, metav1.ListOptions{})
		must(t, err)
		if len(list.Items) >= 2 {
			for _, e := range list.Items {
				if e.Name != "web.1" && e.Name != "edge-1.1" {
					t.Errorf("event %s was recorded", e.Name)
				}
			}
			if len(list.Items) == 2 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("events = %d, want web.1 and edge-1.1", len(list.Items))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
