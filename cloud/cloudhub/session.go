package cloudhub

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// maxPooledReadBuf keeps one large frame from pinning its buffer in the pool.
const maxPooledReadBuf = 64 << 10

// maxCloseReason is the room left for the reason in a close frame, whose
// payload may not exceed 125 bytes.
const maxCloseReason = 120

// session is one websocket connection of an edge node. Its only goroutine
// is the reader; writes come from the workers and, for control replies,
// from the reader, serialized by wmu.
type session struct {
	hub    *CloudHub
	nodeID string
	node   *node // set by register
	conn   *websocket.Conn
	remote string
	// cert is the client certificate the session was opened with, checked
	// again whenever the revocation list changes.
	cert *x509.Certificate

	wmu       sync.Mutex
	closeOnce sync.Once
}

// readLoop handles frames until the connection fails or is closed.
// Keepalive is a read deadline pushed forward by each keepalive message, so
// a silent node costs no timer goroutine.
// safeReadLoop is readLoop with a panic (a bug handling one node's message) costing that node its session, not
// cloudcore every node's.
func (s *session) safeReadLoop(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered panic reading from edge node; closing its session", "node", s.nodeID,
				"panic", r, "stack", string(debug.Stack()))
			s.close("internal error", websocket.CloseInternalServerErr)
		}
	}()
	s.readLoop(ctx)
}

func (s *session) readLoop(ctx context.Context) {
	h := s.hub
	s.extendKeepalive()
	for {
		_, r, err := s.conn.NextReader()
		if err != nil {
			s.closeOnReadError(err)
			return
		}
		msg, err := h.decode(r)
		switch {
		case err == nil:
			h.upstream(ctx, s, msg)
		case errors.Is(err, websocket.ErrReadLimit):
			h.metrics.dropped.WithLabelValues(reasonOversized).Inc()
			klog.InfoS("Dropping oversized frame from edge node and closing its session",
				"node", s.nodeID, "limit", h.opts.ReadLimit)
			s.close("frame larger than the read limit", websocket.CloseMessageTooBig)
			return
		case errors.Is(err, errMalformed):
			h.metrics.dropped.WithLabelValues(reasonMalformed).Inc()
			klog.InfoS("Dropping malformed frame from edge node", "node", s.nodeID, "err", err)
		default:
			s.closeOnReadError(err)
			return
		}
	}
}

var errMalformed = errors.New("malformed message")

// decode reads one frame into a pooled buffer and parses it. Message
// decoding copies what it keeps, so the buffer can be reused at once.
func (h *CloudHub) decode(r io.Reader) (*model.Message, error) {
	buf, _ := h.readBufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= maxPooledReadBuf {
			buf.Reset()
			h.readBufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	msg := new(model.Message)
	if err := json.Unmarshal(buf.Bytes(), msg); err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return msg, nil
}

func (s *session) closeOnReadError(err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		klog.InfoS("Edge node sent no keepalive in time, closing its session", "node", s.nodeID, "keepalive", s.hub.keepalive)
		s.close("keepalive timeout", websocket.CloseGoingAway)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
		klog.V(2).InfoS("Edge node closed its connection", "node", s.nodeID, "err", err)
		s.close("closed by the edge", websocket.CloseNormalClosure)
	default:
		klog.V(2).InfoS("Edge connection read failed", "node", s.nodeID, "err", err)
		s.close(err.Error(), websocket.CloseAbnormalClosure)
	}
}

func (s *session) extendKeepalive() {
	if err := s.conn.SetReadDeadline(time.Now().Add(s.hub.keepalive)); err != nil {
		klog.V(2).InfoS("Cannot extend keepalive deadline", "node", s.nodeID, "err", err)
	}
}

// write sends one message as one text frame.
func (s *session) write(msg *model.Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.hub.writeTimeout)); err != nil {
		return fmt.Errorf("write message %s to node %q: %w", msg.Header.ID, s.nodeID, err)
	}
	if err := s.conn.WriteJSON(msg); err != nil {
		return fmt.Errorf("write message %s to node %q: %w", msg.Header.ID, s.nodeID, err)
	}
	return nil
}

// close ends the session; the reader then unregisters it. Safe to call
// from any goroutine, any number of times.
func (s *session) close(reason string, code int) {
	s.closeOnce.Do(func() {
		klog.V(2).InfoS("Closing edge session", "node", s.nodeID, "remote", s.remote, "reason", reason)
		if code != websocket.CloseAbnormalClosure {
			if len(reason) > maxCloseReason {
				reason = reason[:maxCloseReason]
			}
			_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeGrace))
		}
		_ = s.conn.Close()
	})
}
