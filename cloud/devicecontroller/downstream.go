package devicecontroller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/twin"
)

// Event reasons.
const (
	// ReasonInvalidNodeSelector: the Device names no single node, so no edge serves it.
	ReasonInvalidNodeSelector = "InvalidNodeSelector"
)

// errNoNode is wrapped by every reason a Device is bound to no node.
var errNoNode = errors.New("device is bound to no node")

// nodeOf returns the node a Device is bound to by KubeEdge v1.7's rule: the first value of the first match
// expression of the first term. Key and operator are ignored, as v1.7 did, so the tutorial's YAML keeps working;
// what v1.7 crashed on is an error here.
func nodeOf(d *v1alpha2.Device) (string, error) {
	sel := d.Spec.NodeSelector
	switch {
	case sel == nil:
		return "", fmt.Errorf("%w: spec.nodeSelector is missing", errNoNode)
	case len(sel.NodeSelectorTerms) == 0:
		return "", fmt.Errorf("%w: spec.nodeSelector has no nodeSelectorTerms", errNoNode)
	case len(sel.NodeSelectorTerms[0].MatchExpressions) == 0:
		return "", fmt.Errorf("%w: spec.nodeSelector.nodeSelectorTerms[0] has no matchExpressions", errNoNode)
	}
	expr := sel.NodeSelectorTerms[0].MatchExpressions[0]
	switch {
	case len(expr.Values) == 0:
		return "", fmt.Errorf("%w: spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0] (operator %q) has no values; "+
			"it must list exactly one node name", errNoNode, expr.Operator)
	case len(expr.Values) > 1:
		return "", fmt.Errorf("%w: spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0] lists %d values %q; "+
			"it must list exactly one node name", errNoNode, len(expr.Values), expr.Values)
	}
	node := expr.Values[0]
	if _, err := resource.BuildNode(node); err != nil {
		return "", fmt.Errorf("%w: spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values[0] %q is not a node name: %w",
			errNoNode, node, err)
	}
	return node, nil
}

// desiredTwin is what an edge was told about one twin; a change of either field is sent.
type desiredTwin struct {
	value string
	typ   string
}

// announcement is what a node was told about one device.
type announcement struct {
	node   string
	device *v1alpha2.Device // the object the announcement was computed from
	twins  map[string]desiredTwin
}

type eventKind int

const (
	deviceUpsert eventKind = iota + 1
	deviceDelete
	modelChange
)

type event struct {
	kind   eventKind
	device *v1alpha2.Device     // deviceUpsert
	key    types.NamespacedName // deviceDelete: the device; modelChange: the model
}

// downstream turns Device and DeviceModel changes into messages for edge nodes. One goroutine (loop) owns the
// announced state, so membership, twin updates and resyncs leave in the order the changes happened.
type downstream struct {
	r      *run
	events chan event

	resyncMu     sync.Mutex
	resyncNodes  map[string]struct{}
	resyncSignal chan struct{} // capacity 1: "resyncNodes is not empty"

	// Owned by the loop goroutine (and seed, before the loop starts).
	announced map[types.NamespacedName]*announcement
	invalid   map[types.NamespacedName]string // the selector problem last reported per device
}

func newDownstream(r *run) *downstream {
	size := int(r.opts.Config.Buffer["deviceEvent"])
	return &downstream{
		r: r,
		// Informer handlers block on this channel; the informer buffers behind them, so a small one is enough.
		events:       make(chan event, max(size, 1)),
		resyncNodes:  make(map[string]struct{}),
		resyncSignal: make(chan struct{}, 1),
		announced:    make(map[types.NamespacedName]*announcement),
		invalid:      make(map[types.NamespacedName]string),
	}
}

// register installs the informer handlers; they only queue events, so they stop blocking once ctx is done.
func (d *downstream) register(ctx context.Context) error {
	push := func(ev event) {
		select {
		case d.events <- ev:
		case <-ctx.Done():
		}
	}
	deviceUp := func(obj any) {
		if dev, ok := obj.(*v1alpha2.Device); ok {
			push(event{kind: deviceUpsert, device: dev})
		}
	}
	if _, err := d.r.devices.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    deviceUp,
		UpdateFunc: func(_, obj any) { deviceUp(obj) },
		DeleteFunc: func(obj any) {
			if key, ok := objectKey(obj); ok {
				push(event{kind: deviceDelete, key: key})
			}
		},
	}); err != nil {
		return fmt.Errorf("devicecontroller: adding device handler: %w", err)
	}
	modelChanged := func(obj any) {
		if key, ok := objectKey(obj); ok {
			push(event{kind: modelChange, key: key})
		}
	}
	if _, err := d.r.models.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    modelChanged,
		UpdateFunc: func(_, obj any) { modelChanged(obj) },
		DeleteFunc: modelChanged,
	}); err != nil {
		return fmt.Errorf("devicecontroller: adding device model handler: %w", err)
	}
	return nil
}

