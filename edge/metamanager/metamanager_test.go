package metamanager_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tether-edge/tether/edge/metamanager"
	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestNew(t *testing.T) {
	if _, err := metamanager.New(nil, nil, nil); err == nil {
		t.Error("New(nil, nil, nil): want error")
	}
	h := newHarness(t, harnessOpts{})
	if h.mm.Name() != "metamanager" || h.mm.Group() != "meta" || !h.mm.Enable() {
		t.Errorf("module = %s/%s enabled=%v", h.mm.Name(), h.mm.Group(), h.mm.Enable())
	}
	if h.mm.Connected() {
		t.Error("connected before EdgeHub said so")
	}
}

// TestCloudWritePersistedBeforeAck checks the edge-autonomy contract: the row
// is committed when the ACK leaves, and the ACK is exactly what CloudHub
// correlates on.
func TestCloudWritePersistedBeforeAck(t *testing.T) {
	tests := []struct {
		name      string
		source    string
		op        string
		res       string
		content   json.RawMessage
		toEdged   bool
		wantStore bool
	}{
		{"pod insert", modules.EdgeController, model.InsertOperation, "default/pod/web", podJSON("web", "u1", "5"), true, true},
		{"pod update", modules.EdgeController, model.UpdateOperation, "default/pod/web", podJSON("web", "u1", "6"), true, true},
		{"secret update from sync", modules.EdgeController, model.UpdateOperation, "default/secret/s", json.RawMessage(`{"kind":"Secret"}`), true, true},
		{"configmap from dynamiccontroller", modules.DynamicController, model.InsertOperation, "default/configmap/c", json.RawMessage(`{"kind":"ConfigMap"}`), true, true},
		{"node update is not for edged", modules.EdgeController, model.UpdateOperation, "null/node/edge-1", json.RawMessage(`{"kind":"Node"}`), false, true},
		{"device goes to twin, not edged", modules.DeviceController, model.InsertOperation, "default/device/d1", json.RawMessage(`{"kind":"Device"}`), false, true},
		{"configmap delete", modules.EdgeController, model.DeleteOperation, "default/configmap/c", json.RawMessage(`{"kind":"ConfigMap"}`), true, false},
	}
	h := newHarness(t, harnessOpts{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			msg := h.fromCloud(tc.source, tc.op, tc.res, tc.content)

			ack := next(t, h.hub.got, "hub")
			// Read the database the moment the ACK is seen.
			row, err := h.store.Get(h.ctx, tc.res)
			if tc.wantStore && (err != nil || row.Value != string(tc.content)) {
				t.Errorf("at ACK time row = %+v, %v; want %s", row, err, tc.content)
			}
			if !tc.wantStore && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("at ACK time row = %+v, %v; want deleted", row, err)
			}
			if ack.Header.ParentID != msg.Header.ID || ack.Router.Operation != model.ResponseOperation ||
				ack.Router.Resource != tc.res || ack.Router.Source != tc.source || ack.Router.Group != model.GroupResource ||
				ack.Content != "OK" {
				t.Errorf("ACK = %s content=%v; want response OK to %s", ack.String(), ack.Content, msg.String())
			}
			if tc.toEdged {
				fwd := next(t, h.edged.got, "edged")
				if fwd.Header.ID != msg.Header.ID || fwd.Router.Operation != tc.op || fwd.Router.Resource != tc.res {
					t.Errorf("edged got %s, want %s", fwd.String(), msg.String())
				}
			}
			h.barrier()
		})
	}
}

func TestStaleCloudUpdateKeptOut(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const res = "default/pod/web"
	newer := h.fromCloud(modules.EdgeController, model.InsertOperation, res, podJSON("web", "u1", "10"))
	next(t, h.hub.got, "hub")
	next(t, h.edged.got, "edged")

	stale := h.fromCloud(modules.EdgeController, model.UpdateOperation, res, podJSON("web", "u1", "9"))
	if ack := next(t, h.hub.got, "hub"); ack.Header.ParentID != stale.Header.ID {
		t.Fatalf("stale update not ACKed: %s", ack.String())
	}
	h.barrier() // edged must not have been given the older version

	row, err := h.store.Get(h.ctx, res)
	if err != nil || row.Value != string(podJSON("web", "u1", "10")) {
		t.Errorf("row = %s, %v; want the version of %s", row.Value, err, newer.Header.ID)
	}

	// The same name with a new UID is a recreated pod, whatever its version.
	h.fromCloud(modules.EdgeController, model.InsertOperation, res, podJSON("web", "u2", "3"))
	next(t, h.hub.got, "hub")
	if fwd := next(t, h.edged.got, "edged"); fwd.Router.Resource != res {
		t.Fatalf("recreated pod not forwarded: %s", fwd.String())
	}
	if row, _ := h.store.Get(h.ctx, res); row.Value != string(podJSON("web", "u2", "3")) {
		t.Errorf("row = %s; want the recreated pod", row.Value)
	}
}

