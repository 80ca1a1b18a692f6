package edgecontroller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// Pod indexes.
const (
	indexNode      = "node"
	indexConfigMap = "configmap"
	indexSecret    = "secret"
)

// addPodIndexers adds the module's pod indexes unless an earlier run added them to the same (shared) informer.
func addPodIndexers(pods cache.SharedIndexInformer) error {
	want := podIndexers()
	for name := range pods.GetIndexer().GetIndexers() {
		delete(want, name)
	}
	if len(want) == 0 {
		return nil
	}
	if err := pods.AddIndexers(want); err != nil {
		return fmt.Errorf("adding pod indexes: %w", err)
	}
	return nil
}

func podIndexers() cache.Indexers {
	byRef := func(configMaps bool) cache.IndexFunc {
		return func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			refs := nodeauthz.PodReferences(p)
			names := refs.Secrets
			if configMaps {
				names = refs.ConfigMaps
			}
			keys := make([]string, len(names))
			for i, n := range names {
				keys[i] = p.Namespace + "/" + n
			}
			return keys, nil
		}
	}
	return cache.Indexers{
		indexNode: func(obj any) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
				return []string{p.Spec.NodeName}, nil
			}
			return nil, nil
		},
		indexConfigMap: byRef(true),
		indexSecret:    byRef(false),
	}
}

type eventOp int

const (
	opAdd eventOp = iota
	opUpdate
	opDelete
)

type event struct {
	typ string // resource type: pod, configmap, secret, node
	op  eventOp
	obj runtime.Object
	old runtime.Object // opUpdate only
}

type sentPod struct {
	node string
	pod  *corev1.Pod
}

type refKey struct {
	typ string // configmap or secret
	key string // namespace/name
}

// downstream turns informer events and connection events into messages for CloudHub. Informer callbacks only queue
// events; loop, the single goroutine handling them, owns sentPods and held, so they need no lock and messages
// leave in event order.
type downstream struct {
	r      *run
	events chan event

	resyncMu sync.Mutex
	resync   map[string]bool
	signal   chan struct{} // capacity 1: "resync has entries"

	// sentPods is what each node was last sent for a pod, so deletes and moves reach the right node even when
	// the informer's final state differs.
	sentPods map[string]sentPod
	// held lists the nodes that hold the current version of a ConfigMap or Secret. A node that stops referencing
	// one is dropped on its next change, so it gets the object again when a pod needs it.
	held map[refKey]map[string]bool
}

func newDownstream(r *run) *downstream {
	return &downstream{
		r:        r,
		events:   make(chan event, eventBuffer),
		resync:   make(map[string]bool),
		signal:   make(chan struct{}, 1),
		sentPods: make(map[string]sentPod),
		held:     make(map[refKey]map[string]bool),
	}
}

// registrations are the event handlers one run added to informers that may outlive it.
type registrations []func()

func (rs registrations) remove() {
	for _, r := range rs {
		r()
	}
}

// register adds event handlers that queue into d.events until ctx is done; the caller removes them when the run
// ends, since shared informers outlive it.
func (d *downstream) register(ctx context.Context) (registrations, error) {
	var regs registrations
	push := func(ev event) {
		select {
		case d.events <- ev:
		case <-ctx.Done():
		}
	}
	for typ, inf := range map[string]cache.SharedIndexInformer{
		resource.TypePod:       d.r.pods,
		resource.TypeNode:      d.r.inf.Nodes(),
		resource.TypeConfigMap: d.r.inf.core.Core().V1().ConfigMaps().Informer(),
		resource.TypeSecret:    d.r.inf.core.Core().V1().Secrets().Informer(),
	} {
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				if o, ok := obj.(runtime.Object); ok {
					push(event{typ: typ, op: opAdd, obj: o})
				}
			},
			UpdateFunc: func(old, obj any) {
				o, ok1 := obj.(runtime.Object)
				prev, ok2 := old.(runtime.Object)
				if ok1 && ok2 {
					push(event{typ: typ, op: opUpdate, obj: o, old: prev})
				}
			},
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if o, ok := obj.(runtime.Object); ok {
					push(event{typ: typ, op: opDelete, obj: o})
				}
			},
		})
		if err != nil {
			regs.remove()
			return nil, fmt.Errorf("adding %s event handler: %w", typ, err)
		}
		regs = append(regs, func() {
			if err := inf.RemoveEventHandler(reg); err != nil {
				klog.V(2).InfoS("Cannot remove informer event handler", "type", typ, "err", err)
			}
		})
	}
	return regs, nil
}

