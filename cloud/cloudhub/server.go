package cloudhub

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/security/certs"
)

// HeaderNodeID carries the node name of an edge connection; KubeEdge's
// edgehub sends it (with project_id) on the websocket handshake.
const HeaderNodeID = "node_id"

var (
	errShuttingDown = errors.New("cloudhub is shutting down")
	errNodeLimit    = errors.New("node limit reached")
)

// ConnectionEvent is the content of the connected/disconnected messages
// published to the controllers.
type ConnectionEvent struct {
	EventType string `json:"event_type"`
	Timestamp int64  `json:"timestamp"`
	ClientID  string `json:"client_id"`
}

// handler serves the websocket endpoint on every path: as in KubeEdge, the
// path is decorative and the node is named by the node_id header.
func (h *CloudHub) handler(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(nodeID string, status int, reason string, err error) {
			// Info, not Error: a refusal is the system working.
			klog.InfoS("Refusing edge connection", "remote", r.RemoteAddr, "node", nodeID, "status", status, "reason", reason, "err", err)
			h.metrics.refused.WithLabelValues(reason).Inc()
			http.Error(w, oneLine(err.Error()), status)
		}
		nodeID, cert, status, reason, err := authenticate(r)
		if err != nil {
			refuse(nodeID, status, reason, err)
			return
		}
		if status, reason, err := h.checkRevoked(cert); err != nil {
			refuse(nodeID, status, reason, err)
			return
		}
		if err := h.admit(nodeID); err != nil {
			reason := refusedNodeLimit
			if errors.Is(err, errShuttingDown) {
				reason = refusedShuttingDown
			}
			refuse(nodeID, http.StatusServiceUnavailable, reason, err)
			return
		}
		conn, err := h.upgrader.Upgrade(w, r, nil)
		if err != nil {
			// The upgrader has already answered with an HTTP error.
			klog.InfoS("Websocket upgrade failed", "remote", r.RemoteAddr, "node", nodeID, "err", err)
			return
		}
		conn.SetReadLimit(h.opts.ReadLimit)
		s := &session{hub: h, nodeID: nodeID, conn: conn, remote: r.RemoteAddr, cert: cert}
		if err := h.register(ctx, s); err != nil {
			klog.InfoS("Refusing edge connection", "remote", r.RemoteAddr, "node", nodeID, "err", err)
			s.close(err.Error(), websocket.CloseTryAgainLater)
			return
		}
		klog.InfoS("Edge node connected", "node", nodeID, "remote", r.RemoteAddr)
		// The reader gets a fresh goroutine so that the HTTP server's one,
		// whose stack grew during the TLS handshake, and its request state
		// are freed: this is what most of a connection's memory would be.
		go func() {
			defer h.sessions.Done()
			s.safeReadLoop(ctx)
			h.unregister(ctx, s)
		}()
	})
}

// oneLine keeps a refusal to one line: edges print the body verbatim.
func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

// authenticate returns the node named by the node_id header once the
// verified client certificate proves it, with that certificate; or an HTTP
// status, the metric reason and the error.
func authenticate(r *http.Request) (nodeID string, cert *x509.Certificate, status int, reason string, err error) {
	nodeID = r.Header.Get(HeaderNodeID)
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nodeID, nil, http.StatusUnauthorized, refusedNoCert, errors.New("no client certificate: edge nodes must present their node certificate")
	}
	cert = r.TLS.PeerCertificates[0]
	if len(r.TLS.VerifiedChains) == 0 {
		return nodeID, nil, http.StatusUnauthorized, refusedBadCert, fmt.Errorf("client certificate %q is not signed by the cloud CA",
			cert.Subject.CommonName)
	}
	certNode, err := certs.NodeNameFromCert(cert)
	if err != nil {
		return nodeID, nil, http.StatusForbidden, refusedBadCert, fmt.Errorf("client certificate does not identify a node: %w", err)
	}
	switch {
	case nodeID == "":
		return certNode, nil, http.StatusUnauthorized, refusedNodeMismatch, fmt.Errorf("missing %s header (the client certificate is for node %q)", HeaderNodeID, certNode)
	case nodeID != certNode:
		return nodeID, nil, http.StatusForbidden, refusedNodeMismatch, fmt.Errorf("%s header %q does not match the client certificate, which is for node %q",
			HeaderNodeID, nodeID, certNode)
	case strings.Contains(nodeID, resource.Sep):
		return nodeID, nil, http.StatusBadRequest, refusedBadNode, fmt.Errorf("node name %q contains %q", nodeID, resource.Sep)
	}
	return nodeID, cert, 0, "", nil
}

