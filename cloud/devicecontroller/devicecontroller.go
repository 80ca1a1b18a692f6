// Package devicecontroller is the cloud half of the device twin (spec §7.2: KubeEdge v1.7,
// devices.kubeedge.io/v1alpha2).
//
// Downstream it watches Devices and DeviceModels and tells each edge node which devices it serves and what their
// desired values are: membership updates when a device is bound, moved or removed, twin/cloud_updated when desired
// values change, and the full list again whenever the node connects. Upstream it writes what edges report into
// status.twins[].reported, one device at a time with optimistic concurrency, so that a web app writing desired
// values at the same moment never loses its change, and answers each report so the edge stops resending it.
//
// The module owns its informers, built on the controller-runtime client it is given, rather than sharing
// cloudcore's cache: the downstream diff needs ordered add/update/delete events with a by-name index, and owning
// them ties their goroutines to Start. Writes go straight to the API server through the same client.
package devicecontroller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// Defaults.
const (
	// DefaultRequestTimeout bounds the API calls made for one edge report.
	DefaultRequestTimeout = 30 * time.Second
	// defaultQueueSize and defaultWorkers apply when the config does not size the upstream pool
	// (buffer "updateDeviceStatus", load "updateDeviceStatusWorkers").
	defaultQueueSize = 1024
	defaultWorkers   = 1
	// eventTimeout bounds writing one Kubernetes Event, which the downstream loop waits for.
	eventTimeout = 5 * time.Second
)

// Options configure the controller.
type Options struct {
	// Bus carries messages to CloudHub and holds this module's mailbox.
	Bus *beehive.Bus
	// Client lists and watches Devices and DeviceModels, and writes Devices and Events, directly against the API
	// server; its scheme must know devices.kubeedge.io/v1alpha2 and core/v1 (pkg/apis/scheme). cloudcore passes
	// client.NewWithWatch(restConfig, client.Options{Scheme: scheme}).
	Client client.WithWatch
	// Config is cloudcore's modules.deviceController. Buffer "updateDeviceStatus" sizes the upstream queue, load
	// "updateDeviceStatusWorkers" the upstream workers.
	Config v1alpha1.DeviceController
	// RequestTimeout bounds the API calls of one edge report; DefaultRequestTimeout when zero.
	RequestTimeout time.Duration
	// Now is the clock for message and event timestamps; time.Now when nil.
	Now func() time.Time
}

// Controller is the devicecontroller module.
type Controller struct {
	opts Options
	// onReady, when set (tests), is called once the caches are synced and the initial memberships are sent.
	onReady func()
}

// New returns the devicecontroller module. Everything it runs is created by Start and stopped before Start returns.
func New(opts Options) *Controller {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Controller{opts: opts}
}

func (c *Controller) Name() string  { return modules.DeviceController }
func (c *Controller) Group() string { return modules.DeviceController }
func (c *Controller) Enable() bool  { return c.opts.Config.Enable }

// Start runs the informers, the downstream loop and the upstream workers until ctx is done.
func (c *Controller) Start(ctx context.Context) error {
	if c.opts.Bus == nil || c.opts.Client == nil {
		return errors.New("devicecontroller: Bus and Client are required")
	}
	r := newRun(c.opts)
	r.onReady = c.onReady
	return r.run(ctx)
}

// Index names.
const (
	// byName indexes Devices by metadata.name: v1.7 edges name devices without their namespace.
	byName = "name"
)

// run is one Start's worth of state; nothing outlives it.
type run struct {
	opts    Options
	devices cache.SharedIndexInformer
	models  cache.SharedIndexInformer
	down    *downstream
	up      *upstream
	onReady func()
	wg      sync.WaitGroup // informers, the downstream loop, the upstream workers
}

func newRun(opts Options) *run {
	r := &run{
		opts: opts,
		devices: newInformer(opts.Client, &v1alpha2.Device{}, func() client.ObjectList { return &v1alpha2.DeviceList{} },
			cache.Indexers{byName: func(obj any) ([]string, error) {
				a, err := meta.Accessor(obj)
				if err != nil {
					return nil, fmt.Errorf("indexing device by name: %w", err)
				}
				return []string{a.GetName()}, nil
			}}),
		models: newInformer(opts.Client, &v1alpha2.DeviceModel{}, func() client.ObjectList { return &v1alpha2.DeviceModelList{} }, nil),
	}
	r.down = newDownstream(r)
	r.up = newUpstream(r)
	return r
}