// requestResync schedules a full resync of node without blocking the caller (the mailbox loop).
func (d *downstream) requestResync(node string) {
	d.resyncMu.Lock()
	d.resync[node] = true
	d.resyncMu.Unlock()
	select {
	case d.signal <- struct{}{}:
	default:
	}
}

func (d *downstream) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.events:
			d.handle(ctx, ev)
		case <-d.signal:
			d.resyncMu.Lock()
			nodes := make([]string, 0, len(d.resync))
			for n := range d.resync {
				nodes = append(nodes, n)
			}
			clear(d.resync)
			d.resyncMu.Unlock()
			slices.Sort(nodes)
			for _, n := range nodes {
				d.resyncNode(ctx, n)
			}
		}
	}
}

func (d *downstream) handle(ctx context.Context, ev event) {
	if ev.op == opUpdate && sameVersion(ev.old, ev.obj) {
		return // informer resync: nothing changed
	}
	switch o := ev.obj.(type) {
	case *corev1.Pod:
		d.pod(ctx, ev.op, o)
		if ev.op != opDelete {
			d.r.autonomy.check(o)
		}
	case *corev1.ConfigMap:
		op := model.InsertOperation
		switch ev.op {
		case opUpdate:
			op = model.UpdateOperation
		case opDelete:
			op = model.DeleteOperation
		}
		d.reference(ctx, resource.TypeConfigMap, indexConfigMap, op, o)
	case *corev1.Secret:
		// KubeEdge sends Secrets as update whether added or modified.
		op := model.UpdateOperation
		if ev.op == opDelete {
			op = model.DeleteOperation
		}
		d.reference(ctx, resource.TypeSecret, indexSecret, op, o)
	case *corev1.Node:
		old, _ := ev.old.(*corev1.Node)
		d.node(ctx, ev.op, o, old)
		if ev.op != opDelete {
			d.r.autonomy.checkNode(o, old)
		}
	}
}

func sameVersion(a, b runtime.Object) bool {
	am, err1 := meta.Accessor(a)
	bm, err2 := meta.Accessor(b)
	return err1 == nil && err2 == nil && am.GetResourceVersion() != "" && am.GetResourceVersion() == bm.GetResourceVersion()
}

func (d *downstream) pod(ctx context.Context, op eventOp, p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	prev, had := d.sentPods[key]
	if op == opDelete {
		delete(d.sentPods, key)
		target := p.Spec.NodeName
		if had {
			target = prev.node
		} else if target == "" || !d.r.isEdgeNode(target) {
			return
		}
		d.sendTo(ctx, target, p.Namespace, resource.TypePod, p.Name, model.DeleteOperation, p)
		return
	}
	if had && (prev.node != p.Spec.NodeName || prev.pod.UID != p.UID) {
		// Replaced under the same name without us seeing the delete (e.g. across a relist).
		d.sendTo(ctx, prev.node, p.Namespace, resource.TypePod, p.Name, model.DeleteOperation, prev.pod)
		delete(d.sentPods, key)
		had = false
	}
	if p.Spec.NodeName == "" || !d.r.isEdgeNode(p.Spec.NodeName) {
		return
	}
	msgOp := model.UpdateOperation
	if !had {
		msgOp = model.InsertOperation
	}
	d.sendPod(ctx, p, msgOp, false)
}

// sendPod sends a pod to its node, preceded by the ConfigMaps and Secrets it needs that the node does not hold
// yet (all of them when force), so kubelet finds them when it builds the volumes.
func (d *downstream) sendPod(ctx context.Context, p *corev1.Pod, op string, force bool) {
	node := p.Spec.NodeName
	refs := nodeauthz.PodReferences(p)
	for _, name := range refs.ConfigMaps {
		ref := refKey{resource.TypeConfigMap, p.Namespace + "/" + name}
		if !force && d.held[ref][node] {
			continue
		}
		if cm, err := d.r.configMaps.ConfigMaps(p.Namespace).Get(name); err == nil {
			d.sendTo(ctx, node, p.Namespace, resource.TypeConfigMap, name, model.InsertOperation, cm)
			d.hold(ref, node)
		}
	}
	for _, name := range refs.Secrets {
		ref := refKey{resource.TypeSecret, p.Namespace + "/" + name}
		if !force && d.held[ref][node] {
			continue
		}
		if s, err := d.r.secrets.Secrets(p.Namespace).Get(name); err == nil {
			d.sendTo(ctx, node, p.Namespace, resource.TypeSecret, name, model.UpdateOperation, s)
			d.hold(ref, node)
		}
	}
	d.sendTo(ctx, node, p.Namespace, resource.TypePod, p.Name, op, p)
	d.sentPods[p.Namespace+"/"+p.Name] = sentPod{node: node, pod: p}
}

