package cloudhub

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// node is the delivery state of one edge node. It outlives sessions: a
// reconnecting node finds its queues as it left them.
type node struct {
	id string
	// evMu serializes session changes with their connection events.
	evMu sync.Mutex

	mu sync.Mutex
	// removed: the node was forgotten (idle, offline); get a fresh one.
	removed bool
	sess    *session
	noack   []*model.Message
	// items is the ACK queue, one entry per object (or per message that
	// cannot be merged), holding the newest message not yet delivered.
	items map[string]*ackItem
	// Keys of items by state, in arrival order.
	unchecked []string
	ready     []string
	backoff   []string
	inflight  *inflight
}

type itemState uint8

const (
	// stateParked: the object's previous message is in flight; pending, if
	// set, goes next once that one is ACKed or given up.
	stateParked itemState = iota
	stateUnchecked
	stateReady
	stateBackoff
)

type ackItem struct {
	pending *queuedMsg
	state   itemState
	retryAt time.Time
}

type inflight struct {
	key      string
	qm       *queuedMsg
	attempts int
	deadline time.Time
	acked    bool
}

func newNode(id string) *node {
	return &node{id: id, items: make(map[string]*ackItem)}
}

// getNode returns the node, creating it if needed. It may be removed by the
// time the caller locks it; lockNode handles that.
func (h *CloudHub) getNode(id string) *node {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.nodes[id]
	if n == nil {
		n = newNode(id)
		h.nodes[id] = n
	}
	return n
}

// lockNode returns the live node for id, locked.
func (h *CloudHub) lockNode(id string) *node {
	for {
		n := h.getNode(id)
		n.mu.Lock()
		if !n.removed {
			return n
		}
		n.mu.Unlock()
	}
}

// enqueueAck merges q; false means q is stale and dropped. Caller holds mu.
func (n *node) enqueueAck(q *queuedMsg) bool {
	it := n.items[q.key]
	if it == nil {
		it = &ackItem{pending: q}
		n.items[q.key] = it
		if q.needsCheck() {
			it.state = stateUnchecked
			n.unchecked = append(n.unchecked, q.key)
		} else {
			it.state = stateReady
			n.ready = append(n.ready, q.key)
		}
		return true
	}
	cur := it.pending
	if cur == nil && n.inflight != nil && n.inflight.key == q.key {
		cur = n.inflight.qm
	}
	if cur != nil && !q.supersedes(cur) {
		return false
	}
	// The item keeps its place in the queue; a newer version of an object
	// is newer than its ObjectSync too, so an earlier check still holds.
	it.pending = q
	return true
}

// trimNoAck drops the oldest fire-and-forget messages beyond limit.
func (n *node) trimNoAck(limit int) int {
	over := len(n.noack) - limit
	if over <= 0 {
		return 0
	}
	clear(n.noack[:over])
	n.noack = n.noack[over:]
	return over
}

// ackReceived marks the in-flight message ACKed if parent is its id.
func (n *node) ackReceived(parent string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	in := n.inflight
	if in == nil || in.acked || in.qm.msg.Header.ID != parent {
		return false
	}
	in.acked = true
	return true
}

// returnInflight puts an unACKed in-flight message back at the head of the
// queue when its connection is gone. Caller holds mu.
func (n *node) returnInflight() {
	in := n.inflight
	if in == nil || in.acked {
		return
	}
	n.inflight = nil
	it := n.items[in.key]
	if it == nil {
		it = &ackItem{}
		n.items[in.key] = it
	}
	if it.pending == nil {
		it.pending = in.qm
	}
	it.state = stateReady
	n.ready = slices.Insert(n.ready, 0, in.key)
}

// requeue gives up on the in-flight message until retryAt. Caller holds mu.
func (n *node) requeue(in *inflight, retryAt time.Time) {
	n.inflight = nil
	it := n.items[in.key]
	if it == nil {
		it = &ackItem{}
		n.items[in.key] = it
	}
	if it.pending == nil {
		it.pending = in.qm
	}
	it.state = stateBackoff
	it.retryAt = retryAt
	n.backoff = append(n.backoff, in.key)
}

// promoteDue moves items whose backoff has passed to the ready queue.
// Caller holds mu.
func (n *node) promoteDue(now time.Time) {
	if len(n.backoff) == 0 {
		return
	}
	keep := n.backoff[:0]
	for _, k := range n.backoff {
		it := n.items[k]
		switch {
		case it == nil || it.state != stateBackoff:
		case now.Before(it.retryAt):
			keep = append(keep, k)
		default:
			it.state = stateReady
			n.ready = append(n.ready, k)
		}
	}
	clear(n.backoff[len(keep):])
	n.backoff = keep
}

