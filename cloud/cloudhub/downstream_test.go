package cloudhub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	rsv1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

var update = flag.Bool("update", false, "rewrite golden files")

func (e *testEnv) getSync(namespace, name string) (client.Object, *rsv1.ObjectSyncSpec, *rsv1.ObjectSyncStatus, error) {
	obj, spec, status := syncObject(namespace, name)
	err := e.client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	return obj, spec, status, err
}

// putSync creates a sync record as if an earlier delivery had been ACKed.
func (e *testEnv) putSync(namespace, name, rv string) {
	e.t.Helper()
	obj, spec, status := syncObject(namespace, name)
	*spec = rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "web"}
	ctx := context.Background()
	if err := e.client.Create(ctx, obj); err != nil {
		e.t.Fatal(err)
	}
	status.ObjectResourceVersion = rv
	if err := e.client.Status().Update(ctx, obj); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) expectSyncRV(namespace, name string, spec rsv1.ObjectSyncSpec, rv string) {
	e.t.Helper()
	_, gotSpec, status, err := e.getSync(namespace, name)
	if err != nil {
		e.t.Fatalf("object sync %s/%s: %v", namespace, name, err)
	}
	if *gotSpec != spec || status.ObjectResourceVersion != rv {
		e.t.Fatalf("object sync %s/%s = %+v rv %q, want %+v rv %q", namespace, name, *gotSpec, status.ObjectResourceVersion, spec, rv)
	}
}

func (e *testEnv) expectNoSync(namespace, name string) {
	e.t.Helper()
	if _, _, _, err := e.getSync(namespace, name); !apierrors.IsNotFound(err) {
		e.t.Fatalf("object sync %s/%s: got err %v, want not found", namespace, name, err)
	}
}

func (e *testEnv) dropped(reason string) float64 {
	return metricValue(e.t, e.hub.metrics.dropped.WithLabelValues(reason))
}

func TestDownstreamWireFormat(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx", Namespace: "default", UID: "7d1a52c4-8e0b-4f7e-9a51-0c1d2e3f4a5b", ResourceVersion: "42"},
		Spec:       corev1.PodSpec{NodeName: "edge-1", Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27"}}},
	}
	msg := &model.Message{
		Header: model.MessageHeader{ID: "0b9e4f36-2c51-4d8a-b7e3-5f0a1c2d3e4f", Timestamp: 1712345678901, ResourceVersion: "42"},
		Router: model.MessageRoute{Source: modules.EdgeController, Group: model.GroupResource,
			Operation: model.InsertOperation, Resource: "node/edge-1/default/pod/nginx"},
		Content: pod,
	}
	e.toCloudhub(msg)
	got := c.recvRaw()
	golden := filepath.Join("testdata", "downstream_pod.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("wire message differs from %s:\ngot  %s\nwant %s", golden, got, want)
	}
	c.ack(msg)
	e.expectAck(msg.Header.ID)
	e.expectSyncRV("default", "edge-1."+string(pod.UID), rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "nginx"}, "42")
}

