//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/cloud/edgecontroller"
	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/tests/framework"
)

// wireClient speaks the edge side of the wire protocol with one node's certificate, as a compromised edge host
// would: it sends what it likes, ACKs what it receives and collects the replies.
type wireClient struct {
	t    *testing.T
	conn *websocket.Conn

	mu       sync.Mutex
	replies  map[string]model.Message // by parent id
	received []model.Message
	notify   chan struct{}
	writeMu  sync.Mutex
}

func newWireClient(t *testing.T, conn *websocket.Conn) *wireClient {
	c := &wireClient{t: t, conn: conn, replies: map[string]model.Message{}, notify: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { conn.Close() })
	return c
}

func (c *wireClient) read() {
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		var m model.Message
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		c.mu.Lock()
		if m.Header.ParentID != "" && (m.Router.Operation == model.ResponseOperation || m.Router.Operation == model.ResponseErrorOperation) {
			c.replies[m.Header.ParentID] = m
		} else {
			c.received = append(c.received, m)
		}
		close(c.notify)
		c.notify = make(chan struct{})
		c.mu.Unlock()
		// ACK everything, replies with objects included, as EdgeHub does; CloudHub ignores ACKs it did not ask for.
		// A failed ACK means the connection is closing, which ends this loop at the next read.
		_ = c.write(model.NewRespByMessage(&m, "OK"))
	}
}

// send writes m for the test; call it from the test's goroutine only.
func (c *wireClient) send(m *model.Message) {
	c.t.Helper()
	if err := c.write(m); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wireClient) write(m *model.Message) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", m.String(), err)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("writing %s: %w", m.String(), err)
	}
	return nil
}

// request sends one message as edged does and returns the cloud's reply.
func (c *wireClient) request(res, op string, body any) model.Message {
	c.t.Helper()
	m := model.NewMessage("").BuildRouter("edged", model.GroupMeta, res, op).FillBody(body)
	c.send(m)
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		reply, ok := c.replies[m.Header.ID]
		notify := c.notify
		c.mu.Unlock()
		if ok {
			return reply
		}
		select {
		case <-notify:
		case <-deadline:
			c.t.Fatalf("no reply to %s %s", op, res)
		}
	}
}

// fire sends a message no reply is expected to (events).
func (c *wireClient) fire(res, op string, body any) {
	c.send(model.NewMessage("").BuildRouter("edged", model.GroupMeta, res, op).FillBody(body))
}

func (c *wireClient) receivedFor(resource string) []model.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []model.Message
	for _, m := range c.received {
		if m.Router.Resource == resource {
			out = append(out, m)
		}
	}
	return out
}

// replyError returns the API error a reply carries, in either shape the cloud answers with ({"ErrStatus":...} or
// {"Object":...,"Err":...}), or nil.
func replyError(t *testing.T, m model.Message) *metav1.Status {
	t.Helper()
	data, err := m.GetContentData()
	if err != nil {
		t.Fatalf("reply content: %v", err)
	}
	var shapes struct {
		ErrStatus *metav1.Status
		Err       *struct{ ErrStatus metav1.Status }
	}
	if json.Unmarshal(data, &shapes) != nil {
		return nil
	}
	switch {
	case shapes.ErrStatus != nil:
		return shapes.ErrStatus
	case shapes.Err != nil:
		return &shapes.Err.ErrStatus
	}
	return nil
}

