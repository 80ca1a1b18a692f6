// Package metamanager is edgecore's MetaManager (spec §11): it persists what
// the cloud sends in SQLite before acknowledging it, answers edged's queries
// from the database when the cloud is out of reach, and relays edged's
// writes that need the API server.
package metamanager

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// Defaults for unset configuration fields.
const (
	DefaultRemoteQueryTimeout = 60 * time.Second
	// maxInFlightRemote bounds concurrent round trips to the cloud; beyond
	// it the main loop waits, pushing back on edged instead of piling up
	// goroutines behind a dead link.
	maxInFlightRemote = 64
)

// ErrNotConnected is the reason given to edged for writes that need the
// cloud while the link is down.
var ErrNotConnected = errors.New("not connected")

// MetaManager is the beehive module "metamanager" in group "meta".
type MetaManager struct {
	bus           *beehive.Bus
	store         *store.Store
	enabled       bool
	sendGroup     string
	sendModule    string
	remoteTimeout time.Duration

	connected atomic.Bool
	// slots limits in-flight remote calls; wg tracks their goroutines so
	// that Start returns only after all of them have.
	slots chan struct{}
	wg    sync.WaitGroup
}

// New returns MetaManager for bus, keeping its data in st. The caller owns
// st and closes it after the bus has stopped. A nil cfg means the defaults.
func New(bus *beehive.Bus, cfg *v1alpha2.MetaManager, st *store.Store) (*MetaManager, error) {
	if bus == nil || st == nil {
		return nil, errors.New("new metamanager: nil bus or store")
	}
	m := &MetaManager{
		bus:           bus,
		store:         st,
		enabled:       true,
		sendGroup:     modules.EdgeHubGroup,
		sendModule:    modules.EdgeHub,
		remoteTimeout: DefaultRemoteQueryTimeout,
		slots:         make(chan struct{}, maxInFlightRemote),
	}
	if cfg != nil {
		m.enabled = cfg.Enable
		if cfg.ContextSendGroup != "" {
			m.sendGroup = cfg.ContextSendGroup
		}
		if cfg.ContextSendModule != "" {
			m.sendModule = cfg.ContextSendModule
		}
		if cfg.RemoteQueryTimeout > 0 {
			m.remoteTimeout = time.Duration(cfg.RemoteQueryTimeout) * time.Second
		}
	}
	return m, nil
}

// Name implements beehive.Module.
func (m *MetaManager) Name() string { return modules.MetaManager }

// Group implements beehive.Module.
func (m *MetaManager) Group() string { return modules.MetaGroup }

// Enable implements beehive.Module.
func (m *MetaManager) Enable() bool { return m.enabled }

// Connected reports the cloud link state last announced by EdgeHub.
func (m *MetaManager) Connected() bool { return m.connected.Load() }

// Start processes messages until ctx is done or the bus stops, then waits
// for in-flight remote calls. Messages are handled one at a time, so the
// cloud's per-object order is kept in the database.
func (m *MetaManager) Start(ctx context.Context) error {
	defer m.wg.Wait()
	return m.bus.Serve(ctx, m.Name(), func(msg model.Message) { m.handle(ctx, msg) })
}

// handle turns a panic into a log line: one bad message must not stop
// every later one from being persisted and ACKed.
func (m *MetaManager) handle(ctx context.Context, msg model.Message) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered panic while processing message", "message", msg.String(),
				"panic", r, "stack", string(debug.Stack()))
		}
	}()
	klog.V(4).InfoS("Processing message", "message", msg.String())
	if msg.Router.Resource == model.ResourceNodeConnection && msg.Router.Operation == model.ConnectOperation {
		m.processConnection(msg)
		return
	}
	switch op := msg.Router.Operation; op {
	case model.InsertOperation:
		m.processInsert(ctx, msg)
	case model.UpdateOperation:
		m.processUpdate(ctx, msg)
	case model.PatchOperation:
		m.processPatch(ctx, msg)
	case model.DeleteOperation:
		m.processDelete(ctx, msg)
	case model.QueryOperation:
		m.processQuery(ctx, msg)
	case model.ResponseOperation:
		m.processResponse(ctx, msg)
	case model.ResponseErrorOperation:
		klog.InfoS("Dropping error response nobody waits for", "message", msg.String(), "content", contentText(msg))
	case model.CreateVolumeOperation, model.DeleteVolumeOperation,
		model.ControllerPublishVolumeOperation, model.ControllerUnpublishVolumeOperation:
		m.processVolume(ctx, msg)
	default:
		m.feedbackError(ctx, msg, fmt.Errorf("unsupported operation %q", op))
	}
}

func (m *MetaManager) processConnection(msg model.Message) {
	switch s := contentText(msg); s {
	case model.ContentCloudConnected:
		m.connected.Store(true)
		klog.InfoS("Cloud connected; remote queries enabled")
	case model.ContentCloudDisconnected:
		m.connected.Store(false)
		klog.InfoS("Cloud disconnected; answering from the local database")
	default:
		klog.InfoS("Ignoring unknown connection event", "message", msg.String(), "content", s)
	}
}

// goRemote runs f on a goroutine owned by m, once a slot is free.
func (m *MetaManager) goRemote(ctx context.Context, f func()) {
	select {
	case m.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	m.wg.Go(func() {
		defer func() { <-m.slots }()
		defer func() {
			if r := recover(); r != nil {
				klog.ErrorS(nil, "Recovered panic in remote call", "panic", r, "stack", string(debug.Stack()))
			}
		}()
		f()
	})
}
