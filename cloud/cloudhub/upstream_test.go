package cloudhub

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestUpstreamRouting(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	tests := []struct {
		name                               string
		source, group, operation, resource string
		wantModule                         string // "" = dropped
		wantResource                       string
		wantDrop                           string
	}{
		{"pod status to edgecontroller", "edged", model.GroupResource, model.UpdateOperation, "default/podstatus/web",
			modules.EdgeController, "node/edge-1/default/podstatus/web", ""},
		{"metamanager query to edgecontroller", "metamanager", model.GroupResource, model.QueryOperation, "default/configmap/cm",
			modules.EdgeController, "node/edge-1/default/configmap/cm", ""},
		{"twin to devicecontroller", "twin", model.GroupTwin, model.UpdateOperation, "device/default/thermo/twin/edge_updated",
			modules.DeviceController, "node/edge-1/device/default/thermo/twin/edge_updated", ""},
		{"user upload to router", "eventbus", model.GroupUser, model.UploadOperation, "sensors/temp",
			modules.Router, "node/edge-1/sensors/temp", ""},
		{"user publish is not an upload", "eventbus", model.GroupUser, model.PublishOperation, "sensors/temp",
			modules.EdgeController, "node/edge-1/sensors/temp", ""},
		{"impersonating edgecontroller", modules.EdgeController, model.GroupResource, model.UpdateOperation, "default/pod/web",
			"", "", reasonImpersonation},
		{"impersonating cloudhub", modules.CloudHub, model.GroupResource, model.InsertOperation, "default/pod/web",
			"", "", reasonImpersonation},
		{"impersonating devicecontroller", modules.DeviceController, model.GroupTwin, model.UpdateOperation, "membership",
			"", "", reasonImpersonation},
		{"impersonating synccontroller", modules.SyncController, model.GroupResource, model.UpdateOperation, "default/pod/web",
			"", "", reasonImpersonation},
		{"impersonating cloudStream", modules.CloudStream, model.GroupResource, model.UpdateOperation, "default/pod/web",
			"", "", reasonImpersonation},
		{"empty resource segment", "edged", model.GroupResource, model.UpdateOperation, "default//web",
			"", "", reasonBadResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metricValue(t, e.hub.metrics.dropped.WithLabelValues(tt.wantDrop))
			msg := model.NewMessage("").BuildRouter(tt.source, tt.group, tt.resource, tt.operation).FillBody("x")
			c.send(msg)
			if tt.wantModule == "" {
				// Messages of a session are handled in order: the sentinel
				// arriving first proves the message was dropped.
				sentinel := model.NewMessage("").BuildRouter("edged", model.GroupResource, "default/podstatus/sentinel", model.UpdateOperation)
				c.send(sentinel)
				if got := e.recv(modules.EdgeController); got.Header.ID != sentinel.Header.ID {
					t.Fatalf("edgecontroller got %s, want only the sentinel", got.String())
				}
				if after := metricValue(t, e.hub.metrics.dropped.WithLabelValues(tt.wantDrop)); after != before+1 {
					t.Errorf("dropped{%s} went from %v to %v", tt.wantDrop, before, after)
				}
				return
			}
			got := e.recv(tt.wantModule)
			if got.Header.ID != msg.Header.ID || got.Router.Resource != tt.wantResource || got.Router.Source != tt.source {
				t.Fatalf("%s got %s, want id=%s resource=%s", tt.wantModule, got.String(), msg.Header.ID, tt.wantResource)
			}
		})
	}
}

func TestUploadDroppedWithoutRouter(t *testing.T) {
	e := newEnv(t, envConfig{controllers: []string{modules.EdgeController, modules.DeviceController}})
	c := e.connect("edge-1")
	c.send(model.NewMessage("").BuildRouter("eventbus", model.GroupUser, "sensors/temp", model.UploadOperation))
	sentinel := model.NewMessage("").BuildRouter("edged", model.GroupResource, "default/podstatus/s", model.UpdateOperation)
	c.send(sentinel)
	if got := e.recv(modules.EdgeController); got.Header.ID != sentinel.Header.ID {
		t.Fatalf("edgecontroller got %s, want the sentinel", got.String())
	}
	if got := metricValue(t, e.hub.metrics.dropped.WithLabelValues(reasonNoRoute)); got != 1 {
		t.Errorf("dropped{no_route} = %v, want 1", got)
	}
}