// TestAttacksFromAnEdgeNode runs a real cloudcore against the real API server and attacks it over the wire with
// one edge node's real certificate: every request a malicious node could make to reach beyond what is bound to it.
// Each is refused with the rule that forbids it, counted in the metric, and nothing changes in the API server;
// meanwhile the node's own traffic keeps working.
func TestAttacksFromAnEdgeNode(t *testing.T) {
	framework.FailOnErrorLogs(t) // refusals are Info lines: an attack is not an error of cloudcore's
	cp := framework.StartControlPlane(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud"))
	monitor := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	cfg.CommonConfig.MonitorServer.BindAddress = monitor
	cloud := framework.StartCloud(t, cfg)
	l := &linkEnv{cp: cp, cloud: cloud, token: framework.Token(t, cp), dir: dir}

	const me, victim = "edge-a", "edge-b"
	cert := nodeCertificate(t, l, me) // joined while the name was free, as keadm join does
	create := func(objs ...client.Object) {
		t.Helper()
		for _, o := range objs {
			if err := cp.Client.Create(ctx, o); err != nil {
				t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
			}
		}
	}
	edgeLabels := map[string]string{"node-role.kubernetes.io/edge": ""}
	create(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: victim, Labels: edgeLabels}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "app-cfg"}, Data: map[string]string{"v": "1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "app-sec"}, StringData: map[string]string{"k": "mine"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-pass"}, StringData: map[string]string{"k": "theirs"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "admin"}},
	)
	conn := dialHubConn(t, l, cert, me)
	edge := newWireClient(t, conn)

	// The node registers itself, as edged does, with an allowed label of its own.
	reg := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: me, Labels: map[string]string{"site": "shop-7", "kubernetes.io/hostname": me}}}
	if st := replyError(t, edge.request("default/node/"+me, model.InsertOperation, reg)); st != nil {
		t.Fatalf("registration refused: %+v", st)
	}
	var myNode corev1.Node
	must(t, cp.Client.Get(ctx, client.ObjectKey{Name: me}, &myNode))
	podOn := func(name, node, secret string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "tether/testapp:v1"}},
				Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}}}}
	}
	web := podOn("web", me, "app-sec")
	web.Spec.Volumes = append(web.Spec.Volumes, corev1.Volume{Name: "c", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-cfg"}}}})
	db := podOn("db", victim, "db-pass")
	create(web, db)
	// The cloud pushes the node its pod and what the pod uses.
	framework.Eventually(t, 30*time.Second, "pod web and its secret at the edge", func() bool {
		return len(edge.receivedFor("shop/pod/web")) > 0 && len(edge.receivedFor("shop/secret/app-sec")) > 0
	})
	// cloudcore's own writes (edge autonomy's toleration patches) settle before the snapshot.
	framework.Eventually(t, 30*time.Second, "edge autonomy applied to both pods", func() bool {
		for _, name := range []string{"web", "db"} {
			var p corev1.Pod
			if cp.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p) != nil || p.Annotations[edgecontroller.AutonomyRestoreAnnotation] == "" {
				return false
			}
		}
		return true
	})

	before := apiSnapshot(t, cp)
	forged := func(name string, mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name,
			Annotations:     map[string]string{"kubernetes.io/config.mirror": "x"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: me, UID: myNode.UID, Controller: ptr.To(true)}}},
			Spec: corev1.PodSpec{NodeName: me, Containers: []corev1.Container{{Name: "c", Image: "tether/testapp:v1"}}}}
		mutate(p)
		return p
	}
	token := func(sa string, ref *authv1.BoundObjectReference) *authv1.TokenRequest {
		return &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{BoundObjectRef: ref}}
	}
	dbRef := &authv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "db", UID: podUID(t, cp, "db")}
	attacks := []struct {
		name, res, op string
		body          any
		rule          string
	}{
		{"read the CA key", "kubeedge/secret/casecret", model.QueryOperation, nil, "referenced-object"},
		{"read the join token", "kubeedge/secret/tokensecret", model.QueryOperation, nil, "referenced-object"},
		{"read another node's pod's secret", "shop/secret/db-pass", model.QueryOperation, nil, "referenced-object"},
		{"read a kube-system configmap", "kube-system/configmap/kube-root-ca.crt", model.QueryOperation, nil, "referenced-object"},
		{"token for kube-system admin, unbound", "kube-system/serviceaccounttoken/admin", model.QueryOperation, token("admin", nil), "serviceaccount-token"},
		{"token bound to another node's pod", "shop/serviceaccounttoken/default", model.QueryOperation, token("default", dbRef), "serviceaccount-token"},
		{"plain pod with another pod's secret", "shop/pod/steal", model.InsertOperation, forged("steal", func(p *corev1.Pod) {
			p.Annotations = nil
			p.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db-pass"}}}}
		}), "mirror-pod"},
		{"mirror pod with another pod's secret", "shop/pod/steal2", model.InsertOperation, forged("steal2", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db-pass"}}}}
		}), "mirror-pod"},
		{"mirror pod running as the admin account", "shop/pod/steal3", model.InsertOperation, forged("steal3", func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = "admin"
		}), "mirror-pod"},
		{"mirror pod on another node", "shop/pod/steal4", model.InsertOperation, forged("steal4", func(p *corev1.Pod) { p.Spec.NodeName = victim }), "mirror-pod"},
		{"label itself to attract pinned workloads", "null/node/" + me, model.UpdateOperation,
			&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: me, Labels: map[string]string{"node-restriction.kubernetes.io/tier": "secure"}}}, "node-labels"},
		{"claim the control-plane role", "default/nodepatch/" + me, model.PatchOperation,
			`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`, "node-labels"},
		{"patch another node's status", "default/nodepatch/" + victim, model.PatchOperation, `{"status":{"phase":"Terminated"}}`, "own-node"},
		{"write another node's lease", "kube-node-lease/lease/" + victim, model.InsertOperation,
			&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-node-lease", Name: victim}}, "own-node"},
		{"fail another node's pod", "shop/podpatch/db", model.PatchOperation, `{"status":{"phase":"Failed"}}`, "pod-bound"},
		{"delete another node's pod", "shop/pod/db", model.DeleteOperation, string(dbRef.UID), "pod-bound"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			st := replyError(t, edge.request(a.res, a.op, a.body))
			if st == nil || st.Code != http.StatusForbidden || !strings.Contains(st.Message, a.rule) {
				t.Fatalf("reply %+v, want 403 naming rule %s", st, a.rule)
			}
		})
	}
	// Fire-and-forget: events about someone else's pod, and a message claiming to come from a cloud module.
	edge.fire("shop/event/db.1", model.InsertOperation, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db.1"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "db"}, Reason: "Killing", Message: "forged"})
	edge.send(model.NewMessage("").BuildRouter("edgecontroller", model.GroupResource, "shop/secret/db-pass", model.QueryOperation))

	// The node's own traffic flows: its pod's secret, a token for its pod, its status, an event about its pod.
	if st := replyError(t, edge.request("shop/secret/app-sec", model.QueryOperation, nil)); st != nil {
		t.Errorf("own secret refused: %+v", st)
	}
	if st := replyError(t, edge.request("shop/podpatch/web", model.PatchOperation, `{"status":{"phase":"Running"}}`)); st != nil {
		t.Errorf("own pod status refused: %+v", st)
	}
	if st := replyError(t, edge.request("default/nodepatch/"+me, model.PatchOperation, `{"status":{"capacity":{"pods":"11"}}}`)); st != nil {
		t.Errorf("own node status refused: %+v", st)
	}
	edge.fire("shop/event/web.1", model.InsertOperation, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web.1"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web"}, Reason: "Started"})
	framework.Eventually(t, 30*time.Second, "the node's own event", func() bool {
		var ev corev1.Event
		return cp.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web.1"}, &ev) == nil
	})

	// Nothing the attacks aimed at changed.
	after := apiSnapshot(t, cp)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed: %s -> %s", k, v, after[k])
		}
	}
	for _, k := range []string{"pod shop/steal", "pod shop/steal2", "pod shop/steal3", "pod shop/steal4", "event shop/db.1"} {
		if _, ok := after[k]; ok {
			t.Errorf("%s was created", k)
		}
	}
	var n corev1.Node
	must(t, cp.Client.Get(ctx, client.ObjectKey{Name: me}, &n))
	if n.Labels["site"] != "shop-7" || n.Status.Capacity.Pods().Value() != 11 {
		t.Errorf("own node = labels %v capacity %v", n.Labels, n.Status.Capacity)
	}
	for k := range n.Labels {
		if strings.Contains(k, "node-restriction") || strings.Contains(k, "control-plane") {
			t.Errorf("node got label %s", k)
		}
	}

	// The refusals are counted by rule.
	for _, rule := range []string{"referenced-object", "serviceaccount-token", "mirror-pod", "node-labels", "own-node", "pod-bound", "event-object"} {
		series := `tether_nodeauthz_refusals_total{rule="` + rule + `"} `
		framework.Eventually(t, 10*time.Second, "a counted refusal by rule "+rule, func() bool {
			metrics := scrape(t, monitor)
			return strings.Contains(metrics, series) && !strings.Contains(metrics, series+"0\n")
		})
	}

	// Downstream follows the same graph: once web is gone, app-cfg changes no longer reach the node and its sync
	// record goes.
	must(t, cp.Client.Delete(ctx, web, client.GracePeriodSeconds(0)))
	framework.Eventually(t, 30*time.Second, "delete of web at the edge", func() bool {
		for _, m := range edge.receivedFor("shop/pod/web") {
			if m.Router.Operation == model.DeleteOperation {
				return true
			}
		}
		return false
	})
	var cm corev1.ConfigMap
	must(t, cp.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "app-cfg"}, &cm))
	cm.Data["v"] = "2"
	must(t, cp.Client.Update(ctx, &cm))
	framework.Eventually(t, 30*time.Second, "app-cfg sync record of "+me+" dropped", func() bool {
		var syncs v1alpha1.ObjectSyncList
		must(t, cp.Client.List(ctx, &syncs, client.InNamespace("shop")))
		for _, s := range syncs.Items {
			if s.Spec.ObjectName == "app-cfg" && strings.HasPrefix(s.Name, me+".") {
				return false
			}
		}
		return true
	})
	if st := replyError(t, edge.request("shop/configmap/app-cfg", model.QueryOperation, nil)); st == nil || st.Code != http.StatusForbidden {
		t.Errorf("configmap of a deleted pod: reply %+v, want 403", st)
	}
	for _, m := range edge.receivedFor("shop/configmap/app-cfg") {
		if m.Header.ResourceVersion == cm.ResourceVersion {
			t.Errorf("app-cfg %s reached the node after its last pod was deleted", cm.ResourceVersion)
		}
	}
}