// release frees the delivery slot of in, ACKed or given up: a newer message
// for the same object, if one came meanwhile, goes next. Caller holds mu.
func (n *node) release(in *inflight) {
	n.inflight = nil
	if it := n.items[in.key]; it != nil {
		if it.pending != nil {
			it.state = stateReady
			n.ready = append(n.ready, in.key)
		} else {
			delete(n.items, in.key)
		}
	}
}

// popReady takes the next message to send. Caller holds mu.
func (n *node) popReady() *inflight {
	for len(n.ready) > 0 {
		k := n.ready[0]
		n.ready[0] = ""
		n.ready = n.ready[1:]
		it := n.items[k]
		if it == nil || it.state != stateReady || it.pending == nil {
			continue
		}
		q := it.pending
		it.pending, it.state = nil, stateParked
		return &inflight{key: k, qm: q}
	}
	n.ready = nil
	return nil
}

// idle reports whether nothing about the node needs remembering.
func (n *node) idle() bool {
	return n.sess == nil && n.inflight == nil && len(n.items) == 0 && len(n.noack) == 0
}

// process does all pending work of one node; the workqueue guarantees a
// node is processed by one worker at a time.
func (h *CloudHub) process(ctx context.Context, id string) {
	h.mu.Lock()
	n := h.nodes[id]
	h.mu.Unlock()
	if n == nil {
		return
	}
	h.checkObjectSyncs(ctx, n)
	h.finishAck(n)
	n.mu.Lock()
	s := n.sess
	n.mu.Unlock()
	if s != nil {
		h.sendNoAck(n, s)
		h.sendAck(n, s)
	}
	h.scheduleOrForget(n)
}

// checkObjectSyncs looks up (creating on first sight) the ObjectSync of each
// newly queued object and drops messages the node already has.
func (h *CloudHub) checkObjectSyncs(ctx context.Context, n *node) {
	n.mu.Lock()
	keys := n.unchecked
	n.unchecked = nil
	qs := make([]*queuedMsg, len(keys))
	for i, k := range keys {
		if it := n.items[k]; it != nil && it.state == stateUnchecked {
			qs[i] = it.pending
		}
	}
	n.mu.Unlock()

	for i, k := range keys {
		if qs[i] == nil {
			continue
		}
		var synced uint64
		var err error
		// A delete may have replaced the message since it was queued.
		if qs[i].needsCheck() {
			synced, err = h.syncedRV(ctx, n.id, qs[i])
		}
		if err != nil && ctx.Err() == nil {
			// Delivering twice is harmless (the edge upserts); not at all is not.
			klog.ErrorS(err, "Cannot read ObjectSync, delivering without the check", "node", n.id, "msg", qs[i].msg.String())
		}
		n.mu.Lock()
		it := n.items[k]
		switch {
		case it == nil || it.state != stateUnchecked:
		case err != nil && ctx.Err() != nil:
			n.unchecked = append(n.unchecked, k) // shutting down: check after restart
		case err == nil && it.pending.needsCheck() && it.pending.rv <= synced:
			delete(n.items, k)
			h.metrics.dropped.WithLabelValues(reasonStale).Inc()
			klog.V(2).InfoS("Dropping downstream message: the node already has this version",
				"node", n.id, "msg", it.pending.msg.String(), "resourceVersion", it.pending.rvText, "synced", synced)
		default:
			it.state = stateReady
			n.ready = append(n.ready, k)
		}
		n.mu.Unlock()
	}
}

// finishAck releases the node's in-flight slot of an ACKed message and hands
// its ObjectSync record to the recorder.
func (h *CloudHub) finishAck(n *node) {
	n.mu.Lock()
	in := n.inflight
	acked := in != nil && in.acked
	n.mu.Unlock()
	if !acked {
		return
	}
	n.mu.Lock()
	n.release(in)
	n.mu.Unlock()
	h.limiter.Forget(n.id + "/" + in.key)
	klog.V(4).InfoS("Message ACKed", "node", n.id, "msg", in.qm.msg.String(), "attempts", in.attempts)
	if in.qm.record {
		h.records.add(n.id, in.qm, true)
	} else if h.ackHook != nil {
		h.ackHook(n.id, in.qm.msg.Header.ID)
	}
}

// sendNoAck writes the fire-and-forget queue in order, each message once.
func (h *CloudHub) sendNoAck(n *node, s *session) {
	n.mu.Lock()
	msgs := n.noack
	n.noack = nil
	n.mu.Unlock()
	for i, m := range msgs {
		if err := s.write(m); err != nil {
			klog.V(2).InfoS("Write to edge node failed, keeping unsent messages", "node", n.id, "err", err)
			n.mu.Lock()
			n.noack = append(msgs[i:len(msgs):len(msgs)], n.noack...)
			dropped := n.trimNoAck(h.opts.MaxNoAckPerNode)
			n.mu.Unlock()
			h.metrics.dropped.WithLabelValues(reasonOverflow).Add(float64(dropped))
			s.close("write failed", websocket.CloseAbnormalClosure)
			return
		}
		msgs[i] = nil
		h.metrics.sent.Inc()
	}
}