func TestCloudPodDeleteChecksUID(t *testing.T) {
	tests := []struct {
		name     string
		content  any
		wantGone bool
	}{
		{"same uid", podJSON("web", "u1", "11"), true},
		{"bare uid string", "u1", true},
		{"older incarnation", podJSON("web", "u0", "2"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			h.fromCloud(modules.EdgeController, model.InsertOperation, "default/pod/web", podJSON("web", "u1", "10"))
			next(t, h.hub.got, "hub")
			next(t, h.edged.got, "edged")
			if _, err := h.store.Upsert(h.ctx, store.Meta{Key: "default/podpatch/web", Type: "podpatch", Value: `{}`}); err != nil {
				t.Fatal(err)
			}

			del := h.fromCloud(modules.EdgeController, model.DeleteOperation, "default/pod/web", tc.content)
			if ack := next(t, h.hub.got, "hub"); ack.Header.ParentID != del.Header.ID || ack.Content != "OK" {
				t.Fatalf("delete ACK = %s", ack.String())
			}
			// Edged removes by UID, so it needs the delete either way.
			if fwd := next(t, h.edged.got, "edged"); fwd.Header.ID != del.Header.ID {
				t.Fatalf("edged got %s, want the delete", fwd.String())
			}
			for _, key := range []string{"default/pod/web", "default/podpatch/web"} {
				_, err := h.store.Get(h.ctx, key)
				if gone := errors.Is(err, store.ErrNotFound); gone != tc.wantGone {
					t.Errorf("%s gone = %v (%v), want %v", key, gone, err, tc.wantGone)
				}
			}
		})
	}
}

func TestQueryAnsweredFromDB(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, m := range []store.Meta{
		{Key: "default/pod/a", Type: "pod", Value: string(podJSON("a", "ua", "1"))},
		{Key: "kube-system/pod/b", Type: "pod", Value: string(podJSON("b", "ub", "1"))},
		{Key: "default/configmap/c", Type: "configmap", Value: `{"kind":"ConfigMap"}`},
	} {
		if _, err := h.store.Upsert(h.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		res  string
		want int
	}{
		// Edged lists every pod of the node through its register namespace.
		{"all pods", "default/pod", 2},
		{"one pod", "default/pod/a", 1},
		{"missing pod", "default/pod/zz", 0},
		{"offline configmap", "default/configmap/c", 1},
		{"no such type", "default/podstatus", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			req := edgedMsg(model.QueryOperation, tc.res, nil)
			resp := h.sync(req)
			if resp.Header.ParentID != req.Header.ID || resp.Router.Operation != model.ResponseOperation ||
				resp.Router.Source != modules.MetaManager {
				t.Errorf("answer = %s", resp.String())
			}
			if got := contentStrings(t, resp); len(got) != tc.want {
				t.Errorf("got %d objects %q, want %d", len(got), got, tc.want)
			}
		})
	}

	// An asynchronous query is answered into edged's mailbox.
	h.t = t
	req := edgedMsg(model.QueryOperation, "default/pod", nil)
	if err := h.bus.Send(h.ctx, modules.MetaManager, req); err != nil {
		t.Fatal(err)
	}
	resp := next(t, h.edged.got, "edged")
	if resp.Header.ParentID != req.Header.ID || len(contentStrings(t, resp)) != 2 {
		t.Errorf("async answer = %s %v", resp.String(), resp.Content)
	}
}

// cloudReply answers a relayed request the way EdgeController does.
func cloudReply(req model.Message, op string, content any) *model.Message {
	return model.NewMessage(req.Header.ID).BuildRouter(modules.EdgeController, model.GroupResource,
		req.Router.Resource, op).FillBody(content)
}