func podUID(t *testing.T, cp *framework.ControlPlane, name string) types.UID {
	t.Helper()
	var p corev1.Pod
	must(t, cp.Client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: name}, &p))
	return p.UID
}

// apiSnapshot maps every object an attack could aim at to its resourceVersion.
func apiSnapshot(t *testing.T, cp *framework.ControlPlane) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	add := func(kind string, items []metav1.Object) {
		for _, o := range items {
			out[kind+" "+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	var pods corev1.PodList
	must(t, cp.Client.List(ctx, &pods))
	var nodes corev1.NodeList
	must(t, cp.Client.List(ctx, &nodes))
	var secrets corev1.SecretList
	must(t, cp.Client.List(ctx, &secrets))
	var leases coordv1.LeaseList
	must(t, cp.Client.List(ctx, &leases))
	var events corev1.EventList
	must(t, cp.Client.List(ctx, &events, client.InNamespace("shop")))
	add("pod", objs(pods.Items))
	for _, n := range nodes.Items {
		if n.Name != "edge-a" { // its own status is written by its own (allowed) traffic
			out["node /"+n.Name] = n.ResourceVersion
		}
	}
	add("secret", objs(secrets.Items))
	add("lease", objs(leases.Items))
	for _, e := range events.Items {
		if e.InvolvedObject.Name != "web" {
			out["event "+e.Namespace+"/"+e.Name] = e.ResourceVersion
		}
	}
	delete(out, "pod shop/web") // its status is the node's to write
	return out
}

func objs[T any, PT interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