// objectKey accepts objects and the tombstones of deletes the informer missed.
func objectKey(obj any) (types.NamespacedName, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}, true
}

// seed announces every cached device.
func (d *downstream) seed(ctx context.Context) {
	objs := d.r.devices.GetStore().List()
	devs := make([]*v1alpha2.Device, 0, len(objs))
	for _, obj := range objs {
		if dev, ok := obj.(*v1alpha2.Device); ok {
			devs = append(devs, dev)
		}
	}
	slices.SortFunc(devs, func(a, b *v1alpha2.Device) int {
		return compareKeys(keyOf(a), keyOf(b))
	})
	for _, dev := range devs {
		d.upsert(ctx, dev)
	}
}

func (d *downstream) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.events:
			switch ev.kind {
			case deviceUpsert:
				d.upsert(ctx, ev.device)
			case deviceDelete:
				d.remove(ctx, ev.key)
			case modelChange:
				d.modelChanged(ctx, ev.key)
			}
		case <-d.resyncSignal:
			for _, node := range d.takeResyncs() {
				d.resync(ctx, node)
			}
		}
	}
}

// requestResync asks the loop to resend node's devices; requests for one node coalesce.
func (d *downstream) requestResync(node string) {
	d.resyncMu.Lock()
	d.resyncNodes[node] = struct{}{}
	d.resyncMu.Unlock()
	select {
	case d.resyncSignal <- struct{}{}:
	default:
	}
}

func (d *downstream) takeResyncs() []string {
	d.resyncMu.Lock()
	defer d.resyncMu.Unlock()
	nodes := slices.Sorted(maps.Keys(d.resyncNodes))
	clear(d.resyncNodes)
	return nodes
}

// upsert brings the edges in line with dev: announce it, move it, or send its changed desired values.
func (d *downstream) upsert(ctx context.Context, dev *v1alpha2.Device) {
	key := keyOf(dev)
	prev := d.announced[key]
	node, err := nodeOf(dev)
	if err != nil {
		d.reportInvalid(ctx, dev, err)
		if prev != nil {
			delete(d.announced, key)
			d.unannounce(ctx, prev)
		}
		return
	}
	delete(d.invalid, key)
	cur := &announcement{node: node, device: dev, twins: d.desiredTwins(dev)}
	d.announced[key] = cur
	switch {
	case prev == nil:
		klog.V(2).InfoS("Binding device to node", "device", klog.KObj(dev), "node", node)
		d.sendMembership(ctx, node, []twin.Device{d.fullDevice(cur)}, nil)
	case prev.node != node:
		klog.V(2).InfoS("Moving device to another node", "device", klog.KObj(dev), "from", prev.node, "to", node)
		d.unannounce(ctx, prev)
		d.sendMembership(ctx, node, []twin.Device{d.fullDevice(cur)}, nil)
	default:
		if twins := d.changedTwins(prev.twins, cur); len(twins) > 0 {
			d.sendCloudUpdated(ctx, node, dev.Name, twins)
		}
	}
}

func (d *downstream) remove(ctx context.Context, key types.NamespacedName) {
	delete(d.invalid, key)
	prev, ok := d.announced[key]
	if !ok {
		return
	}
	delete(d.announced, key)
	klog.V(2).InfoS("Unbinding deleted device", "device", key, "node", prev.node)
	d.unannounce(ctx, prev)
}

// modelChanged re-evaluates the devices of a model: twin types fall back to the model's property types.
func (d *downstream) modelChanged(ctx context.Context, model types.NamespacedName) {
	var devs []*v1alpha2.Device
	for key, a := range d.announced {
		if key.Namespace == model.Namespace && modelName(a.device) == model.Name {
			devs = append(devs, a.device)
		}
	}
	slices.SortFunc(devs, func(a, b *v1alpha2.Device) int { return compareKeys(keyOf(a), keyOf(b)) })
	for _, dev := range devs {
		d.upsert(ctx, dev)
	}
}

