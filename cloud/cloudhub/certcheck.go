package cloudhub

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	rev "github.com/tether-edge/tether/pkg/security/revocation"
)

// Revocation is the certificate deny-list CloudHub honours
// (cloud/cloudhub/revocation.Manager).
type Revocation interface {
	// Check returns nil, an error wrapping rev.ErrRevoked, or another error
	// when it cannot tell (list not loaded yet).
	Check(cert *x509.Certificate) error
	// Subscribe calls fn whenever the list may have grown; fn must not block.
	Subscribe(fn func()) (unsubscribe func())
}

// revocationSweepInterval re-checks open sessions even without a change
// notification, as a safety net.
const revocationSweepInterval = 30 * time.Second

// Reasons of tether_cloudhub_connections_refused_total besides the rules of
// pkg/security/revocation.
const (
	refusedNoCert        = "no_certificate"
	refusedBadCert       = "bad_certificate"
	refusedNodeMismatch  = "node_mismatch"
	refusedBadNode       = "bad_node_name"
	refusedUnavailable   = "revocation_unavailable"
	refusedNodeLimit     = "node_limit"
	refusedShuttingDown  = "shutting_down"
	refusedRevokedSerial = rev.RuleSerial
	refusedRevokedNode   = rev.RuleNode
)

var refusedReasons = []string{refusedNoCert, refusedBadCert, refusedNodeMismatch, refusedBadNode, refusedUnavailable,
	refusedNodeLimit, refusedShuttingDown, refusedRevokedSerial, refusedRevokedNode}

// checkRevoked returns the refusal of a revoked certificate: status, metric
// reason and error; status 0 means the certificate may be used.
func (h *CloudHub) checkRevoked(cert *x509.Certificate) (int, string, error) {
	if h.opts.Revocation == nil {
		return 0, "", nil
	}
	err := h.opts.Revocation.Check(cert)
	var revoked *rev.RevokedError
	switch {
	case err == nil:
		return 0, "", nil
	case errors.As(err, &revoked):
		return http.StatusForbidden, revoked.Rule, err
	case errors.Is(err, rev.ErrRevoked):
		return http.StatusForbidden, refusedRevokedSerial, err
	default:
		return http.StatusServiceUnavailable, refusedUnavailable, err
	}
}

// watchRevocations closes sessions whose certificate becomes revoked, on
// every change of the list and every revocationSweepInterval, until ctx ends.
func (h *CloudHub) watchRevocations(ctx context.Context) {
	if h.opts.Revocation == nil {
		return
	}
	changed := make(chan struct{}, 1)
	unsubscribe := h.opts.Revocation.Subscribe(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer unsubscribe()
	tick := time.NewTicker(revocationSweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
		h.closeRevokedSessions()
	}
}

// closeRevokedSessions checks every open session's certificate.
func (h *CloudHub) closeRevokedSessions() {
	h.mu.Lock()
	var open []*session
	for _, n := range h.nodes {
		n.mu.Lock()
		if n.sess != nil && n.sess.cert != nil {
			open = append(open, n.sess)
		}
		n.mu.Unlock()
	}
	h.mu.Unlock()
	for _, s := range open {
		status, reason, err := h.checkRevoked(s.cert)
		if status != http.StatusForbidden {
			continue // not revoked, or cannot tell: keep the session
		}
		klog.InfoS("Closing edge session: its certificate is revoked", "node", s.nodeID, "remote", s.remote,
			"serial", rev.SerialHex(s.cert.SerialNumber), "rule", reason, "reason", err)
		h.metrics.revokedSessions.WithLabelValues(reason).Inc()
		s.close("certificate revoked ("+reason+")", websocket.ClosePolicyViolation)
	}
}
