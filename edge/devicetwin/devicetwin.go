// Package devicetwin is edgecore's DeviceTwin (spec §14): it keeps the
// devices bound to this node and their twins in SQLite, answers mappers and
// apps over MQTT (through EventBus), applies the cloud's membership and
// desired values, and reports actual values and device state to the cloud.
//
// Device ids are KubeEdge v1.7's: the device name, so topics read
// $hw/events/device/{name}/...; v1.23's {namespace}/{name} ids work too.
//
// Unlike KubeEdge, reports to the cloud are not dropped while the node is
// offline: they wait in a persistent outbox, coalesced per property, until
// the cloud confirms them.
package devicetwin

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/twin"
)

// DefaultResendInterval is how long a report may stay unconfirmed before it
// is sent again, as in KubeEdge.
const DefaultResendInterval = 60 * time.Second

// MQTT topic parts (spec §13).
const (
	topicPrefix       = "$hw/events/"
	deviceTopicPrefix = "$hw/events/device/"
	nodeTopicPrefix   = "$hw/events/node/"

	suffixTwinUpdate         = "/twin/update"
	suffixTwinUpdateResult   = "/twin/update/result"
	suffixTwinUpdateDocument = "/twin/update/document"
	suffixTwinUpdateDelta    = "/twin/update/delta"
	suffixTwinGet            = "/twin/get"
	suffixTwinGetResult      = "/twin/get/result"
	suffixStateUpdate        = "/state/update"
	suffixStateUpdateResult  = "/state/update/result"
	suffixMembershipGet      = "/membership/get"
	suffixMembershipGetRes   = "/membership/get/result"
	suffixMembershipUpdated  = "/membership/updated"
)

// DeviceTwin is the beehive module "twin" in group "twin".
type DeviceTwin struct {
	bus      *beehive.Bus
	enabled  bool
	dbPath   string
	nodeName string
	resend   time.Duration

	// connected is the link state last announced by EdgeHub. It outlives
	// Start, so a restarted module does not wait for the next event.
	connected atomic.Bool

	// committed, if set, learns the size of each batch of reports committed
	// together (tests).
	committed func(reports int)
}

// New returns DeviceTwin for bus, keeping its tables in the SQLite file
// dbPath (database.dataSource, shared with MetaManager). The database is
// opened by Start. A nil cfg means enabled.
func New(bus *beehive.Bus, cfg *v1alpha2.DeviceTwin, dbPath string, nodeName string) (*DeviceTwin, error) {
	switch {
	case bus == nil:
		return nil, errors.New("new devicetwin: nil bus")
	case dbPath == "":
		return nil, errors.New("new devicetwin: empty database path")
	}
	// The node name is one MQTT topic level and one resource segment.
	if nodeName == "" || strings.ContainsAny(nodeName, "/+#$ \t\r\n\x00") {
		return nil, fmt.Errorf("new devicetwin: invalid node name %q", nodeName)
	}
	return &DeviceTwin{
		bus:      bus,
		enabled:  cfg == nil || cfg.Enable,
		dbPath:   dbPath,
		nodeName: nodeName,
		resend:   DefaultResendInterval,
	}, nil
}

// Name implements beehive.Module.
func (d *DeviceTwin) Name() string { return modules.DeviceTwin }

// Group implements beehive.Module.
func (d *DeviceTwin) Group() string { return modules.TwinGroup }

// Enable implements beehive.Module.
func (d *DeviceTwin) Enable() bool { return d.enabled }

// RestartPolicy implements beehive.Restartable: a database that cannot be
// opened now (a full disk, a lock held too long) may be fine later.
func (d *DeviceTwin) RestartPolicy() *beehive.RestartPolicy {
	return &beehive.RestartPolicy{Type: beehive.RestartOnFailure, GrowthRate: 2}
}

// maxBatch bounds the mapper reports one commit carries (see run.batch).
const maxBatch = 64

