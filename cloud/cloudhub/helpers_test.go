package cloudhub

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	rsv1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/security/certs"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runEdgeHelper())
	}
	// klog's flush daemon is process-wide and started by klog itself.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// waitTimeout bounds every wait in the tests; reaching it is a failure,
// never part of the expected behaviour.
const waitTimeout = 10 * time.Second

type pki struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	now := time.Now()
	ca, caKey, err := certs.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	srv, srvKey, err := certs.NewServerCert(ca, caKey, []string{"127.0.0.1"}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, caKey: caKey, pool: pool,
		server: tls.Certificate{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}}
}

func (p *pki) nodeCert(t testing.TB, node string) tls.Certificate {
	t.Helper()
	key, csr, err := certs.NewNodeCSR(node)
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.SignNodeCSR(p.ca, p.caKey, csr, node, nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *pki) serverTLS(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: clientAuth, ClientCAs: p.pool}
}

// testModule is a controller stand-in: the tests read its mailbox.
type testModule struct{ name string }

func (m testModule) Name() string                    { return m.name }
func (m testModule) Group() string                   { return m.name }
func (m testModule) Enable() bool                    { return true }
func (m testModule) Start(ctx context.Context) error { <-ctx.Done(); return nil }

type testEnv struct {
	t      testing.TB
	pki    *pki
	hub    *CloudHub
	bus    *beehive.Bus
	client client.Client
	reg    *prometheus.Registry
	url    string
	ctx    context.Context
	acks   chan string // ids of ACKed messages, after the ObjectSync write
	// stop ends Start and checks it returned cleanly; also run at cleanup.
	stop func()
}

type envConfig struct {
	opts       func(*Options)
	clientAuth tls.ClientAuthType
	// controllers are the modules registered besides cloudhub.
	controllers []string
	ackBuffer   int
}

func defaultControllers() []string {
	return []string{modules.EdgeController, modules.DeviceController, modules.Router}
}

func newEnv(t testing.TB, cfg envConfig) *testEnv {
	t.Helper()
	if cfg.clientAuth == 0 {
		cfg.clientAuth = tls.RequireAndVerifyClientCert
	}
	if cfg.controllers == nil {
		cfg.controllers = defaultControllers()
	}
	p := newPKI(t)
	scheme := runtime.NewScheme()
	if err := rsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&rsv1.ObjectSync{}, &rsv1.ClusterObjectSync{}).Build()
	bus := beehive.New(beehive.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := Options{
		Config:     v1alpha1.CloudHub{Enable: true, NodeLimit: 100},
		Bus:        bus,
		Client:     cl,
		TLSConfig:  p.serverTLS(cfg.clientAuth),
		Registerer: reg,
		Listener:   ln,
		// Long enough never to fire in tests that do not ask for it.
		KeepaliveTimeout: time.Minute,
		AckTimeout:       time.Minute,
	}
	if cfg.opts != nil {
		cfg.opts(&opts)
	}
	hub := New(opts)
	acks := make(chan string, max(cfg.ackBuffer, 100))
	hub.ackHook = func(_, id string) { acks <- id }
	if err := bus.Register(hub); err != nil {
		t.Fatal(err)
	}
	for _, name := range cfg.controllers {
		if err := bus.Register(testModule{name}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Start(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start returned %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Start did not return after cancel")
		}
	})
	t.Cleanup(stop)
	return &testEnv{t: t, pki: p, hub: hub, bus: bus, client: cl, reg: reg, ctx: ctx, acks: acks, stop: stop,
		url: "wss://" + ln.Addr().String() + "/e632aba927ea4ac2b575ec1603d56f10/node/events"}
}

// dial connects as node, authenticated with a certificate for certNode
// ("" for none).
func (e *testEnv) dial(node, certNode string) (*websocket.Conn, *http.Response, error) {
	cfg := &tls.Config{RootCAs: e.pki.pool}
	if certNode != "" {
		cfg.Certificates = []tls.Certificate{e.pki.nodeCert(e.t, certNode)}
	}
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: waitTimeout}
	h := http.Header{}
	if node != "" {
		h.Set(HeaderNodeID, node)
	}
	h.Set("project_id", "e632aba927ea4ac2b575ec1603d56f10")
	conn, resp, err := d.Dial(e.url, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	return conn, resp, err
}

