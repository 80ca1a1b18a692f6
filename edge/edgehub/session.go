package edgehub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// Wire values of spec §10.
const (
	sourceRouterEventBus   = "router_eventbus"
	sourceRouterServiceBus = "router_servicebus"
	// taskManagerModule is the edge task manager's module name.
	taskManagerModule = "taskmanager"
	keepaliveContent  = "ping"
	ackContent        = "ack"
)

// maxDialErrorLen bounds the refusal text quoted from a failed handshake.
const maxDialErrorLen = 512

var (
	errRotated     = errors.New("node certificate rotated")
	errUnencodable = errors.New("message cannot be encoded as JSON")
)

func (h *Hub) dial(ctx context.Context) (*websocket.Conn, error) {
	tc, err := h.certs.ClientTLSConfig()
	if err != nil {
		return nil, err
	}
	// The path is decorative for cloudhub; the headers carry the identity.
	u := url.URL{Scheme: "wss", Host: h.server, Path: "/" + h.project + "/" + h.node + "/events"}
	hdr := http.Header{}
	hdr.Set("node_id", h.node)
	hdr.Set("project_id", h.project)
	hdr.Set("ConnectionUse", "msg")
	d := websocket.Dialer{TLSClientConfig: tc, HandshakeTimeout: h.timing.Handshake}
	conn, resp, err := d.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, maxDialErrorLen))
			_ = resp.Body.Close()
			return nil, fmt.Errorf("dial %s: HTTP %d %s: %w", u.String(), resp.StatusCode, strings.TrimSpace(string(body)), err)
		}
		return nil, fmt.Errorf("dial %s: %w", u.String(), err)
	}
	return conn, nil
}

// session is one connection and the three loops that use it.
type session struct {
	h    *Hub
	conn *websocket.Conn
	// wmu serialises data frames; gorilla allows one writer at a time
	// (control frames excepted).
	wmu sync.Mutex
}

// serve runs the connection until it fails, the certificate is rotated or
// ctx ends, and returns why it stopped.
func (h *Hub) serve(ctx context.Context, conn *websocket.Conn) error {
	s := &session{h: h, conn: conn}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	h.setConnected(true)
	klog.InfoS("Connected to cloud", "server", h.server, "node", h.node)
	h.broadcast(ctx, model.ContentCloudConnected)

	var wg sync.WaitGroup
	// The reader stops when the connection is closed, not with sctx: a
	// message already read is still delivered while the session winds down.
	wg.Go(func() { cancel(s.readLoop(ctx)) })
	wg.Go(func() { cancel(s.writeLoop(sctx)) })
	wg.Go(func() { cancel(s.keepalive(sctx)) })
	select {
	case <-sctx.Done():
	case <-h.certs.Rotated():
		cancel(errRotated)
	}
	cause := context.Cause(sctx)
	if ctx.Err() != nil || errors.Is(cause, errRotated) {
		// We are the ones leaving: tell the cloud, so it drops the session
		// now instead of waiting for the keepalive timeout.
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(min(defaultCloseFrameWait, h.timing.WriteTimeout)))
	}
	// Closing unblocks the reader and any writer stuck on a dead peer.
	_ = conn.Close()
	wg.Wait()

	h.setConnected(false)
	if ctx.Err() == nil {
		klog.InfoS("Disconnected from cloud", "server", h.server, "reason", cause.Error())
		h.broadcast(ctx, model.ContentCloudDisconnected)
	}
	return cause
}

func (s *session) readLoop(ctx context.Context) error {
	h := s.h
	// A keepalive goes out every heartbeat with a websocket ping; the pong,
	// or any frame, must follow within the read timeout.
	window := h.timing.Heartbeat + h.timing.ReadTimeout
	extend := func() { _ = s.conn.SetReadDeadline(time.Now().Add(window)) }
	extend()
	s.conn.SetPongHandler(func(string) error { extend(); return nil })
	for {
		typ, r, err := s.conn.NextReader()
		if err != nil {
			return fmt.Errorf("read from cloud: %w", err)
		}
		extend()
		// Read through a limit instead of conn.SetReadLimit, which would
		// close the connection: one bad frame must not cut the node off.
		data, err := io.ReadAll(io.LimitReader(r, h.maxFrame+1))
		if err != nil {
			return fmt.Errorf("read from cloud: %w", err)
		}
		if int64(len(data)) > h.maxFrame {
			rest, err := io.Copy(io.Discard, r)
			if err != nil {
				return fmt.Errorf("read from cloud: %w", err)
			}
			h.metrics.dropped.WithLabelValues(dropOversized).Inc()
			klog.ErrorS(nil, "Dropping oversized frame from cloud", "bytes", int64(len(data))+rest, "limit", h.maxFrame)
			continue
		}
		var msg model.Message
		if err := json.Unmarshal(data, &msg); err != nil {
			h.metrics.dropped.WithLabelValues(dropMalformed).Inc()
			klog.ErrorS(err, "Dropping malformed frame from cloud", "bytes", len(data), "frameType", typ)
			continue
		}
		h.metrics.down.Inc()
		if err := s.handle(ctx, msg); err != nil {
			return err
		}
		// The deadline measures the cloud's silence, not how long a busy
		// local module took to accept the message.
		extend()
	}
}

