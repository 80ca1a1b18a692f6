// Package edgecontroller is the cloud half of node and pod management for edge nodes (spec §6).
//
// Downstream it watches Nodes labelled node-role.kubernetes.io/edge, the Pods bound to them and the ConfigMaps and
// Secrets those Pods use, and hands every change to CloudHub addressed to the node concerned. CloudHub's ObjectSync
// records drop what a node already has, so resending (on connect, on binding) is cheap and is how convergence is
// guaranteed. Upstream it applies what edges report to the API server and answers their queries, in both protocol
// generations: KubeEdge v1.7's own agent (nodestatus, podstatus) and v1.2x's bridged kubelet (node, nodepatch,
// podpatch, lease, ...).
//
// Every request is first put to the node authorizer (pkg/security/nodeauthz): a node acts only on itself, its own
// pods and what they reference. The authorizer reads the same pod informer as the module, so both see a pod at the
// same moment.
//
// The module reads client-go informers rather than cloudcore's controller-runtime cache: it needs indexes (pods by
// node and by referenced ConfigMap/Secret), a field-selected pod watch and add/update/delete events with the old
// object. cloudcore creates them once (Informers) and shares them with the authorizer; without shared ones, each
// Start creates and stops its own.
package edgecontroller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// Defaults.
const (
	// DefaultRequestTimeout bounds the API calls made for one edge request. Edges give up after 60 s, so an answer
	// must leave before that.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultNodeUpdateFrequency is KubeEdge's nodeUpdateFrequency.
	DefaultNodeUpdateFrequency = 10 * time.Second
	// defaultQueueSize and defaultWorkers apply to request kinds the config does not size.
	defaultQueueSize = 1024
	defaultWorkers   = 4
	// eventBuffer decouples informer callbacks from message sending; informers buffer the rest themselves.
	eventBuffer = 256
)

// Options configure the controller.
type Options struct {
	// Bus carries messages to CloudHub and holds this module's mailbox.
	Bus  *beehive.Bus
	Kube kubernetes.Interface
	// Config is cloudcore's modules.edgeController: enable, nodeUpdateFrequency (s), buffer and load maps keyed by
	// KubeEdge's names ("patchNode" / "patchNodeWorkers", ...).
	Config v1alpha1.EdgeController
	// RequestTimeout bounds the API calls of one edge request; DefaultRequestTimeout when zero.
	RequestTimeout time.Duration
	// Now is the clock for heartbeats and condition transitions; time.Now when nil.
	Now func() time.Time
	// Informers, when set, are shared caches that cloudcore starts and stops; Authorizer must then be built on
	// their pod informer. When nil, each Start creates its own informers and authorizer.
	Informers  *Informers
	Authorizer *nodeauthz.Authorizer
}

// Informers are the caches EdgeController reads.
type Informers struct {
	core informers.SharedInformerFactory // nodes, configmaps, secrets
	pods informers.SharedInformerFactory // pods bound to some node
}

// NewInformers creates (without starting) every informer EdgeController reads, so that a caller sharing them can
// start them all at once.
func NewInformers(kube kubernetes.Interface) *Informers {
	strip := informers.WithTransform(stripManagedFields)
	inf := &Informers{
		core: informers.NewSharedInformerFactoryWithOptions(kube, 0, strip),
		// Unbound pods are the scheduler's business; not watching them saves memory in big clusters.
		pods: informers.NewSharedInformerFactoryWithOptions(kube, 0, strip,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
			})),
	}
	inf.Pods()
	inf.Nodes()
	inf.core.Core().V1().ConfigMaps().Informer()
	inf.core.Core().V1().Secrets().Informer()
	return inf
}

// Pods is the informer of pods bound to nodes.
func (i *Informers) Pods() cache.SharedIndexInformer { return i.pods.Core().V1().Pods().Informer() }

// Nodes is the Node informer.
func (i *Informers) Nodes() cache.SharedIndexInformer { return i.core.Core().V1().Nodes().Informer() }

// NodeLister lists Nodes from the cache.
func (i *Informers) NodeLister() corelisters.NodeLister { return i.core.Core().V1().Nodes().Lister() }