func TestAckRecording(t *testing.T) {
	tests := []struct {
		name      string
		msg       *model.Message
		namespace string // of the sync record; "" = none expected
		spec      rsv1.ObjectSyncSpec
	}{
		{
			name:      "namespaced pod",
			msg:       podMsg("edge-1", "web", "uid-pod", "17", model.InsertOperation),
			namespace: "default",
			spec:      rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "web"},
		},
		{
			name: "cluster-scoped node",
			msg: model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/null/node/edge-1", model.UpdateOperation).
				FillBody(`{"metadata":{"name":"edge-1","uid":"uid-node"}}`).SetResourceVersion("17"),
			namespace: "null",
			spec:      rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Node", ObjectName: "edge-1"},
		},
		{
			name: "device",
			msg: model.NewMessage("").BuildRouter(modules.DeviceController, model.GroupResource, "node/edge-1/default/device/thermo", model.InsertOperation).
				FillBody(`{"metadata":{"name":"thermo","namespace":"default","uid":"uid-dev"}}`).SetResourceVersion("17"),
			namespace: "default",
			spec:      rsv1.ObjectSyncSpec{ObjectAPIVersion: "devices.kubeedge.io/v1alpha2", ObjectKind: "Device", ObjectName: "thermo"},
		},
		{
			name: "twin group records nothing",
			msg: model.NewMessage("").BuildRouter(modules.DeviceController, model.GroupTwin, "node/edge-1/device/default/thermo/twin", model.UpdateOperation).
				FillBody(`{"metadata":{"uid":"uid-twin"}}`).SetResourceVersion("17"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envConfig{})
			c := e.connect("edge-1")
			e.toCloudhub(tt.msg)
			got := c.recv()
			if got.Header.ID != tt.msg.Header.ID {
				t.Fatalf("got %s, want %s", got.String(), tt.msg.Header.ID)
			}
			c.ack(&got)
			e.expectAck(got.Header.ID)
			if tt.namespace == "" {
				var syncs rsv1.ObjectSyncList
				var clusterSyncs rsv1.ClusterObjectSyncList
				for _, list := range []client.ObjectList{&syncs, &clusterSyncs} {
					if err := e.client.List(context.Background(), list); err != nil {
						t.Fatal(err)
					}
				}
				if len(syncs.Items)+len(clusterSyncs.Items) != 0 {
					t.Fatalf("sync records created: %+v %+v", syncs.Items, clusterSyncs.Items)
				}
				return
			}
			var uid struct {
				Metadata struct{ UID string } `json:"metadata"`
			}
			if err := tt.msg.UnmarshalContent(&uid); err != nil {
				t.Fatal(err)
			}
			name := "edge-1." + uid.Metadata.UID
			e.expectSyncRV(tt.namespace, name, tt.spec, "17")
			if tt.spec.ObjectKind == "Node" {
				return // a node delete ends the session instead (TestNodeDeleteClosesSession)
			}

			del := tt.msg.Clone()
			del.Header.ID = "delete-" + tt.msg.Header.ID
			del.Router.Operation = model.DeleteOperation
			e.toCloudhub(del)
			got = c.recv()
			if got.Header.ID != del.Header.ID {
				t.Fatalf("got %s, want the delete", got.String())
			}
			c.ack(&got)
			e.expectAck(del.Header.ID)
			e.expectNoSync(tt.namespace, name)
		})
	}
}

func TestResendThenRequeue(t *testing.T) {
	e := newEnv(t, envConfig{opts: func(o *Options) {
		o.AckTimeout = 40 * time.Millisecond
		o.AckAttempts = 3
		o.RequeueBaseDelay = 200 * time.Millisecond
	}})
	c := e.connect("edge-1")
	a := podMsg("edge-1", "a", "uid-a", "5", model.InsertOperation)
	b := podMsg("edge-1", "b", "uid-b", "1", model.InsertOperation)
	e.toCloudhub(a)
	e.toCloudhub(b)
	// a is written AckAttempts times; then it waits out its backoff while b,
	// queued behind it, goes out; then a comes back.
	for i := range 3 {
		if got := c.recv(); got.Header.ID != a.Header.ID {
			t.Fatalf("write %d: got %s, want a", i+1, got.String())
		}
	}
	got := c.recv()
	if got.Header.ID != b.Header.ID {
		t.Fatalf("got %s, want b after a was requeued", got.String())
	}
	if v := metricValue(t, e.hub.metrics.resent); v != 2 {
		t.Errorf("resent = %v, want 2", v)
	}
	c.ack(&got)
	e.expectAck(b.Header.ID)
	if got := c.recv(); got.Header.ID != a.Header.ID {
		t.Fatalf("got %s, want a again after its backoff", got.String())
	}
	c.ack(a)
	e.expectAck(a.Header.ID)
	e.expectSyncRV("default", "edge-1.uid-a", rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "a"}, "5")
	if v := metricValue(t, e.hub.metrics.sent); v != 5 {
		t.Errorf("sent = %v, want 5", v)
	}
	if v := metricValue(t, e.hub.metrics.acked); v != 2 {
		t.Errorf("acked = %v, want 2", v)
	}
}

