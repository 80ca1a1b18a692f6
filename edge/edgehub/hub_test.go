package edgehub

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tether-edge/tether/edge/edgehub/certificate"
	"github.com/tether-edge/tether/edge/edgehub/internal/fakecloud"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

const (
	testNode    = "edge-1"
	testProject = "proj-1"
	// waitTimeout bounds every wait; tests normally finish in milliseconds.
	waitTimeout = 10 * time.Second
)

var testTiming = Timing{
	Heartbeat:    50 * time.Millisecond,
	Handshake:    5 * time.Second,
	ReadTimeout:  5 * time.Second,
	WriteTimeout: 5 * time.Second,
	ReconnectMin: 5 * time.Millisecond,
	ReconnectMax: 40 * time.Millisecond,
}

// stub is a bus module that copies its mailbox into a channel, so tests can
// also check that nothing arrived.
type stub struct {
	name, group string
	bus         *beehive.Bus
	got         chan model.Message
}

func (s *stub) Name() string  { return s.name }
func (s *stub) Group() string { return s.group }
func (s *stub) Enable() bool  { return true }
func (s *stub) Start(ctx context.Context) error {
	for {
		msg, err := s.bus.Receive(ctx, s.name)
		if err != nil {
			return nil
		}
		select {
		case s.got <- msg:
		case <-ctx.Done():
			return nil
		}
	}
}

type env struct {
	t     *testing.T
	cloud *fakecloud.Cloud
	cfg   *v1alpha2.EdgeHub
	bus   *beehive.Bus
	hub   *Hub
	reg   *prometheus.Registry
	stubs map[string]*stub
	ctx   context.Context
}

