package cloudhub

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

func TestAuthentication(t *testing.T) {
	// VerifyClientCertIfGiven lets a certificate-less client reach the
	// handler, so its own check is exercised too.
	e := newEnv(t, envConfig{clientAuth: tls.VerifyClientCertIfGiven})
	tests := []struct {
		name       string
		header     string
		certNode   string
		wantStatus int
	}{
		{"cert matches header", "edge-1", "edge-1", http.StatusSwitchingProtocols},
		{"header names another node", "edge-2", "edge-1", http.StatusForbidden},
		{"no node_id header", "", "edge-1", http.StatusUnauthorized},
		{"no client certificate", "edge-1", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := e.dial(tt.header, tt.certNode)
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%v), want %d", resp.StatusCode, err, tt.wantStatus)
			}
			if conn != nil {
				e.expectEvent(tt.header, model.ConnectedOperation)
				_ = conn.Close()
				e.expectEvent(tt.header, model.DisconnectedOperation)
			}
		})
	}
}

func TestTLSRefusesClientsWithoutValidCert(t *testing.T) {
	e := newEnv(t, envConfig{})
	other := newPKI(t)
	tests := []struct {
		name string
		cert func() []tls.Certificate
	}{
		{"no client certificate", func() []tls.Certificate { return nil }},
		{"certificate from another CA", func() []tls.Certificate { return []tls.Certificate{other.nodeCert(t, "edge-1")} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.pki.pool, Certificates: tt.cert()}, HandshakeTimeout: waitTimeout}
			conn, resp, err := d.Dial(e.url, http.Header{HeaderNodeID: {"edge-1"}})
			if err == nil {
				_ = conn.Close()
				t.Fatal("connection accepted")
			}
			if resp != nil {
				t.Fatalf("got HTTP %d, want a TLS failure", resp.StatusCode)
			}
		})
	}
}

func TestNodeLimit(t *testing.T) {
	e := newEnv(t, envConfig{opts: func(o *Options) { o.Config.NodeLimit = 1 }})
	e.connect("edge-1")
	if _, resp, err := e.dial("edge-2", "edge-2"); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second node: %v, want HTTP 503", err)
	}
	// A reconnect replaces the node's session and is not a new node.
	e.connect("edge-1")
	if got := metricValue(t, e.hub.metrics.connected); got != 1 {
		t.Errorf("connected nodes = %v, want 1", got)
	}
}

func TestNewSessionReplacesOld(t *testing.T) {
	e := newEnv(t, envConfig{})
	first := e.connect("edge-1")
	second := e.connect("edge-1")
	err := first.expectClosed()
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Errorf("old session ended with %v, want close %d", err, websocket.ClosePolicyViolation)
	}
	// The replaced session must not report the node disconnected: the next
	// event is the disconnect of the second session.
	msg := podMsg("edge-1", "p", "uid-1", "1", model.InsertOperation)
	e.toCloudhub(msg)
	if got := second.recv(); got.Header.ID != msg.Header.ID {
		t.Fatalf("new session got %s, want %s", got.String(), msg.Header.ID)
	}
	_ = second.conn.Close()
	e.expectEvent("edge-1", model.DisconnectedOperation)
}

func TestKeepalive(t *testing.T) {
	const keepalive = 300 * time.Millisecond
	e := newEnv(t, envConfig{opts: func(o *Options) { o.KeepaliveTimeout = keepalive }})

	t.Run("keepalives hold the session", func(t *testing.T) {
		c := e.connect("edge-1")
		for range 8 { // 8 x 75ms: twice the timeout
			c.send(model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", model.KeepaliveOperation).FillBody("ping"))
			time.Sleep(keepalive / 4)
		}
		ping := model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", model.PingOperation)
		c.send(ping)
		if got := c.recv(); got.Header.ParentID != ping.Header.ID {
			t.Fatalf("got %s, want the answer to the ping", got.String())
		}
		_ = c.conn.Close()
		e.expectEvent("edge-1", model.DisconnectedOperation)
	})
	t.Run("silence closes the session", func(t *testing.T) {
		c := e.connect("edge-2")
		if err := c.expectClosed(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("closed with %v, want close %d", err, websocket.CloseGoingAway)
		}
		e.expectEvent("edge-2", model.DisconnectedOperation)
	})
}

func TestControlMessagesAnswered(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	for _, op := range []string{model.PingOperation, model.ConfigOperation, model.PongOperation} {
		t.Run(op, func(t *testing.T) {
			req := model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", op)
			c.send(req)
			got := c.recv()
			if got.Header.ParentID != req.Header.ID || got.Router.Operation != model.ResponseOperation || got.Content != "ack" {
				t.Fatalf("got %s content %v, want response \"ack\" to %s", got.String(), got.Content, req.Header.ID)
			}
		})
	}
}

func TestShutdownClosesSessions(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := e.connect("edge-1")
	closed := make(chan error, 1)
	go func() { closed <- c.expectClosed() }()
	e.stop()
	if err := <-closed; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("closed with %v, want close %d", err, websocket.CloseGoingAway)
	}
	if n := e.hub.connectedNodes(); n != 0 {
		t.Errorf("%d nodes still connected after Start returned", n)
	}
}