// sendAck resends the in-flight message when its ACK is overdue, gives up
// on it after the last attempt, and sends the next one when the slot is free.
func (h *CloudHub) sendAck(n *node, s *session) {
	now := time.Now()
	n.mu.Lock()
	if n.sess != s {
		n.mu.Unlock()
		return // replaced meanwhile; the new session queued the node
	}
	n.promoteDue(now)
	in := n.inflight
	var msg *model.Message
	resend := false
	switch {
	case in != nil && (in.acked || now.Before(in.deadline)):
	case in != nil && in.attempts < h.opts.AckAttempts:
		in.attempts++
		in.deadline = now.Add(h.opts.AckTimeout)
		msg, resend = in.qm.msg, true
	default:
		if in != nil && in.qm.resp {
			// A reply answers one request; once the edge has stopped waiting for it, resending it forever would
			// only hold the node's delivery slot. What the node needs keeps coming as ordinary object messages.
			n.release(in)
			h.limiter.Forget(n.id + "/" + in.key)
			h.metrics.dropped.WithLabelValues(reasonUnackedReply).Inc()
			klog.InfoS("No ACK from edge node for a reply, dropping it", "node", n.id, "msg", in.qm.msg.String(), "attempts", in.attempts)
		} else if in != nil {
			delay := h.limiter.When(n.id + "/" + in.key)
			n.requeue(in, now.Add(delay))
			klog.InfoS("No ACK from edge node, requeueing the message", "node", n.id, "msg", in.qm.msg.String(),
				"attempts", in.attempts, "retryIn", delay)
		}
		if in = n.popReady(); in != nil {
			in.attempts, in.deadline = 1, now.Add(h.opts.AckTimeout)
			n.inflight = in
			msg = in.qm.msg
		}
	}
	n.mu.Unlock()
	if msg == nil {
		return
	}
	if err := s.write(msg); err != nil {
		// The reader sees the closed connection and returns the message to
		// the queue.
		klog.V(2).InfoS("Write to edge node failed", "node", n.id, "err", err)
		s.close("write failed", websocket.CloseAbnormalClosure)
		return
	}
	h.metrics.sent.Inc()
	if resend {
		h.metrics.resent.Inc()
	}
}

// scheduleOrForget wakes the node again at its next deadline, or forgets
// it when it is offline with nothing queued.
func (h *CloudHub) scheduleOrForget(n *node) {
	n.mu.Lock()
	var next time.Time
	if n.sess != nil {
		if in := n.inflight; in != nil && !in.acked {
			next = in.deadline
		}
		for _, k := range n.backoff {
			if it := n.items[k]; it != nil && (next.IsZero() || it.retryAt.Before(next)) {
				next = it.retryAt
			}
		}
	}
	idle := n.idle()
	n.mu.Unlock()
	if idle {
		h.mu.Lock()
		n.mu.Lock()
		if n.idle() && !n.removed {
			n.removed = true
			delete(h.nodes, n.id)
		}
		n.mu.Unlock()
		h.mu.Unlock()
		return
	}
	if !next.IsZero() {
		h.queue.AddAfter(n.id, time.Until(next))
	}
}

// nodeDeleted closes the session of a node deleted from the cluster and
// drops everything queued for it.
func (h *CloudHub) nodeDeleted(id string) {
	h.mu.Lock()
	n := h.nodes[id]
	h.mu.Unlock()
	if n == nil {
		return
	}
	n.mu.Lock()
	dropped := len(n.noack) + len(n.items)
	n.noack, n.unchecked, n.ready, n.backoff = nil, nil, nil, nil
	clear(n.items)
	if n.inflight != nil && !n.inflight.acked {
		n.inflight = nil
	}
	s := n.sess
	n.mu.Unlock()
	h.metrics.dropped.WithLabelValues(reasonNodeDeleted).Add(float64(dropped))
	if s != nil {
		s.close("node deleted", websocket.ClosePolicyViolation)
	}
	h.queue.Add(id)
}

// queueLengths sums the queues of all nodes, for the metrics.
func (h *CloudHub) queueLengths() (ack, noack int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.nodes {
		n.mu.Lock()
		ack += len(n.items)
		noack += len(n.noack)
		n.mu.Unlock()
	}
	return ack, noack
}

func (h *CloudHub) connectedNodes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connected
}