// newEnv starts a fake cloud and a bus with the hub and stand-ins for
// metamanager, twin, eventbus, servicebus and taskmanager.
func newEnv(t *testing.T, tweak func(*v1alpha2.EdgeHub), opts ...Option) *env {
	t.Helper()
	cloud := fakecloud.New(t)
	dir := t.TempDir()
	cfg := &v1alpha2.EdgeHub{
		Enable:            true,
		Heartbeat:         15,
		ProjectID:         testProject,
		TLSCAFile:         filepath.Join(dir, "ca", "rootCA.crt"),
		TLSCertFile:       filepath.Join(dir, "certs", "server.crt"),
		TLSPrivateKeyFile: filepath.Join(dir, "certs", "server.key"),
		Token:             cloud.Token,
		HTTPServer:        cloud.HTTPServer(),
		WebSocket:         &v1alpha2.EdgeHubWebSocket{Enable: true, Server: cloud.WSServer()},
	}
	if tweak != nil {
		tweak(cfg)
	}
	bus := beehive.New(beehive.Options{})
	reg := prometheus.NewRegistry()
	hub, err := New(cfg, testNode, bus, append([]Option{WithRegisterer(reg), WithTiming(testTiming)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := bus.Register(hub); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cloud: cloud, cfg: cfg, bus: bus, hub: hub, reg: reg, stubs: map[string]*stub{}}
	for _, s := range []struct{ name, group string }{
		{modules.MetaManager, modules.MetaGroup},
		{modules.DeviceTwin, modules.TwinGroup},
		{modules.EventBus, modules.BusGroup},
		{modules.ServiceBus, modules.BusGroup},
		{taskManagerModule, modules.TaskManagerGroup},
	} {
		st := &stub{name: s.name, group: s.group, bus: bus, got: make(chan model.Message, 1024)}
		if err := bus.Register(st); err != nil {
			t.Fatal(err)
		}
		e.stubs[s.name] = st
	}
	ctx, cancel := context.WithCancel(t.Context())
	e.ctx = ctx
	done := make(chan struct{})
	go func() { defer close(done); _ = bus.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// conn waits for the hub's next connection.
func (e *env) conn() *fakecloud.Conn {
	e.t.Helper()
	select {
	case c := <-e.cloud.Conns:
		return c
	case <-time.After(waitTimeout):
		e.t.Fatal("edge did not connect")
		return nil
	}
}

// recv returns the next message delivered to module.
func (e *env) recv(module string) model.Message {
	e.t.Helper()
	select {
	case m := <-e.stubs[module].got:
		return m
	case <-time.After(waitTimeout):
		e.t.Fatalf("nothing delivered to %s", module)
		return model.Message{}
	}
}

// expectEvent checks that module's next message is the connection event.
func (e *env) expectEvent(module, content string) {
	e.t.Helper()
	m := e.recv(module)
	r := m.Router
	if r.Source != model.SourceEdgeHub || r.Resource != model.ResourceNodeConnection ||
		r.Operation != model.ConnectOperation || m.Content != content {
		e.t.Fatalf("%s got %s content=%v, want connection event %q", module, m.String(), m.Content, content)
	}
}

// expectAll checks that every module got the connection event next.
func (e *env) expectAll(content string) {
	e.t.Helper()
	for name := range e.stubs {
		e.expectEvent(name, content)
	}
}

// expectIdle checks that no module has undelivered messages.
func (e *env) expectIdle() {
	e.t.Helper()
	for name, s := range e.stubs {
		select {
		case m := <-s.got:
			e.t.Errorf("unexpected message for %s: %s", name, m.String())
		default:
		}
	}
}

func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func isOp(op string) func(model.Message) bool {
	return func(m model.Message) bool { return m.Router.Operation == op }
}

func hasID(id string) func(model.Message) bool {
	return func(m model.Message) bool { return m.Header.ID == id }
}

func mustNext(t *testing.T, c *fakecloud.Conn, match func(model.Message) bool) (model.Message, fakecloud.Frame) {
	t.Helper()
	m, f, err := c.Next(waitTimeout, match)
	if err != nil {
		t.Fatal(err)
	}
	return m, f
}

// waitFor polls cond; used only for internal state that has no event.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestConnectHandshakeEventsAndKeepalive(t *testing.T) {
	var bootstrapped atomic.Int32
	e := newEnv(t, nil, WithOnBootstrapped(func() { bootstrapped.Add(1) }))
	c := e.conn()

	if want := "/" + testProject + "/" + testNode + "/events"; c.Path != want {
		t.Errorf("path %q, want %q", c.Path, want)
	}
	for k, want := range map[string]string{"node_id": testNode, "project_id": testProject, "ConnectionUse": "msg"} {
		if got := c.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if c.PeerCert.Subject.CommonName != "system:node:"+testNode {
		t.Errorf("client certificate CN %q", c.PeerCert.Subject.CommonName)
	}
	if bootstrapped.Load() != 1 {
		t.Errorf("OnBootstrapped called %d times, want 1", bootstrapped.Load())
	}
	e.expectAll(model.ContentCloudConnected)
	if !e.hub.Connected() || e.metric("tether_edgehub_connected") != 1 {
		t.Errorf("Connected()=%v gauge=%v, want true/1", e.hub.Connected(), e.metric("tether_edgehub_connected"))
	}

	ka, f := mustNext(t, c, isOp(model.KeepaliveOperation))
	want := model.MessageRoute{Source: "websocket", Group: "resource", Resource: "node", Operation: "keepalive"}
	if ka.Router != want || ka.Content != "ping" || ka.Header.ID == "" || f.Type != websocket.TextMessage {
		t.Errorf("keepalive %+v content=%v frame type %d", ka.Router, ka.Content, f.Type)
	}
	// The counter moves just after the write returns, so it may trail the
	// frame the cloud already read.
	waitFor(t, "upstream count", func() bool { return e.metric("tether_edgehub_messages_total", "direction", "up") >= 1 })
	e.expectIdle()
}

func TestDownstreamDispatch(t *testing.T) {
	e := newEnv(t, nil)
	c := e.conn()
	e.expectAll(model.ContentCloudConnected)
	msg := func(group, source, parent string) model.Message {
		m := model.NewMessage(parent).BuildRouter(source, group, "default/pod/nginx", model.UpdateOperation).FillBody("x")
		return *m
	}
	tests := []struct {
		name string
		msg  model.Message
		// to is the module that must get the message; "" means dropped.
		to string
	}{
		{"resource to meta", msg(model.GroupResource, modules.EdgeController, ""), modules.MetaManager},
		{"func to meta", msg(model.GroupFunc, "router", ""), modules.MetaManager},
		{"twin to twin", msg(model.GroupTwin, modules.DeviceController, ""), modules.DeviceTwin},
		{"user from eventbus router", msg(model.GroupUser, "router_eventbus", ""), modules.EventBus},
		{"user from servicebus router", msg(model.GroupUser, "router_servicebus", ""), modules.ServiceBus},
		{"taskmanager", msg(model.GroupTaskManager, modules.TaskManager, ""), taskManagerModule},
		{"unknown group dropped", msg("nosuchgroup", modules.EdgeController, ""), ""},
		{"user from unknown source dropped", msg(model.GroupUser, "elsewhere", ""), ""},
		// A late reply still carries an object the cloud wants ACKed; MetaManager stores and ACKs it.
		{"response nobody waits for to meta", msg(model.GroupResource, modules.EdgeController, "no-such-request"), modules.MetaManager},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Send(tc.msg); err != nil {
				t.Fatal(err)
			}
			if tc.to != "" {
				got := e.recv(tc.to)
				if got.Header.ID != tc.msg.Header.ID || got.Router != tc.msg.Router || got.Content != "x" {
					t.Errorf("%s got %s, want %s", tc.to, got.String(), tc.msg.String())
				}
			} else {
				// Dispatch is sequential, so once the marker is through the
				// dropped message has been dealt with.
				marker := msg(model.GroupResource, modules.EdgeController, "")
				if err := c.Send(marker); err != nil {
					t.Fatal(err)
				}
				if got := e.recv(modules.MetaManager); got.Header.ID != marker.Header.ID {
					t.Errorf("meta got %s, want the marker", got.String())
				}
			}
			e.expectIdle()
		})
	}
	if e.metric("tether_edgehub_dropped_messages_total", "reason", "unroutable") != 2 {
		t.Errorf("unroutable drops = %v, want 2", e.metric("tether_edgehub_dropped_messages_total", "reason", "unroutable"))
	}
	if down := e.metric("tether_edgehub_messages_total", "direction", "down"); down != 11 {
		t.Errorf("downstream count %v, want 11", down)
	}
}

func TestControlMessagesAcked(t *testing.T) {
	e := newEnv(t, nil)
	c := e.conn()
	e.expectAll(model.ContentCloudConnected)
	for _, op := range []string{model.PingOperation, model.PongOperation, model.ConfigOperation} {
		t.Run(op, func(t *testing.T) {
			req := model.NewMessage("").BuildRouter("cloudhub", model.GroupResource, "node", op)
			if err := c.Send(*req); err != nil {
				t.Fatal(err)
			}
			ack, _ := mustNext(t, c, func(m model.Message) bool { return m.Header.ParentID == req.Header.ID })
			if ack.Router.Operation != model.ResponseOperation || ack.Content != "ack" {
				t.Errorf("ack %s content %v", ack.String(), ack.Content)
			}
		})
	}
	e.expectIdle()
}

func TestResponseCompletesSendSync(t *testing.T) {
	e := newEnv(t, nil)
	c := e.conn()
	e.expectAll(model.ContentCloudConnected)

	req := *model.NewMessage("").BuildRouter(modules.MetaManager, model.GroupResource, "default/configmap/cm", model.QueryOperation)
	type result struct {
		resp model.Message
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := e.bus.SendSync(e.ctx, modules.EdgeHub, req, waitTimeout)
		done <- result{r, err}
	}()
	got, _ := mustNext(t, c, hasID(req.Header.ID))
	if got.Header.Sync {
		t.Error("request went out with sync=true; async writes must clear it")
	}
	if err := c.Send(*model.NewRespByMessage(&got, "OK")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("SendSync: %v", r.err)
	}
	if r.resp.Header.ParentID != req.Header.ID || r.resp.Content != "OK" {
		t.Errorf("response %s content %v", r.resp.String(), r.resp.Content)
	}
	e.expectIdle()
}

func TestUpstreamEnvelope(t *testing.T) {
	e := newEnv(t, nil)
	c := e.conn()
	msg := model.Message{
		Header:  model.MessageHeader{ID: "3f1c1f4e-0000-4000-8000-000000000001", ParentID: "p-1", Timestamp: 1712345678901, ResourceVersion: "42", Sync: true},
		Router:  model.MessageRoute{Source: "edged", Group: "resource", Operation: "update", Resource: "default/podstatus/nginx"},
		Content: json.RawMessage(`{"phase":"Running","ready":true}`),
	}
	if err := e.bus.Send(e.ctx, modules.EdgeHub, msg); err != nil {
		t.Fatal(err)
	}
	_, f := mustNext(t, c, hasID(msg.Header.ID))
	want := `{"header":{"msg_id":"3f1c1f4e-0000-4000-8000-000000000001","parent_msg_id":"p-1","timestamp":1712345678901,"resourceversion":"42"},` +
		`"route":{"source":"edged","group":"resource","operation":"update","resource":"default/podstatus/nginx"},` +
		`"content":{"phase":"Running","ready":true}}`
	if f.Type != websocket.TextMessage || string(f.Data) != want {
		t.Errorf("frame type %d\n got %s\nwant %s", f.Type, f.Data, want)
	}
}

func TestBadFramesKeepConnection(t *testing.T) {
	e := newEnv(t, nil, WithMaxFrameSize(1024))
	c := e.conn()
	e.expectAll(model.ContentCloudConnected)

	big := model.NewMessage("").BuildRouter("edgecontroller", model.GroupResource, "default/pod/big", model.InsertOperation).
		FillBody(strings.Repeat("x", 2048))
	bigJSON, err := json.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	frames := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte(`{"header":`)},
		{websocket.TextMessage, []byte(`not json at all`)},
		{websocket.BinaryMessage, []byte{0xff, 0x00, 0x13}},
		{websocket.TextMessage, bigJSON},
	}
	for _, f := range frames {
		if err := c.SendRaw(f.typ, f.data); err != nil {
			t.Fatal(err)
		}
	}
	good := model.NewMessage("").BuildRouter("edgecontroller", model.GroupResource, "default/pod/ok", model.InsertOperation)
	if err := c.Send(*good); err != nil {
		t.Fatal(err)
	}
	if got := e.recv(modules.MetaManager); got.Header.ID != good.Header.ID {
		t.Fatalf("meta got %s, want the valid message after the bad frames", got.String())
	}
	if !e.hub.Connected() {
		t.Error("hub disconnected after bad frames")
	}
	select {
	case <-c.Closed():
		t.Error("connection closed after bad frames")
	case c2 := <-e.cloud.Conns:
		t.Errorf("hub reconnected (%s)", c2.Path)
	default:
	}
	if n := e.metric("tether_edgehub_dropped_messages_total", "reason", "malformed"); n != 3 {
		t.Errorf("malformed drops = %v, want 3", n)
	}
	if n := e.metric("tether_edgehub_dropped_messages_total", "reason", "oversized"); n != 1 {
		t.Errorf("oversized drops = %v, want 1", n)
	}
	e.expectIdle()
}