// run is the state of one Start: the database, the cache loaded from it,
// and the outbox. Only Start's goroutine touches devices.
type run struct {
	*DeviceTwin
	db      *sql.DB
	devices map[string]*device
	outbox  *outbox

	// Group commit. Every commit is durable (an fsync; see pkg/sqlitedb), and
	// mappers publish reports without waiting for answers, so consecutive
	// twin/update reports share one transaction: each report runs in a
	// savepoint of batch, updates the cache and the outbox at once (later
	// reports build on it), and its MQTT answers wait in deferred until the
	// commit, which comes when no message is waiting, after maxBatch
	// reports, or before any other message. batching is set while a report is
	// handled.
	batch    *sql.Tx
	batching bool
	deferred []func()
	// failed answer the batched reports with an error if the commit fails.
	failed  []func(error)
	batched int
}

// Start opens the database, loads the cache, then processes messages one
// at a time until ctx is done or the bus stops.
func (d *DeviceTwin) Start(ctx context.Context) error {
	db, err := openDB(ctx, d.dbPath)
	if err != nil {
		return fmt.Errorf("devicetwin: %w", err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			klog.ErrorS(err, "Cannot close twin database", "file", d.dbPath)
		}
	}()
	devices, err := loadDevices(ctx, db)
	if err != nil {
		return fmt.Errorf("devicetwin: %w", err)
	}
	ob := newOutbox(d.bus, db, &d.connected, d.resend)
	if err := ob.load(ctx); err != nil {
		return fmt.Errorf("devicetwin: %w", err)
	}
	klog.InfoS("DeviceTwin started", "devices", len(devices), "pendingReports", ob.len(), "node", d.nodeName)
	r := &run{DeviceTwin: d, db: db, devices: devices, outbox: ob}

	sendCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { ob.run(sendCtx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	ob.signal()

	return r.serve(ctx)
}

// serve is bus.Serve with group commit of mapper reports (see run.batch).
func (r *run) serve(ctx context.Context) error {
	// What the cache and the outbox already show must be committed, even at shutdown.
	defer func() {
		if err := r.commitBatch(); err != nil {
			klog.ErrorS(err, "Cannot store twin updates at shutdown")
		}
	}()
	for {
		msg, err := r.bus.Receive(ctx, r.Name())
		switch {
		case err == nil:
		case ctx.Err() != nil, errors.Is(err, beehive.ErrStopped):
			return nil
		default:
			return fmt.Errorf("serving %s: %w", r.Name(), err)
		}
		r.batching = isTwinUpdate(msg)
		if !r.batching {
			if err := r.commitBatch(); err != nil {
				return err
			}
		}
		r.handle(ctx, msg)
		r.batching = false
		if r.batch != nil && (r.batched >= maxBatch || r.bus.Pending(r.Name()) == 0) {
			if err := r.commitBatch(); err != nil {
				return err
			}
		}
	}
}

// isTwinUpdate reports whether msg is a mapper's or app's twin/update.
func isTwinUpdate(msg model.Message) bool {
	topic, ok := mqttTopic(msg.Router.Resource)
	return ok && strings.HasPrefix(topic, deviceTopicPrefix) && strings.HasSuffix(topic, suffixTwinUpdate)
}

// commitBatch commits the open batch, then sends the answers it held back.
// If the commit fails, the batched reports are answered with the error and
// the error is returned: the cache and the outbox show the lost reports, so
// the module must restart and reload them from the database.
func (r *run) commitBatch() error {
	if r.batch == nil {
		return nil
	}
	tx, deferred, failed, n := r.batch, r.deferred, r.failed, r.batched
	r.batch, r.deferred, r.failed, r.batched = nil, nil, nil, 0
	if r.committed != nil {
		r.committed(n)
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("commit %d twin reports: %w", len(failed), err)
		for _, f := range failed {
			f(err)
		}
		return err
	}
	for _, f := range deferred {
		f()
	}
	return nil
}

// inBatch runs fn in a savepoint of the open batch (opening one), so a
// report that fails leaves the others of the batch alone.
func (r *run) inBatch(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	if r.batch == nil {
		// Not tied to ctx: database/sql would roll it back on cancellation,
		// after the cache had been updated.
		tx, err := r.db.BeginTx(context.WithoutCancel(ctx), nil)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		r.batch = tx
	}
	bctx := context.WithoutCancel(ctx)
	if _, err := r.batch.ExecContext(bctx, `SAVEPOINT report`); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			// Also on a panic: the report's writes must not be committed with the others.
			_, rbErr := r.batch.ExecContext(bctx, `ROLLBACK TO report`)
			_, relErr := r.batch.ExecContext(bctx, `RELEASE report`)
			if e := errors.Join(rbErr, relErr); e != nil {
				err = errors.Join(err, e)
			}
		}
	}()
	if err := fn(r.batch); err != nil {
		return err
	}
	if _, err := r.batch.ExecContext(bctx, `RELEASE report`); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	ok = true
	r.batched++
	return nil
}