// TestUnackedReplyDropped: a reply to an edge query that the edge never ACKs (its asker gave up) is written
// AckAttempts times and then dropped, not requeued: it must not hold the node's delivery slot again and again.
func TestUnackedReplyDropped(t *testing.T) {
	e := newEnv(t, envConfig{opts: func(o *Options) {
		o.AckTimeout = 40 * time.Millisecond
		o.AckAttempts = 2
		o.RequeueBaseDelay = 50 * time.Millisecond
	}})
	c := e.connect("edge-1")
	reply := model.NewMessage("query-1").BuildRouter(modules.EdgeController, model.GroupResource,
		"node/edge-1/default/configmap/cfg", model.ResponseOperation).
		FillBody(json.RawMessage(`{"metadata":{"name":"cfg","namespace":"default","uid":"uid-cfg","resourceVersion":"7"}}`))
	reply.SetResourceVersion("7")
	next := podMsg("edge-1", "b", "uid-b", "1", model.InsertOperation)
	e.toCloudhub(reply)
	e.toCloudhub(next)
	for i := range 2 {
		if got := c.recv(); got.Header.ID != reply.Header.ID {
			t.Fatalf("write %d: got %s, want the reply", i+1, got.String())
		}
	}
	got := c.recv()
	if got.Header.ID != next.Header.ID {
		t.Fatalf("got %s, want the next message after the reply was given up", got.String())
	}
	c.ack(&got)
	e.expectAck(next.Header.ID)
	e.eventually("reply dropped", func() bool { return e.dropped(reasonUnackedReply) == 1 })
	e.waitQueued(0, 0)
}

func TestStaleAgainstObjectSync(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.putSync("default", "edge-1.uid-a", "10")
	e.putSync("default", "edge-1.uid-bad", "not-a-number")
	c := e.connect("edge-1")

	e.toCloudhub(podMsg("edge-1", "a", "uid-a", "10", model.UpdateOperation))
	e.toCloudhub(podMsg("edge-1", "a", "uid-a", "9", model.UpdateOperation))
	// A record that cannot be read does not block delivery.
	bad := podMsg("edge-1", "bad", "uid-bad", "3", model.UpdateOperation)
	e.toCloudhub(bad)
	if got := c.recv(); got.Header.ID != bad.Header.ID {
		t.Fatalf("got %s, want only the message with the unreadable record", got.String())
	}
	c.ack(bad)
	e.expectAck(bad.Header.ID)
	newer := podMsg("edge-1", "a", "uid-a", "11", model.UpdateOperation)
	e.toCloudhub(newer)
	if got := c.recv(); got.Header.ID != newer.Header.ID {
		t.Fatalf("got %s, want RV 11", got.String())
	}
	if v := e.dropped(reasonStale); v != 2 {
		t.Errorf("dropped{stale} = %v, want 2", v)
	}
}

func TestInvalidResourceVersion(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	e.toCloudhub(podMsg("edge-1", "a", "uid-a", "12abc", model.UpdateOperation))
	noRV := podMsg("edge-1", "b", "uid-b", "", model.UpdateOperation)
	e.toCloudhub(noRV)
	// Deletes do not need a usable RV.
	del := podMsg("edge-1", "c", "uid-c", "x", model.DeleteOperation)
	e.toCloudhub(del)
	if got := c.recv(); got.Header.ID != del.Header.ID {
		t.Fatalf("got %s, want only the delete", got.String())
	}
	if v := e.dropped(reasonInvalid); v != 2 {
		t.Errorf("dropped{invalid} = %v, want 2", v)
	}
}

// waitQueued waits until the hub holds exactly ack and noack messages.
func (e *testEnv) waitQueued(ack, noack int) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("queues ack=%d noack=%d", ack, noack), func() bool {
		a, n := e.hub.queueLengths()
		return a == ack && n == noack
	})
}