// Start starts every informer until stop is closed.
func (i *Informers) Start(stop <-chan struct{}) {
	i.core.Start(stop)
	i.pods.Start(stop)
}

// WaitForCacheSync waits until every informer has synced and reports whether all did before ctx ended.
func (i *Informers) WaitForCacheSync(ctx context.Context) bool {
	for _, f := range []informers.SharedInformerFactory{i.core, i.pods} {
		for _, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return false
			}
		}
	}
	return true
}

// Shutdown stops the informers and waits for their goroutines.
func (i *Informers) Shutdown() {
	i.core.Shutdown()
	i.pods.Shutdown()
}

// Controller is the edgecontroller module.
type Controller struct {
	opts Options
}

// New returns the edgecontroller module. Everything it runs is created by Start and stopped before Start returns.
func New(opts Options) *Controller {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Controller{opts: opts}
}

func (c *Controller) Name() string  { return modules.EdgeController }
func (c *Controller) Group() string { return modules.EdgeController }
func (c *Controller) Enable() bool  { return c.opts.Config.Enable }

// Start runs the informers, the downstream loop and the request workers until ctx is done.
func (c *Controller) Start(ctx context.Context) error {
	if c.opts.Bus == nil || c.opts.Kube == nil {
		return errors.New("edgecontroller: Bus and Kube are required")
	}
	r, err := newRun(c.opts)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// run is one Start's worth of state; nothing outlives it but the shared informers.
type run struct {
	opts Options
	freq time.Duration

	inf        *Informers
	ownInf     bool // inf was created by this run, which starts and stops it
	authz      *nodeauthz.Authorizer
	pods       cache.SharedIndexInformer
	podLister  corelisters.PodLister
	nodes      corelisters.NodeLister
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister

	pools    map[string]*pool
	wg       sync.WaitGroup // the downstream loop, the pool workers and the autonomy workers
	down     *downstream
	autonomy *autonomy
}

func newRun(opts Options) (*run, error) {
	freq := time.Duration(opts.Config.NodeUpdateFrequency) * time.Second
	if freq <= 0 {
		freq = DefaultNodeUpdateFrequency
	}
	r := &run{opts: opts, freq: freq, inf: opts.Informers, authz: opts.Authorizer, pools: make(map[string]*pool)}
	if r.inf == nil {
		r.inf, r.ownInf = NewInformers(opts.Kube), true
		authz, err := nodeauthz.New(nodeauthz.Options{Pods: r.inf.Pods(), Nodes: r.inf.NodeLister()})
		if err != nil {
			return nil, err
		}
		r.authz = authz
	}
	if r.authz == nil {
		return nil, errors.New("edgecontroller: shared Informers need the Authorizer built on them")
	}
	r.pods = r.inf.Pods()
	r.podLister = r.inf.pods.Core().V1().Pods().Lister()
	r.nodes = r.inf.NodeLister()
	r.configMaps = r.inf.core.Core().V1().ConfigMaps().Lister()
	r.secrets = r.inf.core.Core().V1().Secrets().Lister()
	r.autonomy = newAutonomy(opts.Kube, r.podLister, r.pods.GetIndexer(), r.nodes, opts.RequestTimeout)
	r.down = newDownstream(r)
	return r, nil
}

// managed fields are server bookkeeping: dropping them saves cache memory and edge bandwidth.
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

func (r *run) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer func() {
		cancel()
		r.autonomy.queue.ShutDown() // its workers return; the queue's own goroutine ends
		if r.ownInf {
			r.inf.Shutdown()
		}
		r.wg.Wait()
	}()

	if err := addPodIndexers(r.pods); err != nil {
		return err
	}
	handlers, err := r.down.register(ctx)
	if err != nil {
		return err
	}
	defer handlers.remove()
	if r.ownInf {
		r.inf.Start(ctx.Done())
	}
	if !r.inf.WaitForCacheSync(ctx) {
		if parent.Err() != nil {
			return nil
		}
		return errors.New("edgecontroller: informer caches did not sync")
	}
	klog.InfoS("EdgeController caches synced")
	// Only now: edge-ness and references are read from the listers, which must be complete.
	r.wg.Go(func() { r.down.loop(ctx) })
	for range autonomyWorkers {
		r.wg.Go(func() { r.autonomy.run(ctx) })
	}
	return r.opts.Bus.Serve(ctx, modules.EdgeController, func(msg model.Message) { r.dispatch(ctx, msg) })
}