func TestEventsWithoutControllers(t *testing.T) {
	// Connection events to groups nobody listens to must not break the session.
	e := newEnv(t, envConfig{controllers: []string{}})
	conn, _, err := e.dial("edge-1", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &edgeConn{t: t, conn: conn, node: "edge-1"}
	ping := model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", model.PingOperation)
	c.send(ping)
	if got := c.recv(); got.Header.ParentID != ping.Header.ID {
		t.Fatalf("got %s, want the ping answer", got.String())
	}
}

func TestMalformedFrameDropped(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	for _, frame := range []string{`{not json`, `[1,2,3]`, `{"header":{"msg_id":5}}`} {
		c.sendRaw([]byte(frame))
	}
	if err := c.conn.WriteMessage(websocket.BinaryMessage, []byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	msg := model.NewMessage("").BuildRouter("edged", model.GroupResource, "default/podstatus/web", model.UpdateOperation)
	c.send(msg)
	if got := e.recv(modules.EdgeController); got.Header.ID != msg.Header.ID {
		t.Fatalf("got %s, want %s", got.String(), msg.Header.ID)
	}
	if got := metricValue(t, e.hub.metrics.dropped.WithLabelValues(reasonMalformed)); got != 4 {
		t.Errorf("dropped{malformed} = %v, want 4", got)
	}
}

func TestOversizedFrameOnlyAffectsItsNode(t *testing.T) {
	e := newEnv(t, envConfig{opts: func(o *Options) { o.ReadLimit = 4096 }})
	big := e.connect("edge-big")
	other := e.connect("edge-ok")

	payload := `{"header":{"msg_id":"x"},"route":{"source":"edged","operation":"update","resource":"default/pod/p"},"content":"` +
		strings.Repeat("a", 8192) + `"}`
	big.sendRaw([]byte(payload))
	if err := big.expectClosed(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Errorf("oversized sender closed with %v, want close %d", err, websocket.CloseMessageTooBig)
	}
	e.expectEvent("edge-big", model.DisconnectedOperation)

	up := model.NewMessage("").BuildRouter("edged", model.GroupResource, "default/podstatus/web", model.UpdateOperation)
	other.send(up)
	if got := e.recv(modules.EdgeController); got.Header.ID != up.Header.ID {
		t.Fatalf("got %s, want the other node's message", got.String())
	}
	down := podMsg("edge-ok", "web", "uid-1", "3", model.InsertOperation)
	e.toCloudhub(down)
	if got := other.recv(); got.Header.ID != down.Header.ID {
		t.Fatalf("other node got %s, want %s", got.String(), down.Header.ID)
	}
	if got := metricValue(t, e.hub.metrics.dropped.WithLabelValues(reasonOversized)); got != 1 {
		t.Errorf("dropped{oversized} = %v, want 1", got)
	}
}

func TestSendSyncAnsweredByEdge(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	req := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/default/pod", model.QueryOperation)
	type result struct {
		resp model.Message
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.bus.SendSync(e.ctx, modules.CloudHub, *req, waitTimeout)
		done <- result{resp, err}
	}()
	got := c.recv()
	if got.Header.ID != req.Header.ID || got.Header.Sync || got.Router.Resource != "default/pod" {
		t.Fatalf("edge got %s sync=%v, want the query without node prefix and sync=false", got.String(), got.Header.Sync)
	}
	c.send(model.NewRespByMessage(&got, []string{"{}"}))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.Header.ParentID != req.Header.ID || r.resp.Router.Resource != "node/edge-1/default/pod" {
		t.Fatalf("caller got %s, want the answer with the node prefix", r.resp.String())
	}
	// A response from another node with the same parent id is not accepted.
	if e.hub.takeSync(req.Header.ID, "edge-1") {
		t.Error("sync entry not consumed")
	}
}

func TestWireEncodingIsOneJSONPerTextFrame(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	e.toCloudhub(model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, "node/edge-1/default/podlist", model.UpdateOperation).FillBody("[]"))
	_ = c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	mt, data, err := c.conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if mt != websocket.TextMessage || !bytes.HasPrefix(data, []byte(`{"header":`)) {
		t.Fatalf("frame type %d %q, want one JSON text frame", mt, data)
	}
}