// newInformer builds an informer over c. Streaming lists are switched off: the plain list-then-watch protocol works
// with every client, the controller-runtime fake included.
func newInformer(c client.WithWatch, obj client.Object, newList func() client.ObjectList, idx cache.Indexers) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := newList()
			// Limit and Continue must be repeated: controller-runtime takes them from its own fields, not Raw.
			if err := c.List(ctx, list, &client.ListOptions{Raw: &o, Limit: o.Limit, Continue: o.Continue}); err != nil {
				return nil, fmt.Errorf("listing %T: %w", list, err)
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			list := newList()
			w, err := c.Watch(ctx, list, &client.ListOptions{Raw: &o})
			if err != nil {
				return nil, fmt.Errorf("watching %T: %w", list, err)
			}
			return w, nil
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, noWatchList{}), obj,
		cache.SharedIndexInformerOptions{Indexers: idx})
	// Managed fields are server bookkeeping; dropping them saves cache memory. SetTransform only fails once the
	// informer runs.
	_ = inf.SetTransform(func(o any) (any, error) {
		if a, err := meta.Accessor(o); err == nil {
			a.SetManagedFields(nil)
		}
		return o, nil
	})
	return inf
}

type noWatchList struct{}

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

func (r *run) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer func() {
		cancel()
		r.wg.Wait()
	}()

	if err := r.down.register(ctx); err != nil {
		return err
	}
	r.wg.Go(func() { r.devices.RunWithContext(ctx) })
	r.wg.Go(func() { r.models.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), r.devices.HasSynced, r.models.HasSynced) {
		if parent.Err() != nil {
			return nil
		}
		return errors.New("devicecontroller: informer caches did not sync")
	}
	klog.InfoS("DeviceController caches synced")
	// Announce from the complete cache before handling events or connections, so that the first membership a
	// connecting node gets lists all its devices; the queued initial add events then find nothing new.
	r.down.seed(ctx)
	r.wg.Go(func() { r.down.loop(ctx) })
	r.up.start(ctx, &r.wg)
	if r.onReady != nil {
		r.onReady()
	}
	return r.opts.Bus.Serve(ctx, modules.DeviceController, func(msg model.Message) { r.dispatch(ctx, msg) })
}

// dispatch routes one mailbox message without waiting on the API server.
func (r *run) dispatch(ctx context.Context, msg model.Message) {
	op, res := msg.Router.Operation, msg.Router.Resource
	if msg.Router.Source == modules.CloudHub && (op == model.ConnectedOperation || op == model.DisconnectedOperation) {
		node, err := resource.NodeID(res)
		if err != nil {
			klog.InfoS("Ignoring connection event without a node", "msg", msg.String(), "err", err)
			return
		}
		if op == model.ConnectedOperation {
			klog.V(2).InfoS("Edge node connected, resending its devices", "node", node)
			r.down.requestResync(node)
		}
		return
	}
	if node, wire, err := resource.StripNodePrefix(res); err == nil && wire == resource.TypeMembershipDetail {
		// A v1.7 edge asks for its full device list after reconnecting.
		r.down.requestResync(node)
		return
	}
	dev, err := resource.ParseDevice(res)
	if err != nil || dev.NodeID == "" || (dev.Sub != resource.TypeTwinEdgeUpdated && dev.Sub != resource.TypeStateUpdate) {
		klog.InfoS("Ignoring message not meant for devicecontroller", "msg", msg.String(), "err", err)
		return
	}
	if !r.up.submit(upstreamReq{msg: msg, dev: dev}) {
		// No answer: the edge resends unconfirmed reports, by which time the queue may have drained.
		klog.InfoS("Dropping device report: upstream queue is full", "msg", msg.String(), "device", dev.ID(), "node", dev.NodeID)
	}
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