func TestReconnectAfterServerDrop(t *testing.T) {
	e := newEnv(t, nil)
	c1 := e.conn()
	e.expectEvent(modules.MetaManager, model.ContentCloudConnected)

	c1.Close()
	e.expectEvent(modules.MetaManager, model.ContentCloudDisconnected)
	c2 := e.conn()
	e.expectEvent(modules.MetaManager, model.ContentCloudConnected)

	// The new connection works both ways.
	down := model.NewMessage("").BuildRouter("edgecontroller", model.GroupResource, "default/pod/p", model.InsertOperation)
	if err := c2.Send(*down); err != nil {
		t.Fatal(err)
	}
	if got := e.recv(modules.MetaManager); got.Header.ID != down.Header.ID {
		t.Errorf("meta got %s after reconnect", got.String())
	}
	up := *model.NewMessage("").BuildRouter("edged", model.GroupResource, "default/podstatus/p", model.UpdateOperation)
	if err := e.bus.Send(e.ctx, modules.EdgeHub, up); err != nil {
		t.Fatal(err)
	}
	mustNext(t, c2, hasID(up.Header.ID))
	if n := e.metric("tether_edgehub_reconnects_total"); n != 1 {
		t.Errorf("reconnects_total = %v, want 1", n)
	}
}

func TestMessagesQueuedWhileDisconnected(t *testing.T) {
	tests := []struct {
		name      string
		queueSize int
		send      int
		// wantFrom is the index of the first message that must arrive.
		wantFrom    int
		wantDropped float64
	}{
		{name: "all kept", queueSize: 0, send: 5, wantFrom: 0},
		{name: "oldest dropped when full", queueSize: 3, send: 5, wantFrom: 2, wantDropped: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, WithQueueSize(tc.queueSize))
			c1 := e.conn()
			e.expectEvent(modules.MetaManager, model.ContentCloudConnected)

			e.cloud.RefuseConnections(true)
			c1.Close()
			e.expectEvent(modules.MetaManager, model.ContentCloudDisconnected)
			if e.hub.Connected() || e.metric("tether_edgehub_connected") != 0 {
				t.Error("hub reports connected while the cloud refuses connections")
			}

			var ids []string
			for i := range tc.send {
				m := *model.NewMessage("").BuildRouter("edged", model.GroupResource, fmt.Sprintf("default/podstatus/p%d", i), model.UpdateOperation)
				ids = append(ids, m.Header.ID)
				if err := e.bus.Send(e.ctx, modules.EdgeHub, m); err != nil {
					t.Fatal(err)
				}
			}
			want := tc.send - tc.wantFrom
			waitFor(t, "messages to reach the outbox", func() bool {
				return e.hub.outbox.len() == want && e.metric("tether_edgehub_dropped_messages_total", "reason", "queue_full") == tc.wantDropped
			})

			e.cloud.RefuseConnections(false)
			c2 := e.conn()
			for _, id := range ids[tc.wantFrom:] {
				got, _ := mustNext(t, c2, func(m model.Message) bool { return m.Router.Operation == model.UpdateOperation })
				if got.Header.ID != id {
					t.Fatalf("got %s, want message %s (order kept, oldest dropped)", got.String(), id)
				}
			}
		})
	}
}

