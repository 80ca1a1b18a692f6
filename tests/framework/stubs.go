package framework

import (
	"context"
	"encoding/json"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// EdgeObject is what the edge holds for one resource.
type EdgeObject struct {
	UID             string
	ResourceVersion string
	Content         json.RawMessage
}

// EdgeStore is the edge's state in link tests; it outlives edgecore restarts, as MetaManager's database does.
type EdgeStore struct {
	mu       sync.Mutex
	objects  map[string]EdgeObject // by edge resource string
	received []model.Message
}

// NewEdgeStore returns an empty store.
func NewEdgeStore() *EdgeStore { return &EdgeStore{objects: map[string]EdgeObject{}} }

// AckingMeta stands in for edge MetaManager in link tests: it keeps the latest state of every resource the cloud
// delivers and ACKs each message after recording it, as MetaManager ACKs after persisting.
type AckingMeta struct {
	bus   *beehive.Bus
	store *EdgeStore
}

// NewAckingMeta returns the stand-in, registered as module metamanager in group meta.
func NewAckingMeta(bus *beehive.Bus, store *EdgeStore) *AckingMeta {
	return &AckingMeta{bus: bus, store: store}
}

func (m *AckingMeta) Name() string  { return modules.MetaManager }
func (m *AckingMeta) Group() string { return modules.MetaGroup }
func (m *AckingMeta) Enable() bool  { return true }

// Start records and ACKs until ctx is done.
func (m *AckingMeta) Start(ctx context.Context) error {
	return m.bus.Serve(ctx, m.Name(), func(msg model.Message) {
		if msg.GetResource() == model.ResourceNodeConnection {
			return
		}
		m.store.record(msg)
		if msg.GetGroup() != model.GroupResource || msg.GetOperation() == model.ResponseOperation {
			return
		}
		ack := model.NewRespByMessage(&msg, "OK")
		if err := m.bus.Send(ctx, modules.EdgeHub, *ack); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Test meta stand-in could not ACK", "message", msg.GetID())
		}
	})
}

func (m *EdgeStore) record(msg model.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.received = append(m.received, msg)
	switch msg.GetOperation() {
	case model.InsertOperation, model.UpdateOperation:
		data, _ := msg.GetContentData()
		var meta metav1.PartialObjectMetadata
		_ = json.Unmarshal(data, &meta)
		m.objects[msg.GetResource()] = EdgeObject{UID: string(meta.UID), ResourceVersion: msg.GetResourceVersion(), Content: data}
	case model.DeleteOperation:
		delete(m.objects, msg.GetResource())
	}
}

// Objects returns a copy of the current edge state.
func (m *EdgeStore) Objects() map[string]EdgeObject {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]EdgeObject, len(m.objects))
	for k, v := range m.objects {
		out[k] = v
	}
	return out
}

// Received returns every message delivered so far, in order.
func (m *EdgeStore) Received() []model.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]model.Message(nil), m.received...)
}

// Recorder is a module that keeps whatever reaches its mailbox; link tests register one in a cloud controller's
// group to observe upstream traffic.
type Recorder struct {
	bus         *beehive.Bus
	name, group string

	mu   sync.Mutex
	msgs []model.Message
}

// NewRecorder returns a recording module.
func NewRecorder(bus *beehive.Bus, name, group string) *Recorder {
	return &Recorder{bus: bus, name: name, group: group}
}

func (r *Recorder) Name() string  { return r.name }
func (r *Recorder) Group() string { return r.group }
func (r *Recorder) Enable() bool  { return true }

// Start records until ctx is done.
func (r *Recorder) Start(ctx context.Context) error {
	return r.bus.Serve(ctx, r.name, func(msg model.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, msg)
		r.mu.Unlock()
	})
}

// Messages returns what was recorded, in order.
func (r *Recorder) Messages() []model.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]model.Message(nil), r.msgs...)
}
