package mapper

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"
)

// Mapper turns twin messages from edgecore into counter commands.
//
// Unlike the original demo it never panics on a message: anything it cannot use is logged and dropped. It
// learns the desired value from /twin/get/result (asked at start and after every reconnect, so a restarted
// mapper resumes what the twin wants) and from /twin/update/delta (every change of the desired value, and
// every report while desired and actual differ, which is always the case for a counter).
type Mapper struct {
	property string
	counter  *Counter

	// synced is set once a get/result or a delta told the desired value since the last (re)connect.
	synced atomic.Bool

	mu         sync.Mutex
	lastReport string // last /twin/update/result outcome, to log changes only
}

// New returns a mapper driving counter from the twin property.
func New(property string, counter *Counter) *Mapper {
	return &Mapper{property: property, counter: counter}
}

// Synced reports whether the desired value is known since the last Unsync.
func (m *Mapper) Synced() bool { return m.synced.Load() }

// Unsync forgets that the desired value is known: call it on (re)connecting, before asking /twin/get.
func (m *Mapper) Unsync() { m.synced.Store(false) }

// HandleGetResult applies a /twin/get/result: the twin's whole state. When it says ON and the counter is
// idle (the mapper was restarted while counting), counting resumes after the last reported count; when it
// says OFF but a count is still reported, "0" is published.
func (m *Mapper) HandleGetResult(payload []byte) {
	m.apply("get/result", payload, true)
}

// HandleDelta applies a /twin/update/delta. A change to ON counts from 1, as in the tutorial.
func (m *Mapper) HandleDelta(payload []byte) {
	m.apply("delta", payload, false)
}

func (m *Mapper) apply(source string, payload []byte, resume bool) {
	st, err := parseState(payload, m.property)
	if err != nil {
		var reply *errorReply
		switch {
		case errors.As(err, &reply) && reply.code == 404:
			klog.InfoS("Device unknown to edgecore yet (is the Device bound to this node?); will ask again",
				"source", source, "reason", reply.reason)
		case errors.Is(err, errNoTwin):
			klog.V(2).InfoS("Ignoring message without a desired value", "source", source, "property", m.property)
		default:
			klog.InfoS("Ignoring message", "source", source, "err", err, "payload", truncate(payload))
		}
		return
	}
	switch st.desired {
	case On:
		m.synced.Store(true)
		var from int64
		if resume {
			if n, err := strconv.ParseInt(st.actual, 10, 64); err == nil && n > 0 {
				from = n
			}
		}
		if m.counter.TurnOn(from) {
			klog.InfoS("Turn on counter", "source", source, "from", from+1)
		}
	case Off:
		m.synced.Store(true)
		if m.counter.TurnOff() {
			klog.InfoS("Turn off counter", "source", source)
		} else if st.actual != "" && st.actual != "0" && m.counter.Reset() {
			klog.InfoS("Counter is off; reset the stale count", "source", source, "count", st.actual)
		}
	default:
		klog.InfoS("Ignoring unknown desired value; want ON or OFF", "source", source, "desired", st.desired)
	}
}

// HandleUpdateResult logs when edgecore starts or stops rejecting the mapper's reports.
func (m *Mapper) HandleUpdateResult(payload []byte) {
	outcome := "ok"
	_, err := decode(payload)
	if err != nil {
		outcome = err.Error()
	}
	m.mu.Lock()
	changed := outcome != m.lastReport
	m.lastReport = outcome
	m.mu.Unlock()
	if !changed {
		return
	}
	if err != nil {
		klog.InfoS("edgecore rejects the counter's reports", "err", err)
	} else {
		klog.V(1).InfoS("edgecore accepts the counter's reports")
	}
}

func truncate(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