// handle turns a panic into a log line: one bad message must not stop the
// module.
func (r *run) handle(ctx context.Context, msg model.Message) {
	defer func() {
		if p := recover(); p != nil {
			klog.ErrorS(nil, "Recovered panic while processing message", "message", msg.String(),
				"panic", p, "stack", string(debug.Stack()))
		}
	}()
	klog.V(4).InfoS("Processing message", "message", msg.String())
	switch {
	case msg.Router.Resource == model.ResourceNodeConnection && msg.Router.Operation == model.ConnectOperation:
		r.connection(msg)
	case msg.Header.ParentID != "":
		r.confirm(ctx, msg)
	default:
		if topic, ok := mqttTopic(msg.Router.Resource); ok {
			r.mqtt(ctx, topic, msg)
			return
		}
		r.cloud(ctx, msg)
	}
}

func (r *run) connection(msg model.Message) {
	switch msg.Content {
	case model.ContentCloudConnected:
		r.connected.Store(true)
		// What was in flight when the link dropped may never have arrived.
		r.outbox.requeue()
	case model.ContentCloudDisconnected:
		r.connected.Store(false)
	default:
		klog.InfoS("Ignoring connection event with unknown content", "message", msg.String(), "content", msg.Content)
	}
}

// confirm handles the cloud's answer to a report. Any answer retires it,
// as in KubeEdge: resending what the cloud refused would not change its mind.
func (r *run) confirm(ctx context.Context, msg model.Message) {
	ours, err := r.outbox.confirm(ctx, msg.Header.ParentID)
	switch {
	case err != nil && ctx.Err() == nil:
		klog.ErrorS(err, "Cannot retire confirmed report", "message", msg.String())
	case err != nil:
	case !ours:
		klog.V(4).InfoS("Ignoring response to no pending report", "message", msg.String())
	case msg.Router.Operation == model.ResponseErrorOperation:
		klog.InfoS("Cloud refused a report", "message", msg.String(), "content", msg.Content)
	}
}

// mqttTopic decodes EventBus's resource, the base64-URL topic (spec §21.10).
func mqttTopic(res string) (string, bool) {
	for _, enc := range []*base64.Encoding{base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(res); err == nil && strings.HasPrefix(string(b), topicPrefix) {
			return string(b), true
		}
	}
	return "", false
}

func (r *run) mqtt(ctx context.Context, topic string, msg model.Message) {
	payload, err := msg.GetContentData()
	if err != nil {
		klog.InfoS("Ignoring MQTT message with unreadable content", "topic", topic, "err", err)
		return
	}
	if rest, ok := strings.CutPrefix(topic, deviceTopicPrefix); ok {
		for _, h := range []struct {
			suffix string
			fn     func(context.Context, string, []byte)
		}{
			{suffixTwinUpdate, r.twinUpdate},
			{suffixTwinGet, r.twinGet},
			{suffixStateUpdate, r.stateUpdate},
		} {
			id, ok := strings.CutSuffix(rest, h.suffix)
			if !ok {
				continue
			}
			// An id we cannot build an answer topic from gets a log line.
			if err := validateDeviceID(id); err != nil {
				klog.InfoS("Ignoring MQTT message for an invalid device id", "topic", topic, "err", err)
				return
			}
			h.fn(ctx, id, payload)
			return
		}
	}
	if rest, ok := strings.CutPrefix(topic, nodeTopicPrefix); ok {
		if node, ok := strings.CutSuffix(rest, suffixMembershipGet); ok {
			r.membershipGet(ctx, node, payload)
			return
		}
	}
	// Lifecycle topics and state/get have no handler, as in KubeEdge.
	// twin/cloud_updated over MQTT (KubeEdge accepts it) is refused: any
	// local client could claim a huge cloud version and so lock the cloud
	// out of the twin for good.
	klog.V(2).InfoS("Ignoring MQTT message on unhandled topic", "topic", topic)
}

