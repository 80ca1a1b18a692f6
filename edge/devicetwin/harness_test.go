package devicetwin

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/twin"
)

// waitTimeout only bounds a broken test; passing tests never wait for it.
const waitTimeout = 10 * time.Second

const testNode = "edge-1"

// recorder stands in for EventBus or EdgeHub and keeps what it receives.
type recorder struct {
	bus         *beehive.Bus
	name, group string
	got         chan model.Message
}

func (r *recorder) Name() string  { return r.name }
func (r *recorder) Group() string { return r.group }
func (r *recorder) Enable() bool  { return true }

func (r *recorder) Start(ctx context.Context) error {
	for {
		msg, err := r.bus.Receive(ctx, r.name)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, beehive.ErrStopped) {
				return nil
			}
			return err
		}
		select {
		case r.got <- msg:
		case <-ctx.Done():
			return nil
		}
	}
}

type harness struct {
	t        testing.TB
	dbPath   string
	bus      *beehive.Bus
	dt       *DeviceTwin
	eventbus *recorder
	hub      *recorder
	ctx      context.Context
	stopOnce sync.Once
	stopFn   func()
}

// newHarness runs DeviceTwin on a real bus with the database at dbPath
// (a fresh file when empty); configure may adjust the module before it
// starts.
func newHarness(t testing.TB, dbPath string, configure func(*DeviceTwin)) *harness {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "edgecore.db")
	}
	bus := beehive.New(beehive.Options{})
	dt, err := New(bus, &v1alpha2.DeviceTwin{Enable: true}, dbPath, testNode)
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(dt)
	}
	h := &harness{t: t, dbPath: dbPath, bus: bus, dt: dt,
		eventbus: &recorder{bus: bus, name: modules.EventBus, group: modules.BusGroup, got: make(chan model.Message, 256)},
		hub:      &recorder{bus: bus, name: modules.EdgeHub, group: modules.EdgeHubGroup, got: make(chan model.Message, 256)},
	}
	for _, m := range []beehive.Module{dt, h.eventbus, h.hub} {
		if err := bus.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Run(ctx)
	}()
	h.stopFn = func() {
		cancel()
		<-done
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() { h.stopOnce.Do(h.stopFn) }

// wire passes msg through the JSON encoding, as messages from the cloud
// and EventBus's string payloads arrive.
func (h *harness) wire(msg *model.Message) model.Message {
	h.t.Helper()
	data, err := json.Marshal(msg)
	if err != nil {
		h.t.Fatal(err)
	}
	var out model.Message
	if err := json.Unmarshal(data, &out); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) toTwin(msg model.Message) {
	h.t.Helper()
	if err := h.bus.SendToGroup(h.ctx, modules.TwinGroup, msg); err != nil {
		h.t.Fatal(err)
	}
}

// mqtt delivers payload on topic the way EventBus does.
func (h *harness) mqtt(topic, payload string) {
	h.t.Helper()
	h.toTwin(h.wire(model.NewMessage("").
		BuildRouter("bus", model.GroupUser, base64.URLEncoding.EncodeToString([]byte(topic)), model.ResponseOperation).
		FillBody(payload)))
}

// cloud delivers a DeviceController message as EdgeHub does (node prefix
// already stripped by CloudHub).
func (h *harness) cloud(res string, content any) {
	h.t.Helper()
	data, err := json.Marshal(content)
	if err != nil {
		h.t.Fatal(err)
	}
	h.toTwin(h.wire(model.NewMessage("").
		BuildRouter(modules.DeviceController, model.GroupTwin, res, model.UpdateOperation).
		FillBody(json.RawMessage(data))))
}

// confirm answers a report the way the cloud does.
func (h *harness) confirm(report model.Message) {
	h.t.Helper()
	h.toTwin(h.wire(model.NewMessage(report.Header.ID).
		BuildRouter(modules.DeviceController, model.GroupTwin, "twin", model.ResponseOperation).
		FillBody("OK")))
}

func (h *harness) link(content string) {
	h.t.Helper()
	h.toTwin(*model.NewMessage("").
		BuildRouter(model.SourceEdgeHub, modules.TwinGroup, model.ResourceNodeConnection, model.ConnectOperation).
		FillBody(content))
}

// published returns the next message EventBus got, checking its topic,
// and decodes its payload into v.
func (h *harness) published(topic string, v any) {
	h.t.Helper()
	select {
	case msg := <-h.eventbus.got:
		if msg.Router.Operation != model.PublishOperation || msg.Router.Resource != topic {
			h.t.Fatalf("published %s %q, want publish %q (content %v)", msg.Router.Operation, msg.Router.Resource, topic, msg.Content)
		}
		s, ok := msg.Content.(string)
		if !ok {
			h.t.Fatalf("publish to %q: content is %T, want a JSON string", topic, msg.Content)
		}
		if err := json.Unmarshal([]byte(s), v); err != nil {
			h.t.Fatalf("publish to %q: %v: %s", topic, err, s)
		}
	case <-time.After(waitTimeout):
		h.t.Fatalf("nothing published, want %q", topic)
	}
}

// barrier proves every earlier message has been handled: the module
// handles messages in order, so the answer to this request comes after
// whatever they published.
func (h *harness) barrier() {
	h.t.Helper()
	h.mqtt("$hw/events/device/barrier-none/twin/get", `{"event_id":"barrier"}`)
	var res ErrorResult
	h.published("$hw/events/device/barrier-none/twin/get/result", &res)
	if res.EventID != "barrier" || res.Code != CodeNotFound {
		h.t.Fatalf("barrier answer = %+v", res)
	}
}

func (h *harness) report() model.Message {
	h.t.Helper()
	select {
	case msg := <-h.hub.got:
		return msg
	case <-time.After(waitTimeout):
		h.t.Fatal("no report reached EdgeHub")
	}
	return model.Message{}
}

func (h *harness) noReport() {
	h.t.Helper()
	select {
	case msg := <-h.hub.got:
		h.t.Fatalf("unexpected report %s: %v", msg.String(), msg.Content)
	default:
	}
}

// query reads the database file with a connection of the test's own.
func (h *harness) query(q string, args ...any) [][]any {
	h.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+h.dbPath+"?_busy_timeout=5000")
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.Query(q, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	cols, _ := rows.Columns()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			h.t.Fatal(err)
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// counterMembership is the counter demo's device as the v1.7 cloud adds
// it (counter-demo §5.3), plus an int twin for type checks.
func counterMembership(cloudVersion int64) twin.MembershipUpdate {
	return twin.MembershipUpdate{
		BaseMessage: twin.BaseMessage{EventID: "m1", Timestamp: 1},
		AddedDevices: []twin.Device{{
			ID: "counter", Name: "counter", Description: "counter",
			Twin: map[string]*twin.MsgTwin{
				"status": {
					Expected:        &twin.Value{Value: ptr("OFF"), Metadata: &twin.ValueMetadata{Timestamp: 1}},
					Optional:        ptr(false),
					Metadata:        &twin.TypeMetadata{Type: twin.TypeString},
					ExpectedVersion: &twin.Version{CloudVersion: cloudVersion},
				},
				"count": {
					Optional:        ptr(true),
					Metadata:        &twin.TypeMetadata{Type: twin.TypeInt},
					ExpectedVersion: &twin.Version{CloudVersion: cloudVersion},
				},
			},
		}},
	}
}

const counterRV = 12

// withCounter returns a harness whose module knows the counter device.
func withCounter(t testing.TB, dbPath string, configure func(*DeviceTwin)) *harness {
	t.Helper()
	h := newHarness(t, dbPath, configure)
	h.cloud("membership", counterMembership(counterRV))
	var mu twin.MembershipUpdate
	h.published("$hw/events/node/"+testNode+"/membership/updated", &mu)
	return h
}

func val(v *twin.Value) string {
	if v == nil || v.Value == nil {
		return "<nil>"
	}
	return *v.Value
}