func TestRemoteRequestOnline(t *testing.T) {
	cm := `{"kind":"ConfigMap","metadata":{"name":"c","uid":"uc","resourceVersion":"7"}}`
	node := `{"kind":"Node","metadata":{"name":"edge-1","uid":"un","resourceVersion":"3"}}`
	lease := `{"kind":"Lease","metadata":{"name":"edge-1","uid":"ul","resourceVersion":"4"}}`
	tests := []struct {
		name    string
		op      string
		res     string
		reply   func(req model.Message) *model.Message
		wantKey string // row the reply must leave; "" for none
		wantVal string
		wantOp  string
	}{
		{"configmap ObjectResp", model.QueryOperation, "default/configmap/c",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(`{"Object":`+cm+`,"Err":null}`))
			}, "default/configmap/c", cm, model.ResponseOperation},
		{"secret plain object", model.QueryOperation, "default/secret/s",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(`{"kind":"Secret"}`))
			}, "default/secret/s", `{"kind":"Secret"}`, model.ResponseOperation},
		{"node registration", model.InsertOperation, "default/node/edge-1",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, map[string]any{"Object": json.RawMessage(node), "Err": nil})
			}, "default/node/edge-1", node, model.ResponseOperation},
		{"node status patch stores the node", model.PatchOperation, "default/nodepatch/edge-1",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(`{"Object":`+node+`,"Err":null}`))
			}, "default/node/edge-1", node, model.ResponseOperation},
		{"lease update", model.UpdateOperation, "kube-node-lease/lease/edge-1",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(lease))
			}, "kube-node-lease/lease/edge-1", lease, model.ResponseOperation},
		{"ObjectResp with Err is relayed, not stored", model.QueryOperation, "default/configmap/gone",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(
					`{"Object":`+cm+`,"Err":{"ErrStatus":{"status":"Failure","reason":"NotFound","code":404}}}`))
			}, "", "", model.ResponseOperation},
		{"ObjectResp with an empty StatusError is a success", model.QueryOperation, "default/configmap/c",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseOperation, json.RawMessage(`{"Object":`+cm+`,"Err":{"ErrStatus":{"metadata":{}}}}`))
			}, "default/configmap/c", cm, model.ResponseOperation},
		{"pod delete OK", model.DeleteOperation, "default/pod/web",
			func(r model.Message) *model.Message { return cloudReply(r, model.ResponseOperation, "OK") },
			"", "", model.ResponseOperation},
		{"cloud error", model.QueryOperation, "default/secret/nope",
			func(r model.Message) *model.Message {
				return cloudReply(r, model.ResponseErrorOperation, "secrets \"nope\" not found")
			}, "", "", model.ResponseErrorOperation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{hubReply: tc.reply})
			h.setConnected(true)
			req := edgedMsg(tc.op, tc.res, json.RawMessage(`{}`))
			resp := h.sync(req)

			relayed := next(t, h.hub.got, "hub")
			if relayed.Header.ID == req.Header.ID || relayed.Router.Resource != tc.res || relayed.Router.Operation != tc.op {
				t.Errorf("hub got %s; want %s under a new id", relayed.String(), req.String())
			}
			if resp.Header.ParentID != req.Header.ID || resp.Router.Operation != tc.wantOp {
				t.Errorf("answer = %s; want %s with parent %s", resp.String(), tc.wantOp, req.Header.ID)
			}
			if tc.wantKey == "" {
				if rows, _ := h.store.ListByPrefix(h.ctx, ""); len(rows) != 0 {
					t.Errorf("reply left rows %+v", rows)
				}
				h.t = t
				h.barrier() // and no ACK went to the cloud
				return
			}
			row, err := h.store.Get(h.ctx, tc.wantKey)
			if err != nil || row.Value != tc.wantVal {
				t.Errorf("row %s = %q, %v; want %s", tc.wantKey, row.Value, err, tc.wantVal)
			}
			// The cloud queues object replies for an ACK.
			ack := next(t, h.hub.got, "hub")
			if ack.Router.Operation != model.ResponseOperation || ack.Content != "OK" || ack.Header.ParentID == "" ||
				ack.Header.ParentID == req.Header.ID {
				t.Errorf("reply ACK = %s %v", ack.String(), ack.Content)
			}
		})
	}
}

