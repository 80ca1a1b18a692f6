package edgehub

import (
	"context"
	"sync"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// outbox holds upstream messages between the mailbox and the connection.
// It outlives connections, so what is taken from the mailbox while the link
// is down is sent after reconnect. It is bounded because the node may stay
// offline for days; when full the oldest message goes, because the newest
// state reports supersede older ones and the cloud re-sends its requests.
type outbox struct {
	max int

	mu    sync.Mutex
	items []model.Message
	// ready has a value whenever items may be non-empty.
	ready chan struct{}
}

func newOutbox(max int) *outbox {
	return &outbox{max: max, ready: make(chan struct{}, 1)}
}

// push appends msg and returns the message evicted to make room, if any.
func (q *outbox) push(msg model.Message) (evicted *model.Message) {
	q.mu.Lock()
	if len(q.items) >= q.max {
		old := q.items[0]
		q.items[0] = model.Message{}
		q.items = q.items[1:]
		evicted = &old
	}
	q.items = append(q.items, msg)
	q.mu.Unlock()
	q.signal()
	return evicted
}

// pushFront puts back a message whose send failed so it goes first after
// reconnect. It may exceed max by one rather than drop the oldest message
// a second time.
func (q *outbox) pushFront(msg model.Message) {
	q.mu.Lock()
	q.items = append([]model.Message{msg}, q.items...)
	q.mu.Unlock()
	q.signal()
}

// pop blocks until a message is available or ctx is done.
func (q *outbox) pop(ctx context.Context) (model.Message, error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			msg := q.items[0]
			q.items[0] = model.Message{} // let the GC have the content
			q.items = q.items[1:]
			more := len(q.items) > 0
			q.mu.Unlock()
			if more {
				q.signal()
			}
			return msg, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return model.Message{}, context.Cause(ctx)
		}
	}
}

func (q *outbox) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

func (q *outbox) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
