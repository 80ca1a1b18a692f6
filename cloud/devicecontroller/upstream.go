package devicecontroller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/twin"
)

// Annotations recording the state an edge reports for a device: v1alpha2 has no status field for it.
const (
	AnnotationState      = "tether.io/device-state"
	AnnotationLastOnline = "tether.io/device-last-online"
)

// contentOK is the answer to a report that was applied (or had nothing to apply).
const contentOK = "OK"

// errRejected marks reports that can never succeed (bad content, unknown device): they are answered with an
// error, which also stops the edge resending them. Other failures get no answer, so the edge resends.
var errRejected = errors.New("device report rejected")

type upstreamReq struct {
	msg model.Message
	dev resource.Device // parsed from the resource; NodeID is set
}

// upstream applies edge reports. Reports are sharded by device name over the workers, so the reports of one
// device are applied in arrival order and a stale value never overwrites a newer one.
type upstream struct {
	r      *run
	shards []chan upstreamReq
}

func newUpstream(r *run) *upstream {
	size, workers := defaultQueueSize, defaultWorkers
	if v := r.opts.Config.Buffer["updateDeviceStatus"]; v > 0 {
		size = int(v)
	}
	if v := r.opts.Config.Load["updateDeviceStatusWorkers"]; v > 0 {
		workers = int(v)
	}
	u := &upstream{r: r, shards: make([]chan upstreamReq, workers)}
	for i := range u.shards {
		u.shards[i] = make(chan upstreamReq, max(size/workers, 1))
	}
	return u
}

func (u *upstream) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, ch := range u.shards {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case req := <-ch:
					u.handle(ctx, req)
				}
			}
		})
	}
}

// submit queues req without blocking; false means its queue is full.
func (u *upstream) submit(req upstreamReq) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(req.dev.Name))
	select {
	case u.shards[h.Sum32()%uint32(len(u.shards))] <- req:
		return true
	default:
		return false
	}
}

func (u *upstream) handle(parent context.Context, req upstreamReq) {
	ctx, cancel := context.WithTimeout(parent, u.r.opts.RequestTimeout)
	defer cancel()
	var err error
	switch req.dev.Sub {
	case resource.TypeTwinEdgeUpdated:
		err = u.updateReported(ctx, req)
	case resource.TypeStateUpdate:
		err = u.updateState(ctx, req)
	default:
		err = fmt.Errorf("%w: unsupported resource %q", errRejected, req.msg.Router.Resource)
	}
	switch {
	case err == nil:
		klog.V(4).InfoS("Applied device report", "msg", req.msg.String(), "device", req.dev.ID(), "node", req.dev.NodeID)
		u.reply(parent, req, contentOK)
	case parent.Err() != nil:
	case errors.Is(err, errRejected):
		klog.InfoS("Rejecting device report", "msg", req.msg.String(), "node", req.dev.NodeID, "err", err)
		u.reply(parent, req, replyError{err})
	default:
		klog.ErrorS(err, "Cannot apply device report; the edge will resend it", "msg", req.msg.String(), "node", req.dev.NodeID)
	}
}

// reply answers the report the way v1.7 did: a response on node/{node}/twin whose parent is the report.
func (u *upstream) reply(ctx context.Context, req upstreamReq, content any) {
	res, err := resource.AddNodePrefix(req.dev.NodeID, resource.TypeTwin)
	if err != nil {
		klog.ErrorS(err, "Cannot address reply", "msg", req.msg.String())
		return
	}
	u.r.send(ctx, model.NewMessage(req.msg.Header.ID).
		BuildRouter(modules.DeviceController, model.GroupTwin, res, model.ResponseOperation).
		FillBody(content))
}

// updateReported writes the actual values of a twin/edge_updated report into status.twins[].reported. It patches
// with the resourceVersion it read, so a concurrent change of desired values makes the patch fail with a conflict
// and the report is re-applied on the fresh object instead of writing back a stale desired value.
func (u *upstream) updateReported(ctx context.Context, req upstreamReq) error {
	var upd twin.DeviceTwinUpdate
	if err := req.msg.UnmarshalContent(&upd); err != nil {
		return fmt.Errorf("%w: twin report for device %q: %w", errRejected, req.dev.ID(), err)
	}
	key, err := u.resolve(req.dev)
	if err != nil {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		dev, err := u.get(ctx, key, req.dev.NodeID)
		if err != nil {
			return err
		}
		base := dev.DeepCopy()
		if !applyReported(dev, upd.Twin) {
			return nil
		}
		if err := u.r.opts.Client.Patch(ctx, dev, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("patching reported twins of device %s: %w", key, err)
		}
		return nil
	})
}

