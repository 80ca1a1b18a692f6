package cloudhub

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/security/certs"
	rev "github.com/tether-edge/tether/pkg/security/revocation"
)

// fakeRevocation is a deny-list the test edits; notify tells CloudHub.
type fakeRevocation struct {
	mu       sync.Mutex
	list     rev.List
	notReady bool
	subs     []func()
}

func (f *fakeRevocation) Check(c *x509.Certificate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.notReady {
		return errNotLoaded
	}
	return f.list.Check(c)
}

func (f *fakeRevocation) Subscribe(fn func()) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
	return func() {}
}

func (f *fakeRevocation) update(edit func(*rev.List)) {
	f.mu.Lock()
	if f.list.Serials == nil {
		f.list = rev.List{Serials: map[string]rev.SerialEntry{}, Nodes: map[string]rev.NodeFloor{}}
	}
	edit(&f.list)
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn()
	}
}

// dialWith connects as node with cert and returns the refusal's status and
// body (101 when it connected).
func dialWith(t *testing.T, e *testEnv, node string, cert tls.Certificate) (int, string) {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.pki.pool, Certificates: []tls.Certificate{cert}}, HandshakeTimeout: waitTimeout}
	conn, resp, err := d.Dial(e.url, http.Header{HeaderNodeID: {node}})
	if conn != nil {
		conn.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", node, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// session is node's open session.
func (e *testEnv) session(node string) *session {
	e.t.Helper()
	e.hub.mu.Lock()
	n := e.hub.nodes[node]
	e.hub.mu.Unlock()
	if n == nil {
		e.t.Fatalf("no node %s", node)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess == nil || n.sess.cert == nil {
		e.t.Fatalf("node %s has no session with a certificate", node)
	}
	return n.sess
}

var errNotLoaded = &notLoaded{}

type notLoaded struct{}

func (*notLoaded) Error() string { return "certificate revocation list not loaded yet" }

func TestRevokedCertificates(t *testing.T) {
	fr := &fakeRevocation{}
	e := newEnv(t, envConfig{opts: func(o *Options) { o.Revocation = fr }})
	// A certificate revoked by serial, and one by its node's floor, are
	// refused at the handshake with a one-line reason; others connect.
	revokedCert := e.pki.nodeCert(t, "edge-serial")
	leaf, _ := x509.ParseCertificate(revokedCert.Certificate[0])
	flooredCert := e.pki.nodeCert(t, "edge-floor")
	floorLeaf, _ := x509.ParseCertificate(flooredCert.Certificate[0])
	fr.update(func(l *rev.List) {
		l.Serials[rev.SerialHex(leaf.SerialNumber)] = rev.SerialEntry{Node: "edge-serial", RevokedAt: leaf.NotBefore}
		l.Nodes["edge-floor"] = rev.NodeFloor{Before: certs.IssuedAt(floorLeaf).Add(1), Reason: "node deleted"}
	})
	for _, tc := range []struct {
		node, rule string
		cert       tls.Certificate
	}{
		{"edge-serial", rev.RuleSerial, revokedCert},
		{"edge-floor", rev.RuleNode, flooredCert},
	} {
		t.Run("handshake refused: "+tc.rule, func(t *testing.T) {
			status, body := dialWith(t, e, tc.node, tc.cert)
			if status != http.StatusForbidden {
				t.Fatalf("handshake: %d %q, want HTTP 403", status, body)
			}
			if !strings.Contains(body, tc.rule) || strings.Count(body, "\n") != 1 {
				t.Errorf("refusal body %q should be one line naming %s", body, tc.rule)
			}
			if got := testutil.ToFloat64(e.hub.metrics.refused.WithLabelValues(tc.rule)); got != 1 {
				t.Errorf("refused{reason=%s} = %v", tc.rule, got)
			}
		})
	}

	t.Run("open session closed when its certificate is revoked", func(t *testing.T) {
		victim := e.connect("edge-live")
		bystander := e.connect("edge-other")
		s := e.session("edge-live")
		fr.update(func(l *rev.List) {
			l.Serials[rev.SerialHex(s.cert.SerialNumber)] = rev.SerialEntry{Node: "edge-live", RevokedAt: s.cert.NotBefore}
		})
		err := victim.expectClosed()
		if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) || !strings.Contains(err.Error(), "certificate revoked") {
			t.Errorf("victim closed with %v, want policy violation 'certificate revoked'", err)
		}
		e.expectEvent("edge-live", model.DisconnectedOperation)
		if got := testutil.ToFloat64(e.hub.metrics.revokedSessions.WithLabelValues(rev.RuleSerial)); got != 1 {
			t.Errorf("sessions_revoked{rule=%s} = %v", rev.RuleSerial, got)
		}
		// The other node keeps its session.
		ping := model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", model.PingOperation)
		bystander.send(ping)
		if got := bystander.recv(); got.Header.ParentID != ping.Header.ID {
			t.Errorf("bystander got %s", got.String())
		}
	})

	t.Run("node floor closes the session", func(t *testing.T) {
		victim := e.connect("edge-floor2")
		s := e.session("edge-floor2")
		floor := certs.IssuedAt(s.cert).Add(1)
		fr.update(func(l *rev.List) {
			l.Nodes["edge-floor2"] = rev.NodeFloor{Before: floor, Reason: "keadm revoke"}
		})
		if err := victim.expectClosed(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Errorf("closed with %v", err)
		}
		e.expectEvent("edge-floor2", model.DisconnectedOperation)
		// A certificate dated after the floor (as the certificate service
		// dates it) connects again.
		key, csr, err := certs.NewNodeCSR("edge-floor2")
		if err != nil {
			t.Fatal(err)
		}
		der, err := certs.SignNodeCSR(e.pki.ca, e.pki.caKey, csr, "edge-floor2", nil, 0, rev.IssueTime(floor, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if status, body := dialWith(t, e, "edge-floor2", tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}); status != http.StatusSwitchingProtocols {
			t.Errorf("certificate issued after the floor: %d %q", status, body)
		}
		e.expectEvent("edge-floor2", model.ConnectedOperation)
		e.expectEvent("edge-floor2", model.DisconnectedOperation)
	})

	t.Run("list not loaded: refused with 503, open sessions kept", func(t *testing.T) {
		open := e.connect("edge-kept")
		fr.update(func(l *rev.List) {})
		fr.mu.Lock()
		fr.notReady = true
		fr.mu.Unlock()
		defer func() { fr.mu.Lock(); fr.notReady = false; fr.mu.Unlock() }()
		if _, resp, _ := e.dial("edge-new", "edge-new"); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("handshake while the list is not loaded: %v, want 503", resp)
		}
		e.hub.closeRevokedSessions()
		ping := model.NewMessage("").BuildRouter("websocket", model.GroupResource, "node", model.PingOperation)
		open.send(ping)
		if got := open.recv(); got.Header.ParentID != ping.Header.ID {
			t.Errorf("session closed while the list could not be read")
		}
	})
}