// cloud handles messages from the cloud's DeviceController.
func (r *run) cloud(ctx context.Context, msg model.Message) {
	res := msg.Router.Resource
	if strings.HasPrefix(res, resource.NodePrefix+resource.Sep) {
		// CloudHub strips the node; tolerate peers that do not.
		if _, wire, err := resource.StripNodePrefix(res); err == nil {
			res = wire
		}
	}
	switch {
	case res == resource.TypeMembership:
		r.membership(ctx, msg)
		return
	case res == resource.TypeMembershipDetail:
		r.membershipDetail(ctx, msg)
		return
	case strings.HasPrefix(res, resource.TypeDevice+resource.Sep):
		d, err := resource.ParseDevice(res)
		if err == nil && d.Sub == resource.TypeTwinCloudUpdated {
			content, err := contentJSON(msg)
			if err != nil {
				klog.InfoS("Ignoring cloud twin update with unreadable content", "message", msg.String(), "err", err)
				return
			}
			if err := validateDeviceID(d.ID()); err != nil {
				klog.InfoS("Ignoring cloud twin update", "message", msg.String(), "err", err)
				return
			}
			r.cloudSync(ctx, d.ID(), content)
			return
		}
	}
	// v1beta1 Device objects relayed by MetaManager and the like are not
	// part of the v1.7 protocol we speak.
	klog.V(2).InfoS("Ignoring message", "message", msg.String())
}

// contentJSON returns the JSON of a cloud message's content, undoing the
// base64 a Go []byte content gets on the wire.
func contentJSON(msg model.Message) ([]byte, error) {
	var raw json.RawMessage
	if err := msg.UnmarshalContent(&raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func nowMs() int64 { return time.Now().UnixMilli() }

func (r *run) publish(ctx context.Context, topic string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		klog.ErrorS(err, "Cannot encode MQTT payload", "topic", topic)
		return
	}
	if r.batch != nil {
		// After the reports before it are committed, and in order.
		r.deferred = append(r.deferred, func() { r.send(ctx, topic, data) })
		return
	}
	r.send(ctx, topic, data)
}

func (r *run) send(ctx context.Context, topic string, data []byte) {
	msg := model.NewMessage("").
		BuildRouter(modules.DeviceTwin, modules.BusGroup, topic, model.PublishOperation).
		FillBody(string(data))
	switch err := r.bus.Send(ctx, modules.EventBus, *msg); {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, beehive.ErrUnknownModule):
		klog.V(2).InfoS("EventBus is not running; not publishing", "topic", topic)
	default:
		klog.ErrorS(err, "Cannot publish", "topic", topic)
	}
}

// errorPayload is the JSON of an error answer.
func errorPayload(eventID string, code int, err error) []byte {
	data, _ := json.Marshal(ErrorResult{BaseMessage: twin.BaseMessage{EventID: eventID, Timestamp: nowMs()},
		Code: code, Reason: err.Error()})
	return data
}

func (r *run) publishError(ctx context.Context, topic, eventID string, code int, err error) {
	klog.V(2).InfoS("Answering request with an error", "topic", topic, "code", code, "err", err)
	r.publish(ctx, topic, ErrorResult{BaseMessage: twin.BaseMessage{EventID: eventID, Timestamp: nowMs()},
		Code: code, Reason: err.Error()})
}

func errUnknownDevice(id string) error { return fmt.Errorf("device %q does not exist", id) }

