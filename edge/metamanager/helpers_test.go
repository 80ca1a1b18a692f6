package metamanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-edge/tether/edge/metamanager"
	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// waitTimeout only bounds a broken test; passing tests never wait for it.
const waitTimeout = 10 * time.Second

// fake is a stand-in module that records what it receives and, if reply is
// set, answers synchronous requests the way EdgeHub relays cloud replies.
type fake struct {
	bus         *beehive.Bus
	name, group string
	reply       func(req model.Message) *model.Message
	got         chan model.Message // nil: discard
}

func (f *fake) Name() string  { return f.name }
func (f *fake) Group() string { return f.group }
func (f *fake) Enable() bool  { return true }

func (f *fake) Start(ctx context.Context) error {
	for {
		msg, err := f.bus.Receive(ctx, f.name)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, beehive.ErrStopped) {
				return nil
			}
			return err
		}
		if f.reply != nil && msg.IsSync() {
			if resp := f.reply(msg); resp != nil {
				_ = f.bus.SendResp(*resp)
			}
		}
		if f.got != nil {
			f.got <- msg
		}
	}
}

type harness struct {
	t     testing.TB
	ctx   context.Context
	bus   *beehive.Bus
	store *store.Store
	mm    *metamanager.MetaManager
	hub   *fake // nil if not registered
	edged *fake
	extra beehive.Module
	stop  func()
}

type harnessOpts struct {
	path     string // database file; default a fresh temp file
	noHub    bool
	hubReply func(req model.Message) *model.Message
	// edgedReply answers synchronous requests to edged (CSI calls).
	edgedReply func(req model.Message) *model.Message
	discard    bool // fakes drop what they receive (benchmarks)
	cfg        *v1alpha2.MetaManager
	// registerExtra adds a module of the test's own (a custom hub).
	registerExtra func(*beehive.Bus) beehive.Module
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.path == "" {
		o.path = filepath.Join(t.TempDir(), "edgecore.db")
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, o.path)
	if err != nil {
		cancel()
		t.Fatalf("open store: %v", err)
	}
	bus := beehive.New(beehive.Options{})
	mm, err := metamanager.New(bus, o.cfg, st)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, bus: bus, store: st, mm: mm}
	ch := func() chan model.Message {
		if o.discard {
			return nil
		}
		return make(chan model.Message, 4096)
	}
	h.edged = &fake{bus: bus, name: modules.Edged, group: modules.EdgedGroup, reply: o.edgedReply, got: ch()}
	mods := []beehive.Module{mm, h.edged}
	if !o.noHub {
		h.hub = &fake{bus: bus, name: modules.EdgeHub, group: modules.EdgeHubGroup, reply: o.hubReply, got: ch()}
		mods = append(mods, h.hub)
	}
	if o.registerExtra != nil {
		h.extra = o.registerExtra(bus)
		mods = append(mods, h.extra)
	}
	for _, m := range mods {
		if err := bus.Register(m); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus.Run: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}
	t.Cleanup(h.stop)
	return h
}

// setConnected sends EdgeHub's connection event.
func (h *harness) setConnected(up bool) {
	content := model.ContentCloudDisconnected
	if up {
		content = model.ContentCloudConnected
	}
	msg := model.NewMessage("").BuildRouter(model.SourceEdgeHub, modules.MetaGroup, model.ResourceNodeConnection,
		model.ConnectOperation).FillBody(content)
	if err := h.bus.SendToGroup(h.ctx, modules.MetaGroup, *msg); err != nil {
		h.t.Fatal(err)
	}
}

// fromCloud delivers msg as EdgeHub does for a cloud message without parent.
func (h *harness) fromCloud(source, op, res string, content any) model.Message {
	h.t.Helper()
	msg := model.NewMessage("").BuildRouter(source, model.GroupResource, res, op).FillBody(content)
	if err := h.bus.SendToGroup(h.ctx, modules.MetaGroup, *msg); err != nil {
		h.t.Fatal(err)
	}
	return *msg
}

// fromEdged sends a request as edged's client bridge does.
func edgedMsg(op, res string, content any) model.Message {
	return *model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, res, op).FillBody(content)
}

func (h *harness) sync(msg model.Message) model.Message {
	h.t.Helper()
	resp, err := h.bus.SendSync(h.ctx, modules.MetaManager, msg, waitTimeout)
	if err != nil {
		h.t.Fatalf("SendSync %s %s: %v", msg.Router.Operation, msg.Router.Resource, err)
	}
	return resp
}

func next(t testing.TB, ch <-chan model.Message, who string) model.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("%s received nothing", who)
		return model.Message{}
	}
}

// barrier proves that nothing else reached edged or the hub before it:
// MetaManager handles messages in order, so once the barrier's ACK and
// forward arrive, everything sent earlier has been fully processed.
func (h *harness) barrier() {
	h.t.Helper()
	b := h.fromCloud(modules.EdgeController, model.InsertOperation, "barrier/pod/barrier", podJSON("barrier", "ub", "1"))
	if h.hub != nil {
		if ack := next(h.t, h.hub.got, "hub"); ack.Header.ParentID != b.Header.ID {
			h.t.Fatalf("hub got %s before the barrier ACK", ack.String())
		}
	}
	if fwd := next(h.t, h.edged.got, "edged"); fwd.Header.ID != b.Header.ID {
		h.t.Fatalf("edged got %s before the barrier", fwd.String())
	}
}

func podJSON(name, uid, rv string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":"default","uid":%q,"resourceVersion":%q},"spec":{"nodeName":"edge-1"}}`,
		name, uid, rv))
}

// contentStrings decodes a database answer: a JSON array of JSON strings.
func contentStrings(t testing.TB, msg model.Message) []string {
	t.Helper()
	data, err := msg.GetContentData()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("content %s is not an array of strings: %v", data, err)
	}
	for _, s := range out {
		if !json.Valid([]byte(s)) {
			t.Errorf("element %q is not JSON", s)
		}
	}
	return out
}
