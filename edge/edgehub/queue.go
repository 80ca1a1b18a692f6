package edgehub

import (
	"context"
	"encoding/json"
	"strings"
	"sync"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// lane is one of the outbox's two queues. Control traffic (node status and
// registration, leases, pod status, queries, ACKs and every response) always
// goes before bulk traffic (device reports and events), so a mapper flooding
// its twin cannot delay the node's heartbeat (issue #12 item 7). The wire
// protocol does not change, only the order of frames.
type lane int

const (
	laneControl lane = iota
	laneBulk
	numLanes
)

func (l lane) String() string {
	if l == laneBulk {
		return "bulk"
	}
	return "control"
}

// laneOf classifies an upstream message. Responses are control whatever
// their source: the cloud waits for them, and an ACK held back makes the
// cloud resend.
func laneOf(msg *model.Message) lane {
	switch msg.Router.Operation {
	case model.ResponseOperation, model.ResponseErrorOperation:
		return laneControl
	}
	if msg.Router.Source == modules.DeviceTwin || msg.Router.Group == model.GroupTwin {
		return laneBulk
	}
	if e, err := resource.ParseEdge(msg.Router.Resource, msg.Router.Operation); err == nil && e.Type == resource.TypeEvent {
		return laneBulk
	}
	return laneControl
}

// coalesceKey is what makes a newer bulk message able to replace an older
// one still queued: DeviceTwin's reports of one device (twin/edge_updated,
// state/update). props are the twin properties an edge_updated carries; a
// state/update has none. ok is false for anything that may not be replaced.
//
// Replacing is lossless: DeviceTwin keeps one outbox entry per device
// property, each newer message carries the current value of every property
// it names, and the entry of a property sent again is tied to the newer
// message, so the cloud's answer to the older one would confirm nothing.
// An entry that is in no later message stays unconfirmed and DeviceTwin
// sends it again.
func coalesceKey(msg *model.Message) (key string, props []string, ok bool) {
	if msg.Router.Source != modules.DeviceTwin || msg.Router.Operation != model.UpdateOperation {
		return "", nil, false
	}
	res := msg.Router.Resource
	switch {
	case strings.HasSuffix(res, resource.Sep+resource.TypeStateUpdate):
		return res, nil, true
	case strings.HasSuffix(res, resource.Sep+resource.TypeTwinEdgeUpdated):
		data, err := msg.GetContentData()
		if err != nil {
			return "", nil, false
		}
		var upd struct {
			Twin map[string]json.RawMessage `json:"twin"`
		}
		if json.Unmarshal(data, &upd) != nil || len(upd.Twin) == 0 {
			return "", nil, false
		}
		for p := range upd.Twin {
			props = append(props, p)
		}
		return res, props, true
	}
	return "", nil, false
}

// covers reports whether every property of older is in newer.
func covers(newer, older []string) bool {
	for _, o := range older {
		found := false
		for _, n := range newer {
			if n == o {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

type item struct {
	msg   model.Message
	key   string // coalesceKey; "" when not replaceable
	props []string
}

// pushResult says what push did besides queueing.
type pushResult struct {
	lane lane
	// coalesced: msg replaced an older queued message of the same device,
	// in that message's place.
	coalesced bool
	// evicted is the oldest message of the lane, dropped to make room.
	evicted *model.Message
}

// outbox holds upstream messages between the mailbox and the connection,
// in two lanes. It outlives connections, so what is taken from the mailbox
// while the link is down is sent after reconnect. Each lane is bounded
// because the node may stay offline for days; a full lane drops its oldest
// message, because the newest state reports supersede older ones and the
// cloud re-sends its requests. The bulk lane first replaces a queued device
// report with a newer one of the same device (coalescing), so a flooding
// mapper costs one queued message per device, not one per report.
type outbox struct {
	max int // per lane

	mu    sync.Mutex
	lanes [numLanes][]*item
	// latest is the newest queued replaceable bulk item per coalesce key.
	latest map[string]*item
	// ready has a value whenever a lane may be non-empty; control has one
	// whenever control traffic may be waiting, for a writer holding back a
	// bulk message.
	ready   chan struct{}
	control chan struct{}
}

func newOutbox(max int) *outbox {
	return &outbox{max: max, latest: map[string]*item{},
		ready: make(chan struct{}, 1), control: make(chan struct{}, 1)}
}

// push queues msg in its lane.
func (q *outbox) push(msg model.Message) pushResult {
	l := laneOf(&msg)
	it := &item{msg: msg}
	if l == laneBulk {
		it.key, it.props, _ = coalesceKey(&msg)
	}
	res := pushResult{lane: l}
	q.mu.Lock()
	if old := q.latest[it.key]; it.key != "" && old != nil && covers(it.props, old.props) {
		// In place: the device keeps its turn instead of going to the back
		// every time it reports.
		old.msg, old.props = it.msg, it.props
		res.coalesced = true
		q.mu.Unlock()
		q.signal(l)
		return res
	}
	items := q.lanes[l]
	if len(items) >= q.max {
		old := items[0]
		items[0] = nil
		items = items[1:]
		q.forget(old)
		res.evicted = &old.msg
	}
	q.lanes[l] = append(items, it)
	if it.key != "" {
		q.latest[it.key] = it
	}
	q.mu.Unlock()
	q.signal(l)
	return res
}

// pushFront puts back a message that was taken but not sent, so it goes
// first in its lane. It may exceed max by one rather than drop the oldest
// message a second time. A device report put back may still be replaced by
// a newer one, unless a newer one is already queued behind it.
func (q *outbox) pushFront(msg model.Message) {
	l := laneOf(&msg)
	it := &item{msg: msg}
	if l == laneBulk {
		it.key, it.props, _ = coalesceKey(&msg)
	}
	q.mu.Lock()
	q.lanes[l] = append([]*item{it}, q.lanes[l]...)
	if it.key != "" && q.latest[it.key] == nil {
		q.latest[it.key] = it
	}
	q.mu.Unlock()
	q.signal(l)
}

// pop blocks until a message is available or ctx is done, and returns the
// oldest control message, or the oldest bulk message when there is none.
func (q *outbox) pop(ctx context.Context) (model.Message, lane, error) {
	for {
		q.mu.Lock()
		for l := range numLanes {
			items := q.lanes[l]
			if len(items) == 0 {
				continue
			}
			it := items[0]
			items[0] = nil // let the GC have the content
			q.lanes[l] = items[1:]
			q.forget(it)
			more := len(q.lanes[laneControl])+len(q.lanes[laneBulk]) > 0
			q.mu.Unlock()
			if more {
				q.signal(laneBulk)
			}
			return it.msg, l, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return model.Message{}, laneControl, context.Cause(ctx)
		}
	}
}

// forget drops it from the coalescing index; q.mu is held.
func (q *outbox) forget(it *item) {
	if it.key != "" && q.latest[it.key] == it {
		delete(q.latest, it.key)
	}
}

// controlWaiting returns a channel that has a value when control traffic
// may have arrived; hasControl tells for sure.
func (q *outbox) controlWaiting() <-chan struct{} { return q.control }

func (q *outbox) hasControl() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.lanes[laneControl]) > 0
}

func (q *outbox) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.lanes[laneControl]) + len(q.lanes[laneBulk])
}

func (q *outbox) laneLen(l lane) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.lanes[l])
}

func (q *outbox) signal(l lane) {
	select {
	case q.ready <- struct{}{}:
	default:
	}
	if l == laneControl {
		select {
		case q.control <- struct{}{}:
		default:
		}
	}
}
