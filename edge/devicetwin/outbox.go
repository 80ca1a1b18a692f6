package devicetwin

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/twin"
)

// Outbox entry kinds: a twin entry is one property of a device, a state
// entry the device's state.
const (
	kindTwin  = "twin"
	kindState = "state"
)

type outboxKey struct {
	kind, device, prop string
}

type outboxEntry struct {
	key outboxKey
	// seq orders entries and identifies one version of an entry, so a
	// confirmation never deletes a newer value written under the same key.
	seq   int64
	twin  *twin.MsgTwin // kindTwin
	state []byte        // kindState: the content JSON
	// msgID is the message the entry last went out in; empty means it
	// still has to be sent.
	msgID  string
	sentAt time.Time
	// attempts counts sends of this version; the resend interval doubles
	// with each, because a cloud that never answers some reports (v1.7's
	// DeviceController ignores state/update) must not be flooded.
	attempts int
}

// maxResendInterval caps the doubling of the resend interval.
const maxResendInterval = 30 * time.Minute

func (o *outbox) overdue(e *outboxEntry, now time.Time) bool {
	if e.msgID == "" {
		return true
	}
	wait := o.resend
	for i := 1; i < e.attempts && wait < maxResendInterval; i++ {
		wait *= 2
	}
	return now.Sub(e.sentAt) >= min(wait, maxResendInterval)
}

// outbox holds the reports the cloud has not confirmed yet (spec §14.4,
// made reliable): one entry per device property or device state, so a
// node offline for a week sends one message per device, not a week of
// ticks. Entries are persisted with the twin change that caused them and
// deleted only when the cloud answers the message that carried them.
//
// The module's loop owns the payloads and the database rows; the sender
// goroutine only marks entries as sent, so the loop never waits for the
// cloud.
type outbox struct {
	bus       *beehive.Bus
	db        *sql.DB
	connected *atomic.Bool
	resend    time.Duration

	kick chan struct{}

	mu      sync.Mutex
	entries map[outboxKey]*outboxEntry
	nextSeq int64 // used by the loop only
}

func newOutbox(bus *beehive.Bus, db *sql.DB, connected *atomic.Bool, resend time.Duration) *outbox {
	return &outbox{bus: bus, db: db, connected: connected, resend: resend,
		kick: make(chan struct{}, 1), entries: map[outboxKey]*outboxEntry{}, nextSeq: 1}
}

func (o *outbox) load(ctx context.Context) error {
	rows, err := o.db.QueryContext(ctx, `SELECT kind, device, prop, seq, payload FROM tether_twin_outbox`)
	if err != nil {
		return fmt.Errorf("load twin outbox: %w", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		e := &outboxEntry{}
		var payload string
		if err := rows.Scan(&e.key.kind, &e.key.device, &e.key.prop, &e.seq, &payload); err != nil {
			return fmt.Errorf("load twin outbox: %w", err)
		}
		o.nextSeq = max(o.nextSeq, e.seq+1)
		switch e.key.kind {
		case kindTwin:
			if err := json.Unmarshal([]byte(payload), &e.twin); err != nil || e.twin == nil {
				klog.InfoS("Dropping unparsable twin outbox entry", "device", e.key.device, "twin", e.key.prop, "err", err)
				continue
			}
		case kindState:
			if !json.Valid([]byte(payload)) {
				klog.InfoS("Dropping unparsable state outbox entry", "device", e.key.device)
				continue
			}
			e.state = []byte(payload)
		default:
			klog.InfoS("Dropping twin outbox entry of unknown kind", "kind", e.key.kind, "device", e.key.device)
			continue
		}
		o.entries[e.key] = e
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load twin outbox: %w", err)
	}
	if n := len(o.entries); n > 0 {
		klog.InfoS("Loaded unconfirmed reports for the cloud", "count", n)
	}
	return nil
}

// prepareTwins returns the entries that replace the pending ones for twins of
// device, merged with what is still unconfirmed. It changes no entry.
func (o *outbox) prepareTwins(deviceID string, twins map[string]*twin.MsgTwin) []*outboxEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]*outboxEntry, 0, len(twins))
	for _, prop := range slices.Sorted(maps.Keys(twins)) {
		k := outboxKey{kindTwin, deviceID, prop}
		var older *twin.MsgTwin
		if e := o.entries[k]; e != nil {
			older = e.twin
		}
		out = append(out, &outboxEntry{key: k, seq: o.nextSeq, twin: mergeCloud(older, twins[prop])})
		o.nextSeq++
	}
	return out
}