func (d *downstream) hold(ref refKey, node string) {
	if d.held[ref] == nil {
		d.held[ref] = make(map[string]bool)
	}
	d.held[ref][node] = true
}

// reference handles a ConfigMap or Secret change: it goes to the edge nodes whose pods use it now, and a delete
// also to every node still holding a copy.
func (d *downstream) reference(ctx context.Context, typ, index, op string, obj runtime.Object) {
	a, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	ns, name := a.GetNamespace(), a.GetName()
	ref := refKey{typ, ns + "/" + name}
	targets := d.referencingNodes(index, ref.key)
	if op == model.DeleteOperation {
		for n := range d.held[ref] {
			targets = append(targets, n)
		}
		slices.Sort(targets)
		targets = slices.Compact(targets)
		delete(d.held, ref)
	} else {
		d.held[ref] = make(map[string]bool, len(targets))
		for _, n := range targets {
			d.held[ref][n] = true
		}
	}
	for _, n := range targets {
		d.sendTo(ctx, n, ns, typ, name, op, obj)
	}
}

// referencingNodes returns the sorted edge nodes running pods that use key through index.
func (d *downstream) referencingNodes(index, key string) []string {
	objs, err := d.r.pods.GetIndexer().ByIndex(index, key)
	if err != nil {
		klog.ErrorS(err, "Cannot look up pods by reference", "index", index, "key", key)
		return nil
	}
	var nodes []string
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" && d.r.isEdgeNode(p.Spec.NodeName) {
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes)
}

func (d *downstream) node(ctx context.Context, op eventOp, n, old *corev1.Node) {
	if op == opDelete {
		if isEdge(n) {
			// No content: CloudHub closes the node's session instead of forwarding it.
			d.sendTo(ctx, n.Name, "", resource.TypeNode, n.Name, model.DeleteOperation, nil)
		}
		d.forget(n.Name)
		return
	}
	if !isEdge(n) {
		if old != nil && isEdge(old) {
			klog.InfoS("Node is no longer an edge node", "node", n.Name)
			d.forget(n.Name)
		}
		return
	}
	if op == opUpdate && old != nil && !isEdge(old) {
		klog.InfoS("Node became an edge node, sending it its pods", "node", n.Name)
		d.resyncNode(ctx, n.Name)
		return
	}
	d.sendTo(ctx, n.Name, "", resource.TypeNode, n.Name, model.UpdateOperation, n)
}

// forget drops what was sent to node; a node that comes back gets everything again.
func (d *downstream) forget(node string) {
	for k, s := range d.sentPods {
		if s.node == node {
			delete(d.sentPods, k)
		}
	}
	for _, nodes := range d.held {
		delete(nodes, node)
	}
}

// resyncNode sends node everything it should hold: its Node, then for each of its pods the ConfigMaps and Secrets
// it uses and the pod. CloudHub drops what the node already acknowledged at the same version.
func (d *downstream) resyncNode(ctx context.Context, name string) {
	n, err := d.r.nodes.Get(name)
	if err != nil || !isEdge(n) {
		klog.V(2).InfoS("Not resyncing: not a registered edge node", "node", name)
		return
	}
	d.sendTo(ctx, name, "", resource.TypeNode, name, model.UpdateOperation, n)
	objs, err := d.r.pods.GetIndexer().ByIndex(indexNode, name)
	if err != nil {
		klog.ErrorS(err, "Cannot list pods of node", "node", name)
		return
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, p := range pods {
		d.sendPod(ctx, p, model.UpdateOperation, true)
	}
	klog.V(2).InfoS("Resynced edge node", "node", name, "pods", len(pods))
}

// sendTo sends one object message for node to CloudHub: resource node/{node}/{ns}/{type}/{name}, the object's
// resourceVersion in the header, and the object (apiVersion and kind set) as content.
func (d *downstream) sendTo(ctx context.Context, node, ns, typ, name, op string, obj runtime.Object) {
	res, err := resource.BuildCloud(node, ns, typ, name)
	if err != nil {
		klog.ErrorS(err, "Cannot address object to edge node", "node", node, "type", typ, "object", klog.KRef(ns, name))
		return
	}
	msg := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, res, op)
	if obj != nil {
		obj = withTypeMeta(obj)
		if a, err := meta.Accessor(obj); err == nil {
			msg.SetResourceVersion(a.GetResourceVersion())
		}
		msg.FillBody(obj)
	}
	klog.V(4).InfoS("Sending object to edge node", "node", node, "resource", res, "operation", op, "resourceVersion", msg.Header.ResourceVersion)
	d.r.send(ctx, msg)
}