// twinUpdate handles $hw/events/device/{id}/twin/update from a mapper or app.
func (r *run) twinUpdate(ctx context.Context, id string, payload []byte) {
	topic := deviceTopicPrefix + id + suffixTwinUpdateResult
	var req twin.DeviceTwinUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		r.publishError(ctx, topic, "", CodeBadRequest, fmt.Errorf("malformed twin update: %w", err))
		return
	}
	dev := r.devices[id]
	if dev == nil {
		r.publishError(ctx, topic, req.EventID, CodeNotFound, errUnknownDevice(id))
		return
	}
	if req.Twin == nil {
		r.publishError(ctx, topic, req.EventID, CodeBadRequest, errors.New("twin update has no twin"))
		return
	}
	out, err := applyTwins(id, dev.Twins, req.Twin, dealREST, nowMs())
	if err != nil {
		r.publishError(ctx, topic, req.EventID, CodeBadRequest, err)
		return
	}
	if err := r.saveTwins(ctx, dev, out); err != nil {
		klog.ErrorS(err, "Cannot store twin update", "device", id)
		r.publishError(ctx, topic, req.EventID, CodeInternal, err)
		return
	}
	if r.batch != nil {
		r.failed = append(r.failed, func(err error) {
			r.send(ctx, topic, errorPayload(req.EventID, CodeInternal, err))
		})
	}
	r.publish(ctx, topic, twin.DeviceTwinUpdate{BaseMessage: twin.BaseMessage{EventID: req.EventID, Timestamp: nowMs()}, Twin: out.result})
	r.publishChanges(ctx, dev, req.EventID, out)
}

// cloudSync applies desired values from the cloud (twin/cloud_updated).
func (r *run) cloudSync(ctx context.Context, id string, payload []byte) {
	var req twin.DeviceTwinUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		klog.InfoS("Ignoring malformed cloud twin update", "device", id, "err", err)
		return
	}
	dev := r.devices[id]
	if dev == nil {
		klog.InfoS("Ignoring cloud twin update for unknown device", "device", id)
		return
	}
	out, _ := applyTwins(id, dev.Twins, req.Twin, dealSync, nowMs())
	if out.empty() {
		return
	}
	if err := r.saveTwins(ctx, dev, out); err != nil {
		// The cloud does not resend; its next change or a restart of the
		// device controller brings the value again.
		klog.ErrorS(err, "Cannot store cloud twin update", "device", id)
		return
	}
	r.publishChanges(ctx, dev, req.EventID, out)
}

// saveTwins writes out's twins and cloud reports in one transaction, then
// updates the cache.
func (r *run) saveTwins(ctx context.Context, dev *device, out *twinOutcome) error {
	entries := r.outbox.prepareTwins(dev.ID, out.toCloud)
	write := func(tx *sql.Tx) error {
		for _, k := range slices.Sorted(maps.Keys(out.changed)) {
			if err := writeTwin(ctx, tx, dev.ID, k, out.changed[k], out.inserted[k]); err != nil {
				return err
			}
		}
		return r.outbox.write(ctx, tx, entries)
	}
	var err error
	if r.batching {
		// Committed with the batch; the outbox may send the entries before that, which at worst tells the cloud
		// a value the edge then loses in a power failure.
		err = r.inBatch(ctx, write)
	} else {
		err = withTx(ctx, r.db, write)
	}
	if err != nil {
		return fmt.Errorf("store twins of device %q: %w", dev.ID, err)
	}
	maps.Copy(dev.Twins, out.changed)
	r.outbox.commit(entries)
	return nil
}

// publishChanges tells apps what changed: the document, then the delta.
func (r *run) publishChanges(ctx context.Context, dev *device, eventID string, out *twinOutcome) {
	if len(out.document) == 0 {
		return
	}
	r.publish(ctx, deviceTopicPrefix+dev.ID+suffixTwinUpdateDocument,
		DeviceTwinDocument{BaseMessage: twin.BaseMessage{EventID: eventID, Timestamp: nowMs()}, Twin: out.document})
	all, d := delta(dev.Twins)
	if len(d) == 0 {
		return
	}
	r.publish(ctx, deviceTopicPrefix+dev.ID+suffixTwinUpdateDelta,
		DeviceTwinDelta{BaseMessage: twin.BaseMessage{EventID: uuid.NewString(), Timestamp: nowMs()}, Twin: all, Delta: d})
}