// admit refuses a new node early, before the upgrade, so that it gets a
// plain HTTP error; register re-checks atomically.
func (h *CloudHub) admit(nodeID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return errShuttingDown
	}
	if h.nodeLimit <= 0 || h.connected < h.nodeLimit {
		return nil
	}
	if n := h.nodes[nodeID]; n != nil {
		n.mu.Lock()
		replacing := n.sess != nil
		n.mu.Unlock()
		if replacing {
			return nil
		}
	}
	return fmt.Errorf("%w: %d nodes connected", errNodeLimit, h.nodeLimit)
}

// register makes s the node's session, closing the one it replaces, and
// publishes the connected event. On success the caller owns one count of
// h.sessions.
func (h *CloudHub) register(ctx context.Context, s *session) error {
	for {
		n := h.getNode(s.nodeID)
		// evMu keeps this node's connected/disconnected events in the
		// order the sessions changed.
		n.evMu.Lock()
		h.mu.Lock()
		if h.closing {
			h.mu.Unlock()
			n.evMu.Unlock()
			return errShuttingDown
		}
		n.mu.Lock()
		if n.removed {
			n.mu.Unlock()
			h.mu.Unlock()
			n.evMu.Unlock()
			continue
		}
		old := n.sess
		if old == nil && h.nodeLimit > 0 && h.connected >= h.nodeLimit {
			n.mu.Unlock()
			h.mu.Unlock()
			n.evMu.Unlock()
			return fmt.Errorf("%w: %d nodes connected", errNodeLimit, h.nodeLimit)
		}
		if old == nil {
			h.connected++
		}
		n.sess = s
		s.node = n
		// The in-flight message was written on the old connection.
		n.returnInflight()
		h.sessions.Add(1)
		n.mu.Unlock()
		h.mu.Unlock()

		if old != nil {
			old.close("replaced by a new connection of the same node", websocket.ClosePolicyViolation)
		}
		h.publish(ctx, s.nodeID, model.ConnectedOperation)
		n.evMu.Unlock()
		h.queue.Add(s.nodeID)
		return nil
	}
}

// unregister forgets s; if it was still the node's session (not replaced)
// the node is disconnected and the controllers are told.
func (h *CloudHub) unregister(ctx context.Context, s *session) {
	n := s.node
	n.evMu.Lock()
	defer n.evMu.Unlock()
	n.mu.Lock()
	current := n.sess == s
	if current {
		n.sess = nil
		n.returnInflight()
	}
	n.mu.Unlock()
	if !current {
		return
	}
	h.mu.Lock()
	h.connected--
	h.mu.Unlock()
	klog.InfoS("Edge node disconnected", "node", s.nodeID, "remote", s.remote)
	h.publish(ctx, s.nodeID, model.DisconnectedOperation)
	// Lets a worker forget the node if nothing is queued for it.
	h.queue.Add(s.nodeID)
}

// publish tells edgecontroller and devicecontroller that a node connected
// or disconnected. Controllers that are not running are not an error.
func (h *CloudHub) publish(ctx context.Context, nodeID, operation string) {
	res, err := resource.BuildNode(nodeID)
	if err != nil {
		klog.ErrorS(err, "Cannot publish connection event", "node", nodeID, "operation", operation)
		return
	}
	content, err := json.Marshal(ConnectionEvent{EventType: operation, Timestamp: time.Now().Unix(), ClientID: nodeID})
	if err != nil {
		klog.ErrorS(err, "Cannot encode connection event", "node", nodeID)
		return
	}
	msg := model.NewMessage("").
		BuildRouter(modules.CloudHub, model.GroupResource, res, operation).
		FillBody(json.RawMessage(content))
	for _, group := range []string{modules.EdgeController, modules.DeviceController} {
		err := h.opts.Bus.SendToGroup(ctx, group, *msg.Clone())
		switch {
		case err == nil, errors.Is(err, beehive.ErrUnknownGroup):
		case ctx.Err() != nil:
			klog.V(2).InfoS("Connection event not delivered: shutting down", "node", nodeID, "operation", operation, "group", group)
		default:
			klog.ErrorS(err, "Cannot publish connection event", "node", nodeID, "operation", operation, "group", group)
		}
	}
}