func TestRotationReconnectsWithNewCertificate(t *testing.T) {
	release := make(chan struct{})
	testDone := make(chan struct{})
	var schedules atomic.Int32
	e := newEnv(t, func(c *v1alpha2.EdgeHub) { c.RotateCertificates = true },
		WithCertificateConfig(func(c *certificate.Config) {
			c.RotationBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 3, Cap: 4 * time.Millisecond}
			// The first certificate rotates when the test says so.
			c.RotationDeadline = func(*x509.Certificate) time.Time {
				if schedules.Add(1) == 1 {
					select {
					case <-release:
					case <-testDone:
					}
					return time.Now()
				}
				return time.Now().Add(time.Hour)
			}
		}))
	t.Cleanup(func() { close(testDone) })

	c1 := e.conn()
	e.expectEvent(modules.MetaManager, model.ContentCloudConnected)
	if req := <-e.cloud.CertRequests; req.Via != "token" {
		t.Fatalf("bootstrap via %q", req.Via)
	}
	close(release)

	req := <-e.cloud.CertRequests
	if req.Via != "cert" || req.Authorization != "" {
		t.Errorf("rotation via %q auth %q, want client certificate only", req.Via, req.Authorization)
	}
	e.expectEvent(modules.MetaManager, model.ContentCloudDisconnected)
	c2 := e.conn()
	e.expectEvent(modules.MetaManager, model.ContentCloudConnected)
	<-c1.Closed()
	if c2.PeerCert.Equal(c1.PeerCert) || !c2.PeerCert.Equal(req.Cert) {
		t.Error("reconnected without the rotated certificate")
	}
}