func (o *outbox) prepareState(deviceID string, content []byte) *outboxEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := &outboxEntry{key: outboxKey{kindState, deviceID, ""}, seq: o.nextSeq, state: content}
	o.nextSeq++
	return e
}

// write persists prepared entries inside the caller's transaction.
func (o *outbox) write(ctx context.Context, tx *sql.Tx, entries []*outboxEntry) error {
	for _, e := range entries {
		payload := e.state
		if e.key.kind == kindTwin {
			var err error
			if payload, err = json.Marshal(e.twin); err != nil {
				return fmt.Errorf("queue report for device %q: %w", e.key.device, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO tether_twin_outbox (kind, device, prop, seq, payload)
			VALUES (?, ?, ?, ?, ?)`, e.key.kind, e.key.device, e.key.prop, e.seq, string(payload)); err != nil {
			return fmt.Errorf("queue %s report for device %q: %w", e.key.kind, e.key.device, err)
		}
	}
	return nil
}

// commit makes written entries pending, replacing older versions even if
// they are in flight: their confirmation must not retire the newer value.
func (o *outbox) commit(entries []*outboxEntry) {
	if len(entries) == 0 {
		return
	}
	o.mu.Lock()
	for _, e := range entries {
		o.entries[e.key] = e
	}
	o.mu.Unlock()
	o.signal()
}

// forgetDevice drops the entries of a removed device; its rows went with
// the device in the same transaction.
func (o *outbox) forgetDevice(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.entries {
		if k.device == id {
			delete(o.entries, k)
		}
	}
}

// confirm retires the entries carried by message id. It reports whether id
// was one of ours.
func (o *outbox) confirm(ctx context.Context, id string) (bool, error) {
	o.mu.Lock()
	var done []*outboxEntry
	for _, e := range o.entries {
		if e.msgID == id {
			done = append(done, e)
		}
	}
	o.mu.Unlock()
	if len(done) == 0 {
		return false, nil
	}
	err := withTx(ctx, o.db, func(tx *sql.Tx) error {
		for _, e := range done {
			if _, err := tx.ExecContext(ctx, `DELETE FROM tether_twin_outbox WHERE kind = ? AND device = ? AND prop = ? AND seq = ?`,
				e.key.kind, e.key.device, e.key.prop, e.seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Kept: the entry is sent again, which the cloud tolerates.
		return true, fmt.Errorf("retire reports confirmed by message %s: %w", id, err)
	}
	o.mu.Lock()
	for _, e := range done {
		if o.entries[e.key] == e {
			delete(o.entries, e.key)
		}
	}
	o.mu.Unlock()
	return true, nil
}

// requeue marks everything in flight as unsent, for when the link went
// down under it.
func (o *outbox) requeue() {
	o.mu.Lock()
	for _, e := range o.entries {
		e.msgID = ""
	}
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// run sends pending entries whenever the cloud is reachable, and resends
// those the cloud has not confirmed within the resend interval.
func (o *outbox) run(ctx context.Context) {
	tick := time.NewTicker(max(o.resend/2, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
		case <-tick.C:
		}
		o.flush(ctx)
	}
}

func (o *outbox) flush(ctx context.Context) {
	if !o.connected.Load() {
		return
	}
	msgs := o.take(time.Now())
	for i, m := range msgs {
		err := o.bus.SendToGroup(ctx, modules.EdgeHubGroup, m.msg)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, beehive.ErrUnknownGroup) && !errors.Is(err, beehive.ErrStopped) {
			klog.ErrorS(err, "Cannot hand report to EdgeHub; will retry", "message", m.msg.String())
		}
		// Unsent messages go back to pending; the next tick retries.
		for _, rest := range msgs[i:] {
			o.unmark(rest)
		}
		return
	}
}

type outgoing struct {
	msg     model.Message
	entries []*outboxEntry
}

// take builds the messages for unsent and overdue entries, oldest first,
// one edge_updated per device, and marks their entries as in flight.
func (o *outbox) take(now time.Time) []outgoing {
	o.mu.Lock()
	defer o.mu.Unlock()
	var due []*outboxEntry
	for _, e := range o.entries {
		if o.overdue(e, now) {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *outboxEntry) int { return cmp.Compare(a.seq, b.seq) })

	var out []outgoing
	byDevice := map[string]int{} // device -> index in out of its edge_updated
	for _, e := range due {
		if e.key.kind == kindState {
			m, err := stateMessage(e.key.device, e.state)
			if err != nil {
				klog.ErrorS(err, "Cannot build state report", "device", e.key.device)
				continue
			}
			e.msgID, e.sentAt = m.Header.ID, now
			e.attempts++
			out = append(out, outgoing{msg: m, entries: []*outboxEntry{e}})
			continue
		}
		i, ok := byDevice[e.key.device]
		if !ok {
			i = len(out)
			byDevice[e.key.device] = i
			out = append(out, outgoing{msg: *model.NewMessage("")})
		}
		e.msgID, e.sentAt = out[i].msg.Header.ID, now
		e.attempts++
		out[i].entries = append(out[i].entries, e)
	}
	ready := out[:0]
	for _, og := range out {
		if og.entries[0].key.kind == kindTwin {
			if err := fillEdgeUpdated(&og, now); err != nil {
				klog.ErrorS(err, "Cannot build twin report", "device", og.entries[0].key.device)
				continue
			}
		}
		ready = append(ready, og)
	}
	return ready
}

func (o *outbox) unmark(m outgoing) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range m.entries {
		if e.msgID == m.msg.Header.ID {
			e.msgID = ""
		}
	}
}

// fillEdgeUpdated turns og into device/{id}/twin/edge_updated carrying its
// entries.
func fillEdgeUpdated(og *outgoing, now time.Time) error {
	devID := og.entries[0].key.device
	twins := make(map[string]*twin.MsgTwin, len(og.entries))
	for _, e := range og.entries {
		twins[e.key.prop] = e.twin
	}
	content, err := json.Marshal(twin.DeviceTwinUpdate{
		BaseMessage: twin.BaseMessage{EventID: og.msg.Header.ID, Timestamp: now.UnixMilli()},
		Twin:        twins,
	})
	if err != nil {
		return fmt.Errorf("encode edge_updated of device %q: %w", devID, err)
	}
	og.msg.BuildRouter(modules.DeviceTwin, modules.TwinGroup,
		resource.TypeDevice+resource.Sep+devID+resource.Sep+resource.TypeTwinEdgeUpdated, model.UpdateOperation).
		FillBody(json.RawMessage(content))
	return nil
}

// stateMessage is device/{id}/state/update; KubeEdge sends its content as
// a JSON string, and so do we.
func stateMessage(devID string, content []byte) (model.Message, error) {
	if !json.Valid(content) {
		return model.Message{}, fmt.Errorf("state report of device %q is not JSON", devID)
	}
	return *model.NewMessage("").
		BuildRouter(modules.DeviceTwin, modules.TwinGroup,
			resource.TypeDevice+resource.Sep+devID+resource.Sep+resource.TypeStateUpdate, model.UpdateOperation).
		FillBody(string(content)), nil
}
