// Package edged is edgecore's node agent (spec §12): it registers the node and reports its status, runs the pods
// the cloud assigns to this node through a kuberuntime.Runtime, and reports their status. Everything it knows
// of the cloud comes through MetaManager, so after a restart without a link it rebuilds its pods from the local
// database alone.
//
// Messages edged sends to MetaManager (source "edged", group "meta", all SendSync):
//
//	{registerNodeNamespace}/node/{node}       insert  v1.Node                       registration
//	{registerNodeNamespace}/node/{node}       update  v1.Node                       labels of an existing node
//	{registerNodeNamespace}/nodepatch/{node}  patch   string {"status":...}         node status, every 10 s
//	{registerNodeNamespace}/pod               query   nil                           every pod in the database
//	{ns}/podpatch/{pod}                       patch   string {"metadata":{"uid"},"status":...}
//	{ns}/pod/{pod}                            delete  metav1.DeleteOptions{grace 0, UID precondition}
//	{ns}/configmap/{name}, {ns}/secret/{name} query   nil                           for the runtime
package edged

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// KubeletVersion is the Kubernetes version edged implements; node status reports it suffixed with Tether's.
const KubeletVersion = "v1.37.2"

// Defaults for what the config leaves at zero and for the options.
const (
	DefaultNodeStatusInterval   = 10 * time.Second
	DefaultResyncInterval       = 10 * time.Second
	DefaultHousekeepingInterval = time.Minute
	// DefaultRequestTimeout covers a remote request through MetaManager, which itself waits up to 60 s for the
	// cloud.
	DefaultRequestTimeout = 65 * time.Second
	DefaultRetryMin       = 250 * time.Millisecond
	DefaultGracePeriod    = 30 * time.Second
	DefaultMaxPods        = 110
	DefaultKubeletPort    = 10350
	defaultNamespace      = "default"
	// tombstoneTTL is how long a finished pod's UID is remembered, so late messages about it do not revive it.
	tombstoneTTL = 10 * time.Minute
	// versionTimeout bounds the runtime probe behind the Ready condition.
	versionTimeout = 5 * time.Second
)

type options struct {
	clock              clock.WithTicker
	nodeStatusInterval time.Duration
	resyncInterval     time.Duration
	housekeeping       time.Duration
	requestTimeout     time.Duration
	retryMin           time.Duration
	hostRoot           string
}

// Option configures Edged.
type Option func(*options)

// WithClock replaces the real clock (tests).
func WithClock(c clock.WithTicker) Option { return func(o *options) { o.clock = c } }

// WithNodeStatusInterval overrides tailoredKubeletConfig.nodeStatusUpdateFrequency.
func WithNodeStatusInterval(d time.Duration) Option {
	return func(o *options) { o.nodeStatusInterval = d }
}

// WithResyncInterval sets how often every pod is synced again (default 10 s), which restarts crashed
// containers and refreshes statuses.
func WithResyncInterval(d time.Duration) Option { return func(o *options) { o.resyncInterval = d } }

// WithHousekeepingInterval sets how often pods unknown to edged are removed from the runtime and dead
// containers collected (default 1 min).
func WithHousekeepingInterval(d time.Duration) Option {
	return func(o *options) { o.housekeeping = d }
}

// WithRequestTimeout bounds each request to MetaManager (default 65 s).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.requestTimeout = d } }

// WithRetryMin sets the first wait before retrying a failed registration, pod list or pod sync; waits double
// up to the node status interval or the resync interval.
func WithRetryMin(d time.Duration) Option { return func(o *options) { o.retryMin = d } }

// WithHostRoot reads host facts (/proc, /etc, /sys) under dir instead of "/" (tests).
func WithHostRoot(dir string) Option { return func(o *options) { o.hostRoot = dir } }

// Edged is the edged beehive module.
type Edged struct {
	bus     *beehive.Bus
	rt      kuberuntime.Runtime
	enabled bool

	nodeName     string
	namespace    string
	nodeIP       string
	labels       map[string]string
	maxPods      int64
	registerNode bool
	kubeletPort  int32

	opts options
}

var _ beehive.Module = (*Edged)(nil)