func TestOfflineNode(t *testing.T) {
	t.Run("never connected: newest version delivered on connect", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		e.toCloudhub(podMsg("edge-1", "a", "uid-a", "1", model.InsertOperation))
		e.toCloudhub(podMsg("edge-1", "a", "uid-a", "3", model.UpdateOperation))
		e.toCloudhub(podMsg("edge-1", "a", "uid-a", "2", model.UpdateOperation))
		list := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/default/podlist", model.UpdateOperation).FillBody("[]")
		e.toCloudhub(list)
		e.waitQueued(1, 1)
		// The record exists before the first delivery, so SyncController
		// would redeliver even if this cloudcore went away now.
		e.eventually("object sync created", func() bool {
			_, _, status, err := e.getSync("default", "edge-1.uid-a")
			return err == nil && status.ObjectResourceVersion == "0"
		})

		c := e.connect("edge-1")
		var newest model.Message
		for range 2 {
			got := c.recv()
			switch got.Header.ID {
			case list.Header.ID:
			default:
				newest = got
			}
		}
		if newest.Header.ResourceVersion != "3" {
			t.Fatalf("got %s rv %s, want rv 3", newest.String(), newest.Header.ResourceVersion)
		}
		c.ack(&newest)
		e.expectAck(newest.Header.ID)
		e.expectSyncRV("default", "edge-1.uid-a", rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "a"}, "3")
		sentinel := podMsg("edge-1", "s", "uid-s", "1", model.InsertOperation)
		e.toCloudhub(sentinel)
		if got := c.recv(); got.Header.ID != sentinel.Header.ID {
			t.Fatalf("got %s, want nothing before the sentinel", got.String())
		}
	})

	t.Run("pending delete wins", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		e.toCloudhub(podMsg("edge-1", "a", "uid-a", "5", model.InsertOperation))
		del := podMsg("edge-1", "a", "uid-a", "6", model.DeleteOperation)
		e.toCloudhub(del)
		e.toCloudhub(podMsg("edge-1", "a", "uid-a", "7", model.UpdateOperation))
		e.eventually("newer update dropped", func() bool { return e.dropped(reasonStale) == 1 })
		e.waitQueued(1, 0)
		c := e.connect("edge-1")
		if got := c.recv(); got.Header.ID != del.Header.ID {
			t.Fatalf("got %s, want the delete", got.String())
		}
		c.ack(del)
		e.expectAck(del.Header.ID)
		e.expectNoSync("default", "edge-1.uid-a")
	})

	t.Run("messages wait across a reconnect", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		c := e.connect("edge-1")
		_ = c.conn.Close()
		e.expectEvent("edge-1", model.DisconnectedOperation)
		msgs := []*model.Message{
			podMsg("edge-1", "a", "uid-a", "1", model.InsertOperation),
			model.NewMessage("").BuildRouter(modules.DeviceController, model.GroupTwin, "node/edge-1/membership", model.UpdateOperation).FillBody("{}"),
		}
		for _, m := range msgs {
			e.toCloudhub(m)
		}
		e.waitQueued(1, 1)
		c = e.connect("edge-1")
		seen := map[string]bool{}
		for range msgs {
			got := c.recv()
			seen[got.Header.ID] = true
			if got.Router.Operation != model.InsertOperation {
				continue
			}
			c.ack(&got)
			e.expectAck(got.Header.ID)
		}
		for _, m := range msgs {
			if !seen[m.Header.ID] {
				t.Errorf("%s not delivered after reconnect", m.String())
			}
		}
	})

	t.Run("unacked message returns to the queue on disconnect", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		c := e.connect("edge-1")
		m := podMsg("edge-1", "a", "uid-a", "1", model.InsertOperation)
		e.toCloudhub(m)
		if got := c.recv(); got.Header.ID != m.Header.ID {
			t.Fatalf("got %s", got.String())
		}
		_ = c.conn.Close()
		e.expectEvent("edge-1", model.DisconnectedOperation)
		c = e.connect("edge-1")
		if got := c.recv(); got.Header.ID != m.Header.ID {
			t.Fatalf("after reconnect got %s, want the unacked message", got.String())
		}
	})

	t.Run("fire-and-forget queue is bounded, oldest dropped", func(t *testing.T) {
		e := newEnv(t, envConfig{opts: func(o *Options) { o.MaxNoAckPerNode = 3 }})
		var ids []string
		for i := range 5 {
			m := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/default/podlist", model.UpdateOperation).
				FillBody(fmt.Sprint(i))
			ids = append(ids, m.Header.ID)
			e.toCloudhub(m)
		}
		e.eventually("oldest dropped", func() bool { return e.dropped(reasonOverflow) == 2 })
		e.waitQueued(0, 3)
		c := e.connect("edge-1")
		for _, id := range ids[2:] {
			if got := c.recv(); got.Header.ID != id {
				t.Fatalf("got %s, want %s (order kept, oldest dropped)", got.String(), id)
			}
		}
		if v := e.dropped(reasonOverflow); v != 2 {
			t.Errorf("dropped{noack_overflow} = %v, want 2", v)
		}
	})
}