// readRequest decodes an optional {"event_id","timestamp"} payload.
func readRequest(payload []byte) (twin.BaseMessage, error) {
	var req twin.BaseMessage
	if len(bytes.TrimSpace(payload)) == 0 {
		return req, nil
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	return req, nil
}

// twinGet handles $hw/events/device/{id}/twin/get.
func (r *run) twinGet(ctx context.Context, id string, payload []byte) {
	topic := deviceTopicPrefix + id + suffixTwinGetResult
	req, err := readRequest(payload)
	if err != nil {
		r.publishError(ctx, topic, "", CodeBadRequest, err)
		return
	}
	dev := r.devices[id]
	if dev == nil {
		r.publishError(ctx, topic, req.EventID, CodeNotFound, errUnknownDevice(id))
		return
	}
	r.publish(ctx, topic, twin.DeviceTwinUpdate{BaseMessage: twin.BaseMessage{EventID: req.EventID, Timestamp: nowMs()},
		Twin: liveTwins(dev.Twins)})
}

func liveTwins(twins map[string]twinRow) map[string]*twin.MsgTwin {
	out := map[string]*twin.MsgTwin{}
	for k, t := range twins {
		if !t.deleted() {
			out[k] = t.msg(false)
		}
	}
	return out
}

// stateUpdate handles $hw/events/device/{id}/state/update.
func (r *run) stateUpdate(ctx context.Context, id string, payload []byte) {
	topic := deviceTopicPrefix + id + suffixStateUpdateResult
	var req DeviceStateUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		r.publishError(ctx, topic, "", CodeBadRequest, fmt.Errorf("malformed state update: %w", err))
		return
	}
	dev := r.devices[id]
	if dev == nil {
		r.publishError(ctx, topic, req.EventID, CodeNotFound, errUnknownDevice(id))
		return
	}
	state := strings.ToLower(req.State)
	online, ok := deviceStates[state]
	if !ok {
		r.publishError(ctx, topic, req.EventID, CodeBadRequest,
			fmt.Errorf("invalid state %q: want online, offline, ok, unknown or unhealthy", req.State))
		return
	}
	now := time.Now()
	lastOnline := dev.LastOnline
	if online {
		lastOnline = now.UTC().Format(time.RFC3339)
	}
	result := twin.DeviceStateResult{BaseMessage: twin.BaseMessage{EventID: req.EventID, Timestamp: now.UnixMilli()},
		Device: twin.DeviceState{Name: dev.Name, State: state, LastOnline: lastOnline}}
	content, err := json.Marshal(result)
	if err != nil {
		r.publishError(ctx, topic, req.EventID, CodeInternal, err)
		return
	}
	entry := r.outbox.prepareState(id, content)
	err = withTx(ctx, r.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE device SET state = ?, last_online = ? WHERE id = ?`,
			state, lastOnline, id); err != nil {
			return fmt.Errorf("store state of device %q: %w", id, err)
		}
		return r.outbox.write(ctx, tx, []*outboxEntry{entry})
	})
	if err != nil {
		klog.ErrorS(err, "Cannot store device state", "device", id)
		r.publishError(ctx, topic, req.EventID, CodeInternal, err)
		return
	}
	dev.State, dev.LastOnline = state, lastOnline
	r.outbox.commit([]*outboxEntry{entry})
	r.publish(ctx, topic, result)
}

// membershipGet handles $hw/events/node/{node}/membership/get.
func (r *run) membershipGet(ctx context.Context, node string, payload []byte) {
	if node != r.nodeName {
		klog.V(2).InfoS("Ignoring membership request for another node", "node", node)
		return
	}
	topic := nodeTopicPrefix + node + suffixMembershipGetRes
	req, err := readRequest(payload)
	if err != nil {
		r.publishError(ctx, topic, "", CodeBadRequest, err)
		return
	}
	devs := make([]twin.Device, 0, len(r.devices))
	for _, id := range slices.Sorted(maps.Keys(r.devices)) {
		d := r.devices[id]
		devs = append(devs, twin.Device{ID: d.ID, Name: d.Name, Description: d.Description, State: d.State,
			LastOnline: d.LastOnline, Attributes: msgAttrs(d.Attrs)})
	}
	r.publish(ctx, topic, twin.MembershipDetail{BaseMessage: twin.BaseMessage{EventID: req.EventID, Timestamp: nowMs()}, Devices: devs})
}

func msgAttrs(attrs map[string]attr) map[string]*twin.MsgAttr {
	if len(attrs) == 0 {
		return nil
	}
	out := make(map[string]*twin.MsgAttr, len(attrs))
	for k, a := range attrs {
		out[k] = &twin.MsgAttr{Value: a.Value, Optional: ptr(a.Optional), Metadata: &twin.TypeMetadata{Type: a.Type}}
	}
	return out
}

// membership applies the cloud's membership update: devices bound to or
// unbound from this node.
func (r *run) membership(ctx context.Context, msg model.Message) {
	var mu twin.MembershipUpdate
	if err := msg.UnmarshalContent(&mu); err != nil {
		klog.InfoS("Ignoring malformed membership update", "message", msg.String(), "err", err)
		return
	}
	r.applyMembership(ctx, mu.EventID, mu.AddedDevices, mu.RemovedDevices)
}

// membershipDetail applies the cloud's full device list for this node
// (membership/detail, spec §14.5) as a replacement: listed devices are
// added or updated, every other device is removed.
//
// The detail is a snapshot, yet it needs no version check against
// membership updates. DeviceController sends everything for a node from
// one goroutine, so the detail is its announced state right after every
// membership message enqueued before it, and any later change leaves as a
// later message; CloudHub, EdgeHub and this module keep a node's messages
// in that order. Applying the detail where it arrives therefore neither
// undoes an update the cloud made before it nor can be overtaken by one it
// made after. Comparing event timestamps instead would misjudge exactly
// these cases whenever the cloud's clock steps.
func (r *run) membershipDetail(ctx context.Context, msg model.Message) {
	var md struct {
		twin.BaseMessage
		// A pointer tells a missing or null list from an empty one: only
		// an explicit [] may remove every device.
		Devices *[]twin.Device `json:"devices"`
	}
	if err := msg.UnmarshalContent(&md); err != nil {
		klog.InfoS("Ignoring malformed membership detail", "message", msg.String(), "err", err)
		return
	}
	if md.Devices == nil {
		klog.InfoS("Ignoring membership detail without a device list", "message", msg.String())
		return
	}
	// An entry without a usable id cannot be matched to a stored device, so
	// the list is not a snapshot we can trust to remove by.
	listed := make(map[string]bool, len(*md.Devices))
	for i, d := range *md.Devices {
		id := deviceID(d)
		if err := validateDeviceID(id); err != nil {
			klog.InfoS("Ignoring membership detail with an invalid device", "message", msg.String(), "index", i, "err", err)
			return
		}
		listed[id] = true
	}
	var removed []twin.Device
	for _, id := range slices.Sorted(maps.Keys(r.devices)) {
		if !listed[id] {
			removed = append(removed, twin.Device{ID: id, Name: r.devices[id].Name})
		}
	}
	klog.V(2).InfoS("Applying membership detail", "devices", len(*md.Devices), "removing", len(removed))
	r.applyMembership(ctx, md.EventID, *md.Devices, removed)
}

// applyMembership adds or updates added, removes removed and tells apps
// what changed in one membership/updated publication, as KubeEdge does for
// both membership updates and details.
func (r *run) applyMembership(ctx context.Context, eventID string, added, removed []twin.Device) {
	published := twin.MembershipUpdate{BaseMessage: twin.BaseMessage{EventID: eventID, Timestamp: nowMs()},
		AddedDevices: []twin.Device{}, RemovedDevices: []twin.Device{}}
	for _, d := range added {
		if dev, ok := r.addDevice(ctx, eventID, d); ok {
			published.AddedDevices = append(published.AddedDevices, dev)
		}
	}
	for _, d := range removed {
		if dev, ok := r.removeDevice(ctx, d); ok {
			published.RemovedDevices = append(published.RemovedDevices, dev)
		}
	}
	if len(published.AddedDevices)+len(published.RemovedDevices) == 0 {
		return
	}
	r.publish(ctx, nodeTopicPrefix+r.nodeName+suffixMembershipUpdated, published)
}

func deviceID(d twin.Device) string {
	if d.ID != "" {
		return d.ID
	}
	return d.Name
}

// addDevice stores a device added to this node, or applies its twins and
// attributes with cloud semantics if it is known, and returns it as apps
// see it.
func (r *run) addDevice(ctx context.Context, eventID string, d twin.Device) (twin.Device, bool) {
	id := deviceID(d)
	if err := validateDeviceID(id); err != nil {
		klog.InfoS("Ignoring added device", "err", err)
		return twin.Device{}, false
	}
	old := r.devices[id]
	dev := &device{ID: id, Name: d.Name, Description: d.Description, State: d.State,
		Attrs: map[string]attr{}, Twins: map[string]twinRow{}}
	if old != nil {
		dev.State, dev.LastOnline = old.State, old.LastOnline
		dev.Attrs, dev.Twins = maps.Clone(old.Attrs), maps.Clone(old.Twins)
	}
	if dev.Name == "" {
		dev.Name = id
	}
	changedAttrs := map[string]attr{}
	for name, a := range d.Attributes {
		if a == nil {
			continue
		}
		if err := validateKey(name); err != nil {
			klog.InfoS("Ignoring attribute of added device", "device", id, "err", err)
			continue
		}
		na := attr{Value: a.Value, Optional: a.Optional == nil || *a.Optional, Type: twin.TypeString, Metadata: "{}"}
		if a.Metadata != nil && a.Metadata.Type != "" {
			na.Type = a.Metadata.Type
		}
		if prev, ok := dev.Attrs[name]; ok {
			na.Description = prev.Description
		}
		if dev.Attrs[name] != na {
			changedAttrs[name] = na
			dev.Attrs[name] = na
		}
	}
	out, _ := applyTwins(id, dev.Twins, d.Twin, dealSync, nowMs())
	entries := r.outbox.prepareTwins(id, out.toCloud)
	err := withTx(ctx, r.db, func(tx *sql.Tx) error {
		if old == nil || old.Name != dev.Name || old.Description != dev.Description {
			if err := insertDevice(ctx, tx, dev); err != nil {
				return err
			}
		}
		for _, k := range slices.Sorted(maps.Keys(changedAttrs)) {
			if err := writeAttr(ctx, tx, id, k, changedAttrs[k]); err != nil {
				return err
			}
		}
		for _, k := range slices.Sorted(maps.Keys(out.changed)) {
			if err := writeTwin(ctx, tx, id, k, out.changed[k], out.inserted[k]); err != nil {
				return err
			}
		}
		return r.outbox.write(ctx, tx, entries)
	})
	if err != nil {
		klog.ErrorS(err, "Cannot store added device", "device", id)
		return twin.Device{}, false
	}
	maps.Copy(dev.Twins, out.changed)
	r.devices[id] = dev
	r.outbox.commit(entries)
	if old != nil {
		r.publishChanges(ctx, dev, eventID, out)
	} else {
		klog.InfoS("Device added", "device", id, "twins", len(dev.Twins))
	}
	twins := make(map[string]*twin.MsgTwin, len(dev.Twins))
	for k, t := range dev.Twins {
		twins[k] = t.docState()
	}
	return twin.Device{ID: id, Name: dev.Name, Description: dev.Description, State: dev.State,
		LastOnline: dev.LastOnline, Attributes: msgAttrs(dev.Attrs), Twin: twins}, true
}

func (r *run) removeDevice(ctx context.Context, d twin.Device) (twin.Device, bool) {
	id := deviceID(d)
	dev := r.devices[id]
	if dev == nil {
		klog.V(2).InfoS("Ignoring removal of unknown device", "device", id)
		return twin.Device{}, false
	}
	if err := withTx(ctx, r.db, func(tx *sql.Tx) error { return deleteDevice(ctx, tx, id) }); err != nil {
		klog.ErrorS(err, "Cannot remove device", "device", id)
		return twin.Device{}, false
	}
	delete(r.devices, id)
	r.outbox.forgetDevice(id)
	klog.InfoS("Device removed", "device", id)
	return twin.Device{ID: id, Name: dev.Name, Description: dev.Description}, true
}