// resync resends everything node should have: the full list as membership/detail, which KubeEdge edges apply as a
// replacement (so devices removed while the node was away go too), and the same devices as a membership update
// for edges that only apply updates.
func (d *downstream) resync(ctx context.Context, node string) {
	var list []*announcement
	for _, a := range d.announced {
		if a.node == node {
			list = append(list, a)
		}
	}
	slices.SortFunc(list, func(a, b *announcement) int { return compareKeys(keyOf(a.device), keyOf(b.device)) })
	devs := make([]twin.Device, 0, len(list))
	for _, a := range list {
		devs = append(devs, d.fullDevice(a))
	}
	klog.V(2).InfoS("Resending node's devices", "node", node, "devices", len(devs))
	res, err := resource.AddNodePrefix(node, resource.TypeMembershipDetail)
	if err != nil {
		klog.ErrorS(err, "Cannot address membership detail", "node", node)
		return
	}
	d.r.send(ctx, d.message(res, twin.MembershipDetail{BaseMessage: d.base(), Devices: devs}))
	if len(devs) > 0 {
		d.sendMembership(ctx, node, devs, nil)
	}
}

// unannounce removes a's device from its node. Edges know devices by bare name, so a same-named device from another
// namespace on that node goes with it; it is announced again right after.
func (d *downstream) unannounce(ctx context.Context, a *announcement) {
	d.sendMembership(ctx, a.node, nil, []twin.Device{removedDevice(a.device)})
	for _, other := range d.announced {
		if other != a && other.node == a.node && other.device.Name == a.device.Name {
			klog.InfoS("Re-announcing device that shares its name with a removed one", "device", klog.KObj(other.device), "node", a.node)
			d.sendMembership(ctx, a.node, []twin.Device{d.fullDevice(other)}, nil)
			return
		}
	}
}

func (d *downstream) sendMembership(ctx context.Context, node string, added, removed []twin.Device) {
	res, err := resource.BuildMembership(node)
	if err != nil {
		klog.ErrorS(err, "Cannot address membership update", "node", node)
		return
	}
	content := twin.MembershipUpdate{BaseMessage: d.base(), AddedDevices: added, RemovedDevices: removed}
	if content.AddedDevices == nil {
		content.AddedDevices = []twin.Device{}
	}
	if content.RemovedDevices == nil {
		content.RemovedDevices = []twin.Device{}
	}
	d.r.send(ctx, d.message(res, content))
}

func (d *downstream) sendCloudUpdated(ctx context.Context, node, device string, twins map[string]*twin.MsgTwin) {
	res, err := resource.BuildDevice(node, "", device, resource.TypeTwinCloudUpdated)
	if err != nil {
		klog.ErrorS(err, "Cannot address twin update", "node", node, "device", device)
		return
	}
	d.r.send(ctx, d.message(res, twin.DeviceTwinUpdate{BaseMessage: d.base(), Twin: twins}))
}

func (d *downstream) message(res string, content any) *model.Message {
	return model.NewMessage("").BuildRouter(modules.DeviceController, model.GroupTwin, res, model.UpdateOperation).FillBody(content)
}

func (d *downstream) base() twin.BaseMessage {
	return twin.BaseMessage{EventID: uuid.NewString(), Timestamp: d.r.now().UnixMilli()}
}

// fullDevice is a's device as a membership entry with all its twins.
func (d *downstream) fullDevice(a *announcement) twin.Device {
	version, ts := cloudVersion(a.device), d.r.now().UnixMilli()
	twins := make(map[string]*twin.MsgTwin, len(a.twins))
	for name, t := range a.twins {
		twins[name] = edgeTwin(t, version, ts)
	}
	return twin.Device{ID: a.device.Name, Name: a.device.Name, Description: a.device.Labels["description"], Twin: twins}
}

// removedDevice is a membership entry naming dev; edges remove by ID.
func removedDevice(dev *v1alpha2.Device) twin.Device {
	return twin.Device{ID: dev.Name, Name: dev.Name, Description: dev.Labels["description"]}
}

// changedTwins returns the twins of cur that differ from prev, and prev's twins cur lacks as type "deleted".
func (d *downstream) changedTwins(prev map[string]desiredTwin, cur *announcement) map[string]*twin.MsgTwin {
	version, ts := cloudVersion(cur.device), d.r.now().UnixMilli()
	out := make(map[string]*twin.MsgTwin)
	for name, t := range cur.twins {
		if p, ok := prev[name]; !ok || p != t {
			out[name] = edgeTwin(t, version, ts)
		}
	}
	for name, p := range prev {
		if _, ok := cur.twins[name]; !ok {
			out[name] = edgeTwin(desiredTwin{value: p.value, typ: twin.TypeDeleted}, version, ts)
		}
	}
	return out
}