// handle answers control messages and routes the rest (spec §10 table). It
// returns an error only when the connection or the session is finished.
func (s *session) handle(ctx context.Context, msg model.Message) error {
	h := s.h
	klog.V(4).InfoS("Message from cloud", "message", msg.String())
	switch msg.Router.Operation {
	case model.PingOperation, model.PongOperation, model.ConfigOperation:
		// Answered by the transport, as viaduct does, and not forwarded.
		if err := s.write(*model.NewRespByMessage(&msg, ackContent)); err != nil {
			return fmt.Errorf("acknowledge %s: %w", msg.Router.Operation, err)
		}
		return nil
	}

	var err error
	hasParent := msg.Header.ParentID != ""
	switch msg.Router.Group {
	case model.GroupResource, model.GroupFunc:
		if hasParent {
			err = h.bus.SendResp(msg)
		}
		if !hasParent || errors.Is(err, beehive.ErrNoWaiter) {
			// A reply whose asker gave up still carries an object the cloud
			// wants ACKed: MetaManager stores it and ACKs it, so the cloud
			// does not resend it while the node's other messages wait.
			err = h.bus.SendToGroup(ctx, modules.MetaGroup, msg)
		}
	case model.GroupTwin:
		err = h.bus.SendToGroup(ctx, modules.TwinGroup, msg)
	case model.GroupUser:
		switch {
		case hasParent:
			err = h.bus.SendResp(msg)
		case msg.Router.Source == sourceRouterEventBus:
			err = h.bus.Send(ctx, modules.EventBus, msg)
		case msg.Router.Source == sourceRouterServiceBus:
			err = h.bus.Send(ctx, modules.ServiceBus, msg)
		default:
			err = fmt.Errorf("no route for user message from source %q", msg.Router.Source)
		}
	case model.GroupTaskManager:
		err = h.bus.Send(ctx, taskManagerModule, msg)
	default:
		err = fmt.Errorf("unknown group %q", msg.Router.Group)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || errors.Is(err, beehive.ErrStopped) {
		return fmt.Errorf("deliver message from cloud: %w", err)
	}
	// The cloud retries what it needs acknowledged; one undeliverable
	// message must not cost the node its link.
	h.metrics.dropped.WithLabelValues(dropUnroutable).Inc()
	klog.ErrorS(err, "Dropping message from cloud", "message", msg.String())
	return nil
}

// writeLoop sends the outbox, control lane first. A message whose write
// fails goes back to the front of its lane: a duplicate after reconnect is
// better than a loss.
func (s *session) writeLoop(ctx context.Context) error {
	h := s.h
	for {
		msg, l, err := h.outbox.pop(ctx)
		if err != nil {
			return err
		}
		if l == laneControl {
			if err := h.limiter.Wait(ctx); err != nil {
				h.outbox.pushFront(msg)
				return context.Cause(ctx)
			}
			// Bulk pays for control's share of the link, without control
			// ever waiting for bulk's tokens.
			h.bulk.Reserve()
		} else {
			preempted, err := s.waitBulk(ctx)
			if err != nil || preempted {
				h.outbox.pushFront(msg)
				if err != nil {
					return err
				}
				continue
			}
		}
		// Asynchronous sends always go out with sync=false (viaduct's
		// WriteMessageAsync); responses are matched by parent id only.
		msg.Header.Sync = false
		if err := s.write(msg); err != nil {
			if errors.Is(err, errUnencodable) {
				h.metrics.dropped.WithLabelValues(dropMalformed).Inc()
				klog.ErrorS(err, "Dropping message for the cloud", "message", msg.String())
				continue
			}
			h.outbox.pushFront(msg)
			return err
		}
	}
}

// waitBulk waits for the bulk budget to allow one message. It gives up the
// wait, and reports preempted, as soon as control traffic is queued, so the
// writer sends that first.
func (s *session) waitBulk(ctx context.Context) (preempted bool, err error) {
	h := s.h
	r := h.bulk.Reserve()
	d := r.Delay()
	if d == 0 {
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return false, nil
		case <-ctx.Done():
			r.Cancel()
			return false, context.Cause(ctx)
		case <-h.outbox.controlWaiting():
			if h.outbox.hasControl() {
				r.Cancel()
				return true, nil
			}
		}
	}
}

func (s *session) keepalive(ctx context.Context) error {
	h := s.h
	t := time.NewTicker(h.timing.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
		msg := model.NewMessage("").
			BuildRouter(modules.EdgeHub, model.GroupResource, resource.TypeNode, model.KeepaliveOperation).
			FillBody(keepaliveContent)
		if err := s.write(*msg); err != nil {
			return fmt.Errorf("send keepalive: %w", err)
		}
		if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(h.timing.WriteTimeout)); err != nil {
			return fmt.Errorf("send websocket ping: %w", err)
		}
	}
}

// write sends one message as one JSON text frame.
func (s *session) write(msg model.Message) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errUnencodable, msg.String(), err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.h.timing.WriteTimeout)); err != nil {
		return fmt.Errorf("write to cloud: %w", err)
	}
	if err := s.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("write message %s to cloud: %w", msg.Header.ID, err)
	}
	s.h.metrics.up.Inc()
	return nil
}