func TestRemoteQueryFallsBackToDB(t *testing.T) {
	const res = "default/configmap/c"
	cm := `{"kind":"ConfigMap","data":{"k":"v"}}`
	tests := []struct {
		name    string
		connect []bool
		noHub   bool
	}{
		{"never connected", nil, false},
		{"disconnected", []bool{true, false}, false},
		// EdgeHub said connected but the call itself fails.
		{"link failed under the query", []bool{true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{noHub: tc.noHub})
			if _, err := h.store.Upsert(h.ctx, store.Meta{Key: res, Type: "configmap", Value: cm}); err != nil {
				t.Fatal(err)
			}
			for _, up := range tc.connect {
				h.setConnected(up)
			}
			req := edgedMsg(model.QueryOperation, res, nil)
			resp := h.sync(req)
			if resp.Header.ParentID != req.Header.ID || resp.Router.Source != modules.MetaManager {
				t.Errorf("answer = %s", resp.String())
			}
			if got := contentStrings(t, resp); !slices.Equal(got, []string{cm}) {
				t.Errorf("content = %q, want [%s]", got, cm)
			}
		})
	}
}

// TestOfflineRemoteWriteFailsFast: with the default 60 s remote timeout, a
// SendSync bounded by waitTimeout only succeeds if the refusal is immediate.
func TestOfflineRemoteWriteFailsFast(t *testing.T) {
	tests := []struct{ op, res string }{
		{model.PatchOperation, "default/nodepatch/edge-1"},
		{model.PatchOperation, "default/podpatch/web"},
		{model.InsertOperation, "default/node/edge-1"},
		{model.UpdateOperation, "kube-node-lease/lease/edge-1"},
		{model.DeleteOperation, "default/pod/web"},
	}
	h := newHarness(t, harnessOpts{})
	h.setConnected(true)
	h.setConnected(false)
	for _, tc := range tests {
		t.Run(tc.op+" "+tc.res, func(t *testing.T) {
			h.t = t
			req := edgedMsg(tc.op, tc.res, json.RawMessage(`{"metadata":{"uid":"u1"}}`))
			resp := h.sync(req)
			if resp.Router.Operation != model.ResponseErrorOperation || resp.Header.ParentID != req.Header.ID ||
				resp.Content != metamanager.ErrNotConnected.Error() {
				t.Errorf("answer = %s %v; want error %q", resp.String(), resp.Content, metamanager.ErrNotConnected)
			}
		})
	}
	h.t = t
	h.barrier() // nothing went to the hub
}

func TestEdgedUpdatesStoredAndForwarded(t *testing.T) {
	tests := []struct {
		name, op, res string
		wantRow       bool
	}{
		{"pod status", model.UpdateOperation, "default/podstatus/web", true},
		{"node status", model.UpdateOperation, "default/nodestatus/edge-1", true},
		{"node", model.UpdateOperation, "default/node/edge-1", true},
		{"event", model.InsertOperation, "default/event/e1", false},
	}
	h := newHarness(t, harnessOpts{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			content := json.RawMessage(`{"status":{"phase":"Running"}}`)
			req := edgedMsg(tc.op, tc.res, content)
			resp := h.sync(req)
			if resp.Header.ParentID != req.Header.ID || resp.Content != "OK" {
				t.Errorf("answer = %s %v", resp.String(), resp.Content)
			}
			up := next(t, h.hub.got, "hub")
			if up.Header.ID != req.Header.ID || up.Router.Operation != tc.op || up.Router.Resource != tc.res || up.Header.Sync {
				t.Errorf("cloud got %s sync=%v, want %s", up.String(), up.Header.Sync, req.String())
			}
			_, err := h.store.Get(h.ctx, tc.res)
			if (err == nil) != tc.wantRow {
				t.Errorf("row %s: %v, want stored=%v", tc.res, err, tc.wantRow)
			}
		})
	}
}