// applyReported copies actual values into dev's reported twins, adding a twin for a property the Device does not
// list yet. Desired values are never touched. It reports whether anything changed.
func applyReported(dev *v1alpha2.Device, twins map[string]*twin.MsgTwin) bool {
	changed := false
	for _, name := range slices.Sorted(maps.Keys(twins)) {
		t := twins[name]
		if name == "" || t == nil || t.Actual == nil || t.Actual.Value == nil || (t.Metadata != nil && t.Metadata.Type == twin.TypeDeleted) {
			continue
		}
		i := slices.IndexFunc(dev.Status.Twins, func(tw v1alpha2.Twin) bool { return tw.PropertyName == name })
		if i < 0 {
			dev.Status.Twins = append(dev.Status.Twins, v1alpha2.Twin{PropertyName: name})
			i = len(dev.Status.Twins) - 1
		}
		rep := &dev.Status.Twins[i].Reported
		meta := maps.Clone(rep.Metadata)
		if meta == nil {
			meta = make(map[string]string, 2)
		}
		if t.Actual.Metadata != nil && t.Actual.Metadata.Timestamp != 0 {
			meta["timestamp"] = strconv.FormatInt(t.Actual.Metadata.Timestamp, 10)
		}
		if t.Metadata != nil && t.Metadata.Type != "" {
			meta["type"] = t.Metadata.Type
		}
		if rep.Value == *t.Actual.Value && maps.Equal(rep.Metadata, meta) {
			continue
		}
		rep.Value, rep.Metadata = *t.Actual.Value, meta
		changed = true
	}
	return changed
}

// updateState records a state/update report as annotations. A merge patch of two annotation keys touches nothing
// else, so it needs no concurrency check.
func (u *upstream) updateState(ctx context.Context, req upstreamReq) error {
	var upd stateReport
	if err := req.msg.UnmarshalContent(&upd); err != nil {
		return fmt.Errorf("%w: state report for device %q: %w", errRejected, req.dev.ID(), err)
	}
	state, lastOnline := upd.state()
	if state == "" {
		return fmt.Errorf("%w: state report for device %q has no state", errRejected, req.dev.ID())
	}
	key, err := u.resolve(req.dev)
	if err != nil {
		return err
	}
	dev, err := u.get(ctx, key, req.dev.NodeID)
	if err != nil {
		return err
	}
	if dev.Annotations[AnnotationState] == state && dev.Annotations[AnnotationLastOnline] == lastOnline {
		return nil
	}
	base := dev.DeepCopy()
	if dev.Annotations == nil {
		dev.Annotations = make(map[string]string, 2)
	}
	dev.Annotations[AnnotationState] = state
	if lastOnline != "" {
		dev.Annotations[AnnotationLastOnline] = lastOnline
	} else {
		delete(dev.Annotations, AnnotationLastOnline)
	}
	if err := u.r.opts.Client.Patch(ctx, dev, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("patching state of device %s: %w", key, err)
	}
	return nil
}

// resolve finds the Device an edge means. Namespaced IDs are taken as they are. A v1.7 ID is a bare name: among the
// cached Devices of that name bound to the reporting node, the only one, or else the one in "default".
func (u *upstream) resolve(d resource.Device) (types.NamespacedName, error) {
	if d.Namespace != "" {
		return types.NamespacedName{Namespace: d.Namespace, Name: d.Name}, nil
	}
	objs, err := u.r.devices.GetIndexer().ByIndex(byName, d.Name)
	if err != nil {
		return types.NamespacedName{}, fmt.Errorf("looking up device %q: %w", d.Name, err)
	}
	var bound []types.NamespacedName
	for _, obj := range objs {
		if dev, ok := obj.(*v1alpha2.Device); ok {
			if node, err := nodeOf(dev); err == nil && node == d.NodeID {
				bound = append(bound, keyOf(dev))
			}
		}
	}
	switch {
	case len(bound) == 1:
		return bound[0], nil
	case len(bound) == 0 && len(objs) == 0:
		return types.NamespacedName{}, fmt.Errorf("%w: device %q not found", errRejected, d.Name)
	case len(bound) == 0:
		return types.NamespacedName{}, fmt.Errorf("%w: device %q is not bound to node %q", errRejected, d.Name, d.NodeID)
	}
	if i := slices.IndexFunc(bound, func(k types.NamespacedName) bool { return k.Namespace == "default" }); i >= 0 {
		return bound[i], nil
	}
	slices.SortFunc(bound, compareKeys)
	return types.NamespacedName{}, fmt.Errorf("%w: device name %q is ambiguous on node %q: %v", errRejected, d.Name, d.NodeID, bound)
}

// get reads the Device from the API server (not the cache: a patch must start from the latest version) and checks
// that it is still bound to node, so a node cannot write a device it no longer serves.
func (u *upstream) get(ctx context.Context, key types.NamespacedName, node string) (*v1alpha2.Device, error) {
	dev := &v1alpha2.Device{}
	if err := u.r.opts.Client.Get(ctx, key, dev); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: device %s not found", errRejected, key)
		}
		return nil, fmt.Errorf("reading device %s: %w", key, err)
	}
	if n, err := nodeOf(dev); err != nil || n != node {
		return nil, fmt.Errorf("%w: device %s is not bound to node %q", errRejected, key, node)
	}
	return dev, nil
}