func edgeTwin(t desiredTwin, version, ts int64) *twin.MsgTwin {
	value, optional := t.value, false
	return &twin.MsgTwin{
		Expected:        &twin.Value{Value: &value, Metadata: &twin.ValueMetadata{Timestamp: ts}},
		Optional:        &optional,
		Metadata:        &twin.TypeMetadata{Type: t.typ},
		ExpectedVersion: &twin.Version{CloudVersion: version},
	}
}

// cloudVersion is the Device's resourceVersion as the twin's cloud version, as v1.7 did. Resource versions are
// opaque in principle; a non-numeric one becomes 0 instead of failing the device.
func cloudVersion(dev *v1alpha2.Device) int64 {
	v, err := strconv.ParseInt(dev.ResourceVersion, 10, 64)
	if err != nil {
		klog.InfoS("Device resourceVersion is not an integer; sending cloud version 0",
			"device", klog.KObj(dev), "resourceVersion", dev.ResourceVersion)
		return 0
	}
	return v
}

// desiredTwins reads the desired side of dev's twins. A twin's type is its desired metadata "type", else its
// model property's type, else "string" (v1.7's default). The first twin of a property wins.
func (d *downstream) desiredTwins(dev *v1alpha2.Device) map[string]desiredTwin {
	var props []v1alpha2.DeviceProperty
	if name := modelName(dev); name != "" {
		if obj, ok, err := d.r.models.GetStore().GetByKey(dev.Namespace + "/" + name); err == nil && ok {
			if m, ok := obj.(*v1alpha2.DeviceModel); ok {
				props = m.Spec.Properties
			}
		}
	}
	out := make(map[string]desiredTwin, len(dev.Status.Twins))
	for _, t := range dev.Status.Twins {
		if _, dup := out[t.PropertyName]; dup || t.PropertyName == "" {
			continue
		}
		typ := t.Desired.Metadata["type"]
		if typ == "" {
			typ = propertyType(props, t.PropertyName)
		}
		out[t.PropertyName] = desiredTwin{value: t.Desired.Value, typ: typ}
	}
	return out
}

// propertyType maps a model property type to a twin type the edge accepts: it knows no "double" or "bytes".
func propertyType(props []v1alpha2.DeviceProperty, name string) string {
	i := slices.IndexFunc(props, func(p v1alpha2.DeviceProperty) bool { return p.Name == name })
	if i < 0 {
		return twin.TypeString
	}
	switch t := props[i].Type; {
	case t.Int != nil:
		return twin.TypeInt
	case t.Double != nil, t.Float != nil:
		return twin.TypeFloat
	case t.Boolean != nil:
		return twin.TypeBoolean
	}
	return twin.TypeString
}

func modelName(dev *v1alpha2.Device) string {
	if dev.Spec.DeviceModelRef == nil {
		return ""
	}
	return dev.Spec.DeviceModelRef.Name
}

// reportInvalid records why dev is bound to no node, once per distinct reason.
func (d *downstream) reportInvalid(ctx context.Context, dev *v1alpha2.Device, cause error) {
	key := keyOf(dev)
	msg := cause.Error()
	if d.invalid[key] == msg {
		return
	}
	d.invalid[key] = msg
	klog.InfoS("Device not bound to any node", "device", klog.KObj(dev), "reason", msg)
	now := metav1.NewTime(d.r.now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: dev.Name + ".", Namespace: dev.Namespace},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: v1alpha2.SchemeGroupVersion.String(), Kind: "Device",
			Namespace: dev.Namespace, Name: dev.Name, UID: dev.UID, ResourceVersion: dev.ResourceVersion,
		},
		Reason:         ReasonInvalidNodeSelector,
		Message:        msg,
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: modules.DeviceController},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	if err := d.r.opts.Client.Create(ctx, ev); err != nil && ctx.Err() == nil {
		klog.ErrorS(err, "Cannot record event for device", "device", klog.KObj(dev), "reason", ReasonInvalidNodeSelector)
	}
}

func keyOf(dev *v1alpha2.Device) types.NamespacedName {
	return types.NamespacedName{Namespace: dev.Namespace, Name: dev.Name}
}

func compareKeys(a, b types.NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}
