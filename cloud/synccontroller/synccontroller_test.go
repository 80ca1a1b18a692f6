package synccontroller

import (
	"context"
	"strconv"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

type recordingSender struct {
	mu   sync.Mutex
	msgs []model.Message
}

func (r *recordingSender) Send(_ context.Context, module string, msg model.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if module != "cloudhub" {
		panic("synccontroller must only talk to cloudhub, got " + module)
	}
	r.msgs = append(r.msgs, msg)
	return nil
}

func node(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }

func configMap(name, uid, rv string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid), ResourceVersion: rv}}
}

func objectSync(node, uid, kind, name, rv string) *v1alpha1.ObjectSync {
	return &v1alpha1.ObjectSync{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: v1alpha1.SyncName(node, types.UID(uid))},
		Spec:       v1alpha1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: kind, ObjectName: name},
		Status:     v1alpha1.ObjectSyncStatus{ObjectResourceVersion: rv},
	}
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The fake client assigns its own resourceVersions on create; fixtures set the ones the test needs.
func newFakeClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	return fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.ObjectSync{}, &v1alpha1.ClusterObjectSync{}).Build()
}

func TestReconcile(t *testing.T) {
	// recorded derives the ObjectSync's version from the live object's, which the fake client assigns.
	older := func(live uint64) string { return strconv.FormatUint(live-1, 10) }
	same := func(live uint64) string { return strconv.FormatUint(live, 10) }
	fixed := func(v string) func(uint64) string { return func(uint64) string { return v } }
	tests := []struct {
		name       string
		liveUID    string // "" means the ConfigMap does not exist
		kind       string
		recorded   func(live uint64) string
		wantOp     string // "" means nothing is sent
		wantLiveRV bool
	}{
		{name: "object newer than recorded is resent", liveUID: "u1", recorded: older, wantOp: "update", wantLiveRV: true},
		{name: "never-delivered record (rv 0) is sent", liveUID: "u1", recorded: fixed("0"), wantOp: "update", wantLiveRV: true},
		{name: "up-to-date record sends nothing", liveUID: "u1", recorded: same},
		{name: "empty recorded version is left to cloudhub", liveUID: "u1", recorded: fixed("")},
		{name: "deleted object is deleted on the edge", recorded: fixed("7"), wantOp: "delete"},
		{name: "replaced object (new uid) deletes the old one", liveUID: "u2", recorded: fixed("7"), wantOp: "delete"},
		{name: "non-numeric versions are skipped, not fatal", liveUID: "u1", recorded: fixed("abc")},
		{name: "unsynced kind is ignored", liveUID: "u1", kind: "Lease", recorded: fixed("1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newFakeClient(t, node("edge1"))
			var liveRV uint64
			if tt.liveUID != "" {
				cm := configMap("cm", tt.liveUID, "")
				if err := c.Create(ctx, cm); err != nil {
					t.Fatal(err)
				}
				liveRV, _ = strconv.ParseUint(cm.ResourceVersion, 10, 64)
			}
			kind := tt.kind
			if kind == "" {
				kind = "ConfigMap"
			}
			os := objectSync("edge1", "u1", kind, "cm", "")
			if err := c.Create(ctx, os); err != nil {
				t.Fatal(err)
			}
			os.Status.ObjectResourceVersion = tt.recorded(liveRV)
			if err := c.Status().Update(ctx, os); err != nil {
				t.Fatal(err)
			}

			sender := &recordingSender{}
			if err := New(Options{Reader: c, Writer: c, Sender: sender}).Reconcile(ctx); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if tt.wantOp == "" {
				if len(sender.msgs) != 0 {
					t.Fatalf("sent %v, want nothing", sender.msgs)
				}
				return
			}
			if len(sender.msgs) != 1 {
				t.Fatalf("sent %d messages %v, want one %s", len(sender.msgs), sender.msgs, tt.wantOp)
			}
			m := sender.msgs[0]
			if m.GetOperation() != tt.wantOp || m.GetResource() != "node/edge1/default/configmap/cm" {
				t.Errorf("message = %s %s, want %s node/edge1/default/configmap/cm", m.GetOperation(), m.GetResource(), tt.wantOp)
			}
			if m.GetSource() != "edgecontroller" || m.GetGroup() != "resource" {
				t.Errorf("route = %+v, want source edgecontroller group resource", m.Router)
			}
			if want := strconv.FormatUint(liveRV, 10); tt.wantLiveRV && m.GetResourceVersion() != want {
				t.Errorf("resourceVersion = %q, want the live %q", m.GetResourceVersion(), want)
			}
			var obj metav1.PartialObjectMetadata
			if err := m.UnmarshalContent(&obj); err != nil {
				t.Fatalf("content: %v", err)
			}
			if wantUID := types.UID(map[string]string{"update": tt.liveUID, "delete": "u1"}[tt.wantOp]); obj.UID != wantUID || obj.Name != "cm" {
				t.Errorf("content metadata = %+v, want name cm uid %s", obj.ObjectMeta, wantUID)
			}
		})
	}
}