func TestNodeDeleteClosesSession(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	e.toCloudhub(model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/null/node/edge-1", model.DeleteOperation))
	if err := c.expectClosed(); err == nil {
		t.Fatal("session not closed")
	}
	e.expectEvent("edge-1", model.DisconnectedOperation)
	// Queues of the deleted node are gone too.
	e.toCloudhub(podMsg("edge-2", "a", "uid-a", "1", model.InsertOperation))
	e.waitQueued(1, 0)
	e.toCloudhub(model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-2/null/node/edge-2", model.DeleteOperation))
	e.waitQueued(0, 0)
}

func TestDownstreamWithoutNodeDropped(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.toCloudhub(model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "default/pod/web", model.InsertOperation))
	e.eventually("drop counted", func() bool { return e.dropped(reasonNoNode) == 1 })
}

func TestNeedsAck(t *testing.T) {
	ec := modules.EdgeController
	tests := []struct {
		name                               string
		source, group, operation, resource string
		content                            any
		want                               bool
	}{
		{"pod insert", ec, "resource", "insert", "node/n/default/pod/p", nil, true},
		{"pod update", ec, "resource", "update", "node/n/default/pod/p", nil, true},
		{"pod delete", ec, "resource", "delete", "node/n/default/pod/p", nil, true},
		{"configmap", ec, "resource", "insert", "node/n/default/configmap/c", nil, true},
		{"secret", ec, "resource", "update", "node/n/default/secret/s", nil, true},
		{"node update", ec, "resource", "update", "node/n/null/node/n", nil, true},
		{"node insert", ec, "resource", "insert", "node/n/null/node/n", nil, false},
		{"node response", ec, "resource", "response", "node/n/null/node/n", `{"Object":{}}`, false},
		{"podlist", ec, "resource", "update", "node/n/default/podlist", nil, false},
		{"membership", modules.DeviceController, "twin", "update", "node/n/membership", nil, false},
		{"membership detail", modules.DeviceController, "twin", "response", "node/n/membership/detail", nil, false},
		{"twin cloud_updated", modules.DeviceController, "twin", "update", "node/n/device/ns/d/twin/cloud_updated", nil, false},
		{"serviceaccounttoken", ec, "resource", "response", "node/n/default/serviceaccounttoken", nil, false},
		{"k8s ca", ec, "resource", "response", "node/n/k8s/ca.crt", nil, false},
		{"csi createvolume", "csidriver", "resource", "createvolume", "node/n/null/volume/v", nil, false},
		{"csi deletevolume", "csidriver", "resource", "deletevolume", "node/n/null/volume/v", nil, false},
		{"csi publish", "csidriver", "resource", "controllerpublishvolume", "node/n/null/volume/v", nil, false},
		{"csi unpublish", "csidriver", "resource", "controllerunpublishvolume", "node/n/null/volume/v", nil, false},
		{"applicationResponse", "dynamiccontroller", "meta", "applicationResponse", "node/n/default/Application/a", nil, false},
		{"user group", "router", "user", "publish", "node/n/topic", nil, false},
		{"taskmanager", modules.TaskManager, "taskmanager", "upgrade", "node/n/task/t", nil, false},
		{"nodeupgradejobcontroller", "nodeupgradejobcontroller", "resource", "upgrade", "node/n/upgrade", nil, false},
		{"response OK", "metamanager", "resource", "response", "node/n/default/configmap/c", "OK", false},
		{"response error value", "metamanager", "resource", "response", "node/n/default/configmap/c", errors.New("boom"), false},
		{"response with object", "metamanager", "resource", "response", "node/n/default/configmap/c", `{"metadata":{}}`, true},
		{"lease", ec, "resource", "response", "node/n/kube-node-lease/lease/n", nil, false},
		{"nodepatch", ec, "resource", "response", "node/n/null/nodepatch/n", nil, false},
		{"podpatch", ec, "resource", "response", "node/n/default/podpatch/p", nil, false},
		{"podstatus", ec, "resource", "update", "node/n/default/podstatus/p", nil, false},
		{"csr", ec, "resource", "response", "node/n/null/certificatesigningrequest/c", nil, false},
		{"pod response", ec, "resource", "response", "node/n/default/pod/p", `{}`, false},
		{"pod response from elsewhere", "metamanager", "resource", "response", "node/n/default/pod/p", `{}`, true},
		{"device", modules.DeviceController, "resource", "insert", "node/n/default/device/d", nil, true},
		{"node insert by another source", modules.SyncController, "resource", "insert", "node/n/null/node/n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := model.NewMessage("").BuildRouter(tt.source, tt.group, tt.resource, tt.operation).FillBody(tt.content)
			if got := needsAck(m); got != tt.want {
				t.Errorf("needsAck(%s) = %v, want %v", m.String(), got, tt.want)
			}
		})
	}
}