func TestStartFailsOnPermanentCertificateError(t *testing.T) {
	cloud := fakecloud.New(t)
	otherCA, otherKey, err := certs.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherKeyDER, err := certs.MarshalKeyDER(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := token.Create(otherCA.Raw, otherKeyDER, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := &v1alpha2.EdgeHub{
		Enable: true, Token: foreign, HTTPServer: cloud.HTTPServer(),
		TLSCAFile: filepath.Join(dir, "ca.crt"), TLSCertFile: filepath.Join(dir, "s.crt"), TLSPrivateKeyFile: filepath.Join(dir, "s.key"),
		WebSocket: &v1alpha2.EdgeHubWebSocket{Server: cloud.WSServer()},
	}
	hub, err := New(cfg, testNode, beehive.New(beehive.Options{}), WithTiming(testTiming))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := hub.Start(ctx); !errors.Is(err, token.ErrCAHashMismatch) {
		t.Fatalf("Start = %v, want CA hash mismatch", err)
	}
}

func TestNewValidation(t *testing.T) {
	bus := beehive.New(beehive.Options{})
	ok := func() *v1alpha2.EdgeHub {
		return &v1alpha2.EdgeHub{TLSCAFile: "a", TLSCertFile: "b", TLSPrivateKeyFile: "c", WebSocket: &v1alpha2.EdgeHubWebSocket{Server: "cloud:10000"}}
	}
	tests := []struct {
		name string
		cfg  *v1alpha2.EdgeHub
		node string
		bus  *beehive.Bus
		want string
	}{
		{"nil config", nil, testNode, bus, "nil config"},
		{"no server", func() *v1alpha2.EdgeHub { c := ok(); c.WebSocket.Server = ""; return c }(), testNode, bus, "websocket.server"},
		{"no node", ok(), "", bus, "node name"},
		{"no bus", ok(), testNode, nil, "nil bus"},
		{"no cert file", func() *v1alpha2.EdgeHub { c := ok(); c.TLSCertFile = ""; return c }(), testNode, bus, "tlsCertFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, tc.node, tc.bus)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want error mentioning %q", err, tc.want)
			}
		})
	}
	// Two hubs on one registry would export clashing series.
	reg := prometheus.NewRegistry()
	if _, err := New(ok(), testNode, bus, WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ok(), testNode, bus, WithRegisterer(reg)); err == nil {
		t.Error("second registration on the same registry succeeded")
	}
}