func TestPrunesSyncsOfDeletedNodes(t *testing.T) {
	ctx := context.Background()
	cos := &v1alpha1.ClusterObjectSync{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.SyncName("edge2", "n2")},
		Spec:       v1alpha1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Node", ObjectName: "edge2"},
	}
	c := newFakeClient(t, node("edge1"), node("edge2"), configMap("cm", "u1", ""),
		objectSync("edge1", "u1", "ConfigMap", "cm", ""), objectSync("edge2", "u1", "ConfigMap", "cm", ""),
		objectSync("gone", "u1", "ConfigMap", "cm", ""), cos)
	ctrl := New(Options{Reader: c, Writer: c, Sender: &recordingSender{}})

	// First pass: records of nodes that do not exist at all go.
	if err := ctrl.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	assertSyncs(t, c, "edge1.u1", "edge2.u1")

	// A node deleted between passes takes its records with it.
	if err := c.Delete(ctx, node("edge2")); err != nil {
		t.Fatal(err)
	}
	if err := ctrl.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	assertSyncs(t, c, "edge1.u1")
	var clusterSyncs v1alpha1.ClusterObjectSyncList
	if err := c.List(ctx, &clusterSyncs); err != nil || len(clusterSyncs.Items) != 0 {
		t.Errorf("cluster object syncs = %v, %v; want none", clusterSyncs.Items, err)
	}
}

func assertSyncs(t *testing.T, c client.Client, want ...string) {
	t.Helper()
	var list v1alpha1.ObjectSyncList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range list.Items {
		got[s.Name] = true
	}
	if len(got) != len(want) {
		t.Fatalf("object syncs = %v, want %v", got, want)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("object sync %s missing; have %v", w, got)
		}
	}
}

func TestNewerThan(t *testing.T) {
	tests := []struct {
		live, recorded string
		want, wantErr  bool
	}{
		{"10", "9", true, false},
		{"9", "10", false, false}, // numeric, not lexical
		{"5", "5", false, false},
		{"x", "5", false, true},
		{"5", "", false, true},
	}
	for _, tt := range tests {
		got, err := newerThan(tt.live, tt.recorded)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("newerThan(%q, %q) = %v, %v; want %v, err %v", tt.live, tt.recorded, got, err, tt.want, tt.wantErr)
		}
	}
}

func typesUID(s string) types.UID { return types.UID(s) }

// graph is an Authorizer whose nodes may hold only the listed ConfigMaps.
type graph map[string]bool

func (g graph) MayHold(node, typ, ns, name string) error {
	if g[node+"/"+ns+"/"+name] {
		return nil
	}
	return &nodeauthz.Refusal{Rule: nodeauthz.RuleReferenced, Node: node, Reason: "no pod of the node uses " + ns + "/" + name}
}

// notReady refuses everything because its graph is not loaded.
type notReady struct{}

func (notReady) MayHold(node, _, _, _ string) error {
	return &nodeauthz.Refusal{Rule: nodeauthz.RuleNotReady, Node: node}
}

// TestReconcileFollowsTheGraph: a newer version of an object the node may no longer hold is not sent, and its
// record is deleted; an authorizer that is not ready yet changes nothing.
func TestReconcileFollowsTheGraph(t *testing.T) {
	tests := []struct {
		name       string
		authz      Authorizer
		wantSent   int
		wantRecord bool
	}{
		{"still used", graph{"edge-1/default/cfg": true}, 1, true},
		{"no longer used", graph{}, 0, false},
		{"graph not loaded", notReady{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cm := configMap("cfg", "uid-cfg", "")
			cl := newFakeClient(t, node("edge-1"), cm, objectSync("edge-1", "uid-cfg", "ConfigMap", "cfg", "1"))
			sender := &recordingSender{}
			c := New(Options{Reader: cl, Writer: cl, Sender: sender, Enabled: true, Authorizer: tt.authz})
			_ = c.Reconcile(context.Background())
			if len(sender.msgs) != tt.wantSent {
				t.Errorf("sent %d messages, want %d", len(sender.msgs), tt.wantSent)
			}
			var list v1alpha1.ObjectSyncList
			if err := cl.List(context.Background(), &list); err != nil {
				t.Fatal(err)
			}
			if got := len(list.Items) == 1; got != tt.wantRecord {
				t.Errorf("record kept = %v, want %v", got, tt.wantRecord)
			}
		})
	}
}