// New builds edged from its config. It does no I/O; Start does.
func New(cfg *v1alpha2.Edged, bus *beehive.Bus, rt kuberuntime.Runtime, opts ...Option) (*Edged, error) {
	switch {
	case cfg == nil:
		return nil, errors.New("new edged: nil config")
	case bus == nil:
		return nil, errors.New("new edged: nil bus")
	case rt == nil && cfg.Enable:
		return nil, errors.New("new edged: nil runtime")
	}
	o := options{
		clock:          clock.RealClock{},
		resyncInterval: DefaultResyncInterval,
		housekeeping:   DefaultHousekeepingInterval,
		requestTimeout: DefaultRequestTimeout,
		retryMin:       DefaultRetryMin,
		hostRoot:       "/",
	}
	e := &Edged{
		bus:          bus,
		rt:           rt,
		enabled:      cfg.Enable,
		nodeName:     cfg.HostnameOverride,
		namespace:    cfg.RegisterNodeNamespace,
		nodeIP:       cfg.NodeIP,
		labels:       cfg.NodeLabels,
		maxPods:      DefaultMaxPods,
		registerNode: true,
		kubeletPort:  DefaultKubeletPort,
	}
	if k := cfg.TailoredKubeletConfig; k != nil {
		o.nodeStatusInterval = k.NodeStatusUpdateFrequency.Duration
		if k.MaxPods > 0 {
			e.maxPods = int64(k.MaxPods)
		}
		e.registerNode = k.RegisterNode
		if k.ReadOnlyPort > 0 {
			e.kubeletPort = k.ReadOnlyPort
		}
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.nodeStatusInterval <= 0 {
		o.nodeStatusInterval = DefaultNodeStatusInterval
	}
	for _, d := range []*time.Duration{&o.resyncInterval, &o.housekeeping, &o.requestTimeout, &o.retryMin} {
		if *d <= 0 {
			return nil, fmt.Errorf("new edged: non-positive interval %v", *d)
		}
	}
	e.opts = o
	if e.nodeName == "" {
		// Config defaulting normally fills it; this covers hand-built configs.
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("new edged: no hostnameOverride and no hostname: %w", err)
		}
		e.nodeName = strings.ToLower(strings.TrimSpace(h))
	}
	if e.namespace == "" {
		e.namespace = defaultNamespace
	}
	return e, nil
}

// Name implements beehive.Module.
func (e *Edged) Name() string { return modules.Edged }

// Group implements beehive.Module.
func (e *Edged) Group() string { return modules.EdgedGroup }

// Enable implements beehive.Module.
func (e *Edged) Enable() bool { return e.enabled }

// NodeName is the name edged registers and filters pods by.
func (e *Edged) NodeName() string { return e.nodeName }

// Start runs edged until ctx is done. All state lives in this call, so a restarted module starts clean and
// rebuilds from MetaManager and the runtime.
func (e *Edged) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	klog.InfoS("Starting edged", "node", e.nodeName, "registerNode", e.registerNode,
		"nodeStatusInterval", e.opts.nodeStatusInterval, "resyncInterval", e.opts.resyncInterval)

	meta := &metaClient{bus: e.bus, timeout: e.opts.requestTimeout}
	lk := newLink()
	host := readHostInfo(e.opts.hostRoot)
	na := newNodeAgent(e, meta, lk, host)
	pm := newPodManager(e, meta, lk, na)

	var wg sync.WaitGroup
	wg.Go(func() { na.run(ctx) })
	wg.Go(func() { pm.run(ctx) })
	e.consume(ctx, pm, na, lk)
	cancel()
	wg.Wait()
	pm.wg.Wait()
	klog.InfoS("Edged stopped", "node", e.nodeName)
	return nil
}

// consume loads the pods MetaManager knows, then applies the messages it forwards. Loading first, on this
// goroutine, keeps the snapshot and the messages in order: a pod the database lacks is never killed because
// its insert was still queued.
func (e *Edged) consume(ctx context.Context, pm *podManager, na *nodeAgent, lk *link) {
	if !pm.initialLoad(ctx) {
		return
	}
	for {
		msg, err := e.bus.Receive(ctx, modules.Edged)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, beehive.ErrStopped) {
				klog.ErrorS(err, "Cannot receive edged messages")
			}
			return
		}
		e.dispatch(ctx, msg, pm, na, lk)
	}
}

func (e *Edged) dispatch(ctx context.Context, msg model.Message, pm *podManager, na *nodeAgent, lk *link) {
	if msg.Router.Resource == model.ResourceNodeConnection {
		// EdgeHub broadcasts these to other groups; handled here in case MetaManager forwards them.
		var state string
		if err := msg.UnmarshalContent(&state); err != nil {
			state, _ = msg.Content.(string)
		}
		switch state {
		case model.ContentCloudConnected:
			lk.connected()
			na.wake()
		case model.ContentCloudDisconnected:
			lk.disconnected()
		}
		return
	}
	if err := pm.handle(ctx, msg); err != nil {
		klog.ErrorS(err, "Dropping message", "msgID", msg.Header.ID, "resource", msg.Router.Resource,
			"operation", msg.Router.Operation, "source", msg.Router.Source)
		if msg.Header.Sync {
			e.answerError(msg, err)
		}
	}
}

// answerError answers a synchronous request edged cannot serve, so the sender fails now rather than at its
// timeout.
func (e *Edged) answerError(req model.Message, cause error) {
	resp := model.NewErrorMessage(&req, cause.Error())
	resp.Router.Source = modules.Edged
	if err := e.bus.SendResp(*resp); err != nil {
		klog.V(4).InfoS("Error answer not delivered", "msgID", req.Header.ID, "err", err)
	}
}