func TestIsToEdge(t *testing.T) {
	tests := []struct {
		source, operation, resource string
		want                        bool
	}{
		{"edgecontroller", "delete", "node/n/null/node/n", true},
		{"edgemgr", "delete", "node/n/null/node/n", false},
		{"edgemgr", "get", "node/n/membership", false},
		{"edgemgr", "delta", "node/n/device/d/twin", false},
		{"edgemgr", "document", "node/n/device/d/twin", false},
		{"edgemgr", "get", "node/n/auth_info", false},
		{"edgemgr", "update", "node/n/default/pod/p", true},
	}
	for _, tt := range tests {
		m := model.NewMessage("").BuildRouter(tt.source, "resource", tt.resource, tt.operation)
		if got := isToEdge(m); got != tt.want {
			t.Errorf("isToEdge(%s) = %v, want %v", m.String(), got, tt.want)
		}
	}
}

func TestQueuedMsgSupersedes(t *testing.T) {
	q := func(rv uint64, del bool) *queuedMsg { return &queuedMsg{rv: rv, del: del, uid: types.UID("u")} }
	tests := []struct {
		name      string
		next, cur *queuedMsg
		want      bool
	}{
		{"newer RV", q(5, false), q(4, false), true},
		{"same RV", q(4, false), q(4, false), false},
		{"older RV", q(3, false), q(4, false), false},
		{"delete over update", q(1, true), q(4, false), true},
		{"update after delete", q(9, false), q(4, true), false},
		{"delete after delete", q(9, true), q(4, true), false},
	}
	for _, tt := range tests {
		if got := tt.next.supersedes(tt.cur); got != tt.want {
			t.Errorf("%s: supersedes = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMetricsExported(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	m := podMsg("edge-1", "a", "uid-a", "1", model.InsertOperation)
	e.toCloudhub(m)
	c.recv()
	c.ack(m)
	e.expectAck(m.Header.ID)
	e.hub.metrics.dropped.WithLabelValues(reasonStale).Add(0)
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"tether_cloudhub_connected_nodes": false, "tether_cloudhub_queue_length": false,
		"tether_cloudhub_messages_sent_total": false, "tether_cloudhub_messages_acked_total": false,
		"tether_cloudhub_messages_resent_total": false, "tether_cloudhub_messages_dropped_total": false,
	}
	for _, f := range families {
		if _, ok := want[f.GetName()]; ok {
			want[f.GetName()] = true
		}
		switch f.GetName() {
		case "tether_cloudhub_connected_nodes":
			if v := f.GetMetric()[0].GetGauge().GetValue(); v != 1 {
				t.Errorf("connected_nodes = %v, want 1", v)
			}
		case "tether_cloudhub_queue_length":
			if n := len(f.GetMetric()); n != 2 {
				t.Errorf("queue_length has %d series, want ack and noack", n)
			}
		case "tether_cloudhub_messages_acked_total":
			if v := f.GetMetric()[0].GetCounter().GetValue(); v != 1 {
				t.Errorf("acked = %v, want 1", v)
			}
		}
	}
	for name, found := range want {
		if !found {
			t.Errorf("metric %s not exported", name)
		}
	}
}

// denyPods is an Authorizer under which nodes may hold no pod named "secret-*".
type denyPods struct{}

func (denyPods) MayHold(node, typ, ns, name string) error {
	if typ == resource.TypePod && strings.HasPrefix(name, "secret-") {
		return fmt.Errorf("node %s may not hold pod %s/%s", node, ns, name)
	}
	return nil
}

func TestDownstreamObeysAuthorizer(t *testing.T) {
	e := newEnv(t, envConfig{opts: func(o *Options) { o.Authorizer = denyPods{} }})
	c := e.connect("edge-1")
	e.toCloudhub(podMsg("edge-1", "secret-a", "uid-a", "1", model.InsertOperation))
	e.eventually("drop counted", func() bool { return e.dropped(reasonUnauthorized) == 1 })
	// Deletes always pass: dropping an object from a node is always allowed.
	del := podMsg("edge-1", "secret-b", "uid-b", "2", model.DeleteOperation)
	e.toCloudhub(del)
	got := c.recv()
	if got.Header.ID != del.Header.ID {
		t.Fatalf("got %s, want only the delete", got.String())
	}
	c.ack(&got)
	ok := podMsg("edge-1", "web", "uid-w", "3", model.InsertOperation)
	e.toCloudhub(ok)
	if got := c.recv(); got.Header.ID != ok.Header.ID {
		t.Fatalf("got %s, want the allowed pod", got.String())
	}
}

// TestHungAPIServerDoesNotStallDelivery: with every ObjectSync write hanging (an API server that accepts but does
// not answer), ACKed messages still free the node's delivery slot at once and the next ones go out; the records
// land once the API server answers again.
func TestHungAPIServerDoesNotStallDelivery(t *testing.T) {
	var hung atomic.Bool
	release := make(chan struct{})
	hang := func(ctx context.Context) error {
		if !hung.Load() {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e := newEnv(t, envConfig{opts: func(o *Options) {
		o.SyncCallTimeout = time.Minute // far beyond the test's waits: only a design off the delivery path passes
		o.Reader = o.Client
		o.Client = interceptor.NewClient(o.Client.(client.WithWatch), interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if err := hang(ctx); err != nil {
					return err
				}
				return c.Get(ctx, key, obj, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := hang(ctx); err != nil {
					return err
				}
				return c.Create(ctx, obj, opts...)
			},
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				if err := hang(ctx); err != nil {
					return err
				}
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
		})
	}})
	c := e.connect("edge-1")
	hung.Store(true)
	msgs := []*model.Message{
		podMsg("edge-1", "a", "uid-a", "5", model.InsertOperation),
		podMsg("edge-1", "b", "uid-b", "6", model.InsertOperation),
		podMsg("edge-1", "c", "uid-c", "7", model.InsertOperation),
	}
	for _, m := range msgs {
		e.toCloudhub(m)
	}
	for _, want := range msgs {
		got := c.recv()
		if got.Header.ID != want.Header.ID {
			t.Fatalf("got %s, want %s", got.String(), want.String())
		}
		c.ack(&got)
	}
	e.expectNoSync("default", "edge-1.uid-a")
	hung.Store(false)
	close(release)
	want := map[string]bool{}
	for _, m := range msgs {
		want[m.Header.ID] = true
	}
	for range msgs {
		select {
		case id := <-e.acks: // records are written concurrently, in any order
			if !want[id] {
				t.Fatalf("unexpected or repeated ACK record for %s", id)
			}
			delete(want, id)
		case <-time.After(waitTimeout):
			t.Fatalf("records not written after the API server answered again: %v", want)
		}
	}
	e.expectSyncRV("default", "edge-1.uid-c", rsv1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "c"}, "7")
}