// connect dials as node and waits for the connected event.
func (e *testEnv) connect(node string) *edgeConn {
	e.t.Helper()
	conn, _, err := e.dial(node, node)
	if err != nil {
		e.t.Fatalf("connect %s: %v", node, err)
	}
	ec := &edgeConn{t: e.t, conn: conn, node: node}
	e.t.Cleanup(func() { _ = conn.Close() })
	e.expectEvent(node, model.ConnectedOperation)
	return ec
}

// recv takes the next message from a controller mailbox.
func (e *testEnv) recv(module string) model.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, waitTimeout)
	defer cancel()
	msg, err := e.bus.Receive(ctx, module)
	if err != nil {
		e.t.Fatalf("receive from %s: %v", module, err)
	}
	return msg
}

// expectEvent checks the next edgecontroller message is node's connection
// event and drains the devicecontroller copy.
func (e *testEnv) expectEvent(node, op string) {
	e.t.Helper()
	for _, m := range []string{modules.EdgeController, modules.DeviceController} {
		msg := e.recv(m)
		var ev ConnectionEvent
		if err := msg.UnmarshalContent(&ev); err != nil {
			e.t.Fatal(err)
		}
		if msg.Router.Operation != op || msg.Router.Resource != "node/"+node || msg.Router.Source != modules.CloudHub ||
			msg.Router.Group != model.GroupResource || ev.EventType != op || ev.ClientID != node || ev.Timestamp == 0 {
			e.t.Fatalf("%s got %s content %+v, want %s event of node %s", m, msg.String(), ev, op, node)
		}
	}
}

// toCloudhub sends a controller message to cloudhub.
func (e *testEnv) toCloudhub(msg *model.Message) {
	e.t.Helper()
	if err := e.bus.Send(e.ctx, modules.CloudHub, *msg); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) expectAck(id string) {
	e.t.Helper()
	select {
	case got := <-e.acks:
		if got != id {
			e.t.Fatalf("ACK recorded for %s, want %s", got, id)
		}
	case <-time.After(waitTimeout):
		e.t.Fatalf("no ACK recorded for %s", id)
	}
}

// eventually polls cond; for state the test cannot observe by an event.
func (e *testEnv) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type edgeConn struct {
	t    testing.TB
	conn *websocket.Conn
	node string
}

func (c *edgeConn) send(msg *model.Message) {
	c.t.Helper()
	if err := c.conn.WriteJSON(msg); err != nil {
		c.t.Fatalf("edge %s send: %v", c.node, err)
	}
}

func (c *edgeConn) sendRaw(data []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		c.t.Fatalf("edge %s send: %v", c.node, err)
	}
}

func (c *edgeConn) recvRaw() []byte {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("edge %s receive: %v", c.node, err)
	}
	return data
}

func (c *edgeConn) recv() model.Message {
	c.t.Helper()
	var msg model.Message
	if err := json.Unmarshal(c.recvRaw(), &msg); err != nil {
		c.t.Fatal(err)
	}
	return msg
}

// ack answers msg as edge MetaManager does after persisting it.
func (c *edgeConn) ack(msg *model.Message) {
	c.t.Helper()
	c.send(model.NewRespByMessage(msg, "OK"))
}

// expectClosed waits for the server to end the connection.
func (c *edgeConn) expectClosed() error {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("edge %s: connection still open", c.node)
			}
			return err
		}
	}
}

// podMsg is an edgecontroller pod message with JSON content, as it would
// come from another process.
func podMsg(node, name, uid, rv, op string) *model.Message {
	content := fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"default","uid":%q,"resourceVersion":%q}}`, name, uid, rv)
	m := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource,
		"node/"+node+"/default/pod/"+name, op).FillBody(json.RawMessage(content))
	m.SetResourceVersion(rv)
	return m
}

func metricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", m.Desc())
	return 0
}