func TestMalformedMessages(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	tests := []struct {
		name    string
		res     string
		content any
	}{
		{"insert needs a name", "default/pod", podJSON("x", "u", "1")},
		{"empty segment", "default//x", podJSON("x", "u", "1")},
		{"content not JSON", "default/pod/x", "not json {"},
		{"pod delete without uid", "default/pod/x", json.RawMessage(`{"metadata":{}}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			op := model.InsertOperation
			if strings.Contains(tc.name, "delete") {
				op = model.DeleteOperation
			}
			msg := h.fromCloud(modules.EdgeController, op, tc.res, tc.content)
			e := next(t, h.hub.got, "hub")
			if e.Router.Operation != model.ResponseErrorOperation || e.Header.ParentID != msg.Header.ID {
				t.Errorf("cloud got %s, want an error for %s", e.String(), msg.String())
			}
			h.barrier() // nothing reached edged, and the loop still works
		})
	}
	t.Run("edged query with bad resource", func(t *testing.T) {
		h.t = t
		req := edgedMsg(model.QueryOperation, "x", nil)
		if resp := h.sync(req); resp.Router.Operation != model.ResponseErrorOperation {
			t.Errorf("answer = %s", resp.String())
		}
	})
	t.Run("unknown operation", func(t *testing.T) {
		h.t = t
		req := edgedMsg("frobnicate", "default/pod/x", nil)
		if resp := h.sync(req); resp.Router.Operation != model.ResponseErrorOperation {
			t.Errorf("answer = %s", resp.String())
		}
	})
}

// TestPodsSurviveRestartOffline is edge autonomy: after edgecore restarts
// with no cloud, edged's pod list comes from SQLite.
func TestPodsSurviveRestartOffline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var", "lib", "kubeedge", "edgecore.db")
	first := newHarness(t, harnessOpts{path: path})
	first.setConnected(true)
	for _, p := range []struct{ name, uid string }{{"a", "ua"}, {"b", "ub"}} {
		first.fromCloud(modules.EdgeController, model.InsertOperation, "default/pod/"+p.name, podJSON(p.name, p.uid, "1"))
		next(t, first.hub.got, "hub")
	}
	first.stop()

	second := newHarness(t, harnessOpts{path: path, noHub: true})
	got := contentStrings(t, second.sync(edgedMsg(model.QueryOperation, "default/pod", nil)))
	want := []string{string(podJSON("a", "ua", "1")), string(podJSON("b", "ub", "1"))}
	if !slices.Equal(got, want) {
		t.Errorf("pods after restart = %q, want %q", got, want)
	}
}

// TestLateCloudResponse covers a reply that reached MetaManager because its
// requester had stopped waiting.
func TestLateCloudResponse(t *testing.T) {
	tests := []struct {
		name    string
		res     string
		content any
		wantRow bool
	}{
		{"object is kept and ACKed", "default/configmap/c", json.RawMessage(`{"kind":"ConfigMap"}`), true},
		{"OK is not an object", "default/pod/web", "OK", false},
		{"list reply has no key", "default/configmap", json.RawMessage(`{"kind":"ConfigMap"}`), false},
	}
	h := newHarness(t, harnessOpts{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			resp := *model.NewMessage("req-that-timed-out").BuildRouter(modules.EdgeController, model.GroupResource,
				tc.res, model.ResponseOperation).FillBody(tc.content)
			if err := h.bus.SendToGroup(h.ctx, modules.MetaGroup, resp); err != nil {
				t.Fatal(err)
			}
			if tc.wantRow {
				if ack := next(t, h.hub.got, "hub"); ack.Header.ParentID != resp.Header.ID || ack.Content != "OK" {
					t.Errorf("ACK = %s", ack.String())
				}
			}
			if fwd := next(t, h.edged.got, "edged"); fwd.Header.ID != resp.Header.ID {
				t.Errorf("edged got %s, want the response", fwd.String())
			}
			_, err := h.store.Get(h.ctx, tc.res)
			if (err == nil) != tc.wantRow {
				t.Errorf("row %s: %v, want stored=%v", tc.res, err, tc.wantRow)
			}
			h.barrier()
		})
	}
}

func TestVolumeOperationRelayedToEdged(t *testing.T) {
	h := newHarness(t, harnessOpts{edgedReply: func(req model.Message) *model.Message {
		return model.NewRespByMessage(&req, `{"volume_id":"v1"}`)
	}})
	msg := h.fromCloud("csidriver", model.CreateVolumeOperation, "default/volume/v1", json.RawMessage(`{"name":"v1"}`))
	if got := next(t, h.edged.got, "edged"); got.Header.ID != msg.Header.ID {
		t.Fatalf("edged got %s", got.String())
	}
	up := next(t, h.hub.got, "hub")
	if up.Header.ParentID != msg.Header.ID || up.Content != `{"volume_id":"v1"}` {
		t.Errorf("cloud got %s %v", up.String(), up.Content)
	}
}