// dispatch routes one mailbox message. It never waits on the API server: requests go to bounded pools and are
// refused when their pool is full.
func (r *run) dispatch(ctx context.Context, msg model.Message) {
	op := msg.Router.Operation
	if msg.Router.Source == modules.CloudHub && (op == model.ConnectedOperation || op == model.DisconnectedOperation) {
		r.connectionEvent(msg)
		return
	}
	req := &request{msg: msg}
	res, err := resource.ParseCloud(msg.Router.Resource)
	if err != nil {
		r.refuse(ctx, req, fmt.Errorf("%w: %w", errBadInput, err))
		return
	}
	req.res = res
	h, ok := lookup(res.Type, op)
	if !ok {
		r.refuse(ctx, req, fmt.Errorf("%w: unsupported operation %q on resource type %q (%s)", errBadInput, op, res.Type, msg.Router.Resource))
		return
	}
	p := r.pool(h.pool)
	if !p.submit(ctx, func(ctx context.Context) { r.serve(ctx, h, req) }) {
		r.finish(ctx, h, req, nil, fmt.Errorf("%w: %s queue is full", errBusy, h.pool))
	}
}

// refuse answers a message no handler takes, if its sender is likely waiting.
func (r *run) refuse(ctx context.Context, req *request, err error) {
	if !expectsReply(req.msg, req.res.Type) {
		klog.InfoS("Ignoring message from edge", "msg", req.msg.String(), "err", err)
		return
	}
	r.finish(ctx, handler{shape: shapeStatus}, req, nil, err)
}

// expectsReply guesses whether an edge waits for an answer. header.sync is not reliable (KubeEdge's edgehub clears
// it on the wire), so request-style operations count too; events are fire-and-forget.
func expectsReply(msg model.Message, resourceType string) bool {
	if resourceType == resource.TypeEvent || resourceType == resource.TypeRuleStatus {
		return false
	}
	switch msg.Router.Operation {
	case model.InsertOperation, model.UpdateOperation, model.PatchOperation, model.DeleteOperation, model.QueryOperation:
		return true
	}
	return msg.Header.Sync
}

func (r *run) pool(name string) *pool {
	if p, ok := r.pools[name]; ok {
		return p
	}
	size, workers := defaultQueueSize, defaultWorkers
	if v, ok := r.opts.Config.Buffer[name]; ok && v > 0 {
		size = int(v)
	}
	if v, ok := r.opts.Config.Load[name+"Workers"]; ok && v > 0 {
		workers = int(v)
	}
	p := newPool(name, size, workers, &r.wg)
	r.pools[name] = p
	return p
}

func (r *run) connectionEvent(msg model.Message) {
	node, err := resource.NodeID(msg.Router.Resource)
	if err != nil {
		klog.InfoS("Ignoring connection event without a node", "msg", msg.String(), "err", err)
		return
	}
	if msg.Router.Operation == model.DisconnectedOperation {
		klog.V(2).InfoS("Edge node disconnected", "node", node)
		return
	}
	klog.V(2).InfoS("Edge node connected, resyncing it", "node", node)
	r.down.requestResync(node)
}

// send hands msg to CloudHub.
func (r *run) send(ctx context.Context, msg *model.Message) {
	err := r.opts.Bus.Send(ctx, modules.CloudHub, *msg)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		klog.V(2).InfoS("Message not sent: shutting down", "msg", msg.String())
	default:
		klog.ErrorS(err, "Cannot send message to cloudhub", "msg", msg.String())
	}
}

func (r *run) now() time.Time { return r.opts.Now() }

// isEdgeNode reports whether name is a Node carrying the edge role label, per the informer cache.
func (r *run) isEdgeNode(name string) bool {
	n, err := r.nodes.Get(name)
	return err == nil && isEdge(n)
}

func isEdge(n *corev1.Node) bool {
	_, ok := n.Labels[EdgeRoleLabel]
	return ok
}
