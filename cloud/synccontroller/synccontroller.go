// Package synccontroller repairs what the edge missed. Every ObjectSync records the newest resourceVersion a node
// confirmed for one object; periodically each record is compared with the live object and CloudHub is told to
// send an update (the object is newer) or a delete (the object is gone or was replaced). Together with CloudHub's
// per-node queues this makes delivery survive disconnections and cloudcore restarts.
package synccontroller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// DefaultPeriod is KubeEdge's reconcile period.
const DefaultPeriod = 5 * time.Second

// Sender delivers a message to a bus module; *beehive.Bus satisfies it.
type Sender interface {
	Send(ctx context.Context, module string, msg model.Message) error
}

// Options configure the controller.
type Options struct {
	// Reader reads ObjectSyncs, Nodes and the synced objects; an informer cache in production.
	Reader client.Reader
	// Writer deletes ObjectSyncs of nodes that no longer exist.
	Writer client.Writer
	Sender Sender
	// Period between reconcile passes; DefaultPeriod when zero.
	Period time.Duration
	// Enabled mirrors the config switch.
	Enabled bool
	// Authorizer decides whether a node may still hold an object; a record of one it may not (its last pod using
	// it is gone) is deleted instead of being brought up to date. Nil keeps every record.
	Authorizer Authorizer
}

// Authorizer decides whether node may hold an object; the node authorizer (pkg/security/nodeauthz) implements it.
type Authorizer interface {
	MayHold(node, resourceType, namespace, name string) error
}

// Controller is the synccontroller module.
type Controller struct {
	opts Options
	// knownNodes is the node set of the previous pass; a node that leaves it was deleted. Owned by Start's
	// goroutine only.
	knownNodes map[string]bool
}

// New returns the synccontroller module.
func New(opts Options) *Controller {
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	return &Controller{opts: opts}
}

func (c *Controller) Name() string  { return modules.SyncController }
func (c *Controller) Group() string { return modules.SyncController }
func (c *Controller) Enable() bool  { return c.opts.Enabled }

// Start reconciles every period until ctx is done.
func (c *Controller) Start(ctx context.Context) error {
	t := time.NewTicker(c.opts.Period)
	defer t.Stop()
	for {
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Sync reconcile pass failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile runs one pass: drop the records of deleted nodes, then compare every record with its object.
func (c *Controller) Reconcile(ctx context.Context) error {
	if err := c.pruneDeletedNodes(ctx); err != nil {
		return err
	}
	var syncs v1alpha1.ObjectSyncList
	if err := c.opts.Reader.List(ctx, &syncs); err != nil {
		return fmt.Errorf("listing object syncs: %w", err)
	}
	var errs []error
	for i := range syncs.Items {
		s := &syncs.Items[i]
		errs = append(errs, c.reconcileOne(ctx, s, s.Spec, s.Status))
	}
	var clusterSyncs v1alpha1.ClusterObjectSyncList
	if err := c.opts.Reader.List(ctx, &clusterSyncs); err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing cluster object syncs: %w", err))...)
	}
	for i := range clusterSyncs.Items {
		s := &clusterSyncs.Items[i]
		errs = append(errs, c.reconcileOne(ctx, s, s.Spec, s.Status))
	}
	return errors.Join(errs...)
}

func (c *Controller) reconcileOne(ctx context.Context, record client.Object, spec v1alpha1.ObjectSyncSpec, status v1alpha1.ObjectSyncStatus) error {
	syncName, namespace := record.GetName(), record.GetNamespace()
	node, uid, err := v1alpha1.ParseSyncName(syncName)
	if err != nil {
		klog.ErrorS(err, "Ignoring object sync with a malformed name", "namespace", namespace)
		return nil
	}
	resourceType, ok := resource.TypeForKind(spec.ObjectKind)
	if !ok {
		klog.V(2).InfoS("Ignoring object sync of an unsynced kind", "sync", syncName, "kind", spec.ObjectKind)
		return nil
	}
	gv, err := schema.ParseGroupVersion(spec.ObjectAPIVersion)
	if err != nil {
		klog.ErrorS(err, "Ignoring object sync with a malformed apiVersion", "sync", syncName)
		return nil
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gv.WithKind(spec.ObjectKind))
	err = c.opts.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: spec.ObjectName}, obj)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && obj.GetUID() != uid):
		// Gone, or replaced by a new object of the same name: the edge must drop the one it has.
		gone := &unstructured.Unstructured{}
		gone.SetGroupVersionKind(gv.WithKind(spec.ObjectKind))
		gone.SetNamespace(namespace)
		gone.SetName(spec.ObjectName)
		gone.SetUID(uid)
		return c.send(ctx, node, namespace, resourceType, spec.ObjectName, model.DeleteOperation, "", gone.Object)
	case err != nil:
		return fmt.Errorf("getting %s %s/%s for sync %s: %w", spec.ObjectKind, namespace, spec.ObjectName, syncName, err)
	}
	if status.ObjectResourceVersion == "" {
		return nil // CloudHub has not recorded anything yet; it owns the first delivery.
	}
	newer, err := newerThan(obj.GetResourceVersion(), status.ObjectResourceVersion)
	if err != nil {
		klog.ErrorS(err, "Cannot compare resource versions", "sync", syncName)
		return nil
	}
	if !newer {
		return nil
	}
	if c.opts.Authorizer != nil {
		if err := c.opts.Authorizer.MayHold(node, resourceType, namespace, spec.ObjectName); err != nil {
			if ref, ok := nodeauthz.IsRefusal(err); !ok || ref.Rule == nodeauthz.RuleNotReady {
				return fmt.Errorf("authorizing %s for node %s: %w", syncName, node, err)
			}
			klog.InfoS("Dropping the sync record of an object the node may no longer hold", "sync", klog.KObj(record), "node", node, "reason", err)
			if err := c.opts.Writer.Delete(ctx, record); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting object sync %s of node %s: %w", syncName, node, err)
			}
			return nil
		}
	}
	return c.send(ctx, node, namespace, resourceType, spec.ObjectName, model.UpdateOperation, obj.GetResourceVersion(), obj.Object)
}

func (c *Controller) send(ctx context.Context, node, namespace, resourceType, name, op, rv string, content any) error {
	if namespace == "" {
		namespace = resource.NullNamespace
	}
	res, err := resource.BuildCloud(node, namespace, resourceType, name)
	if err != nil {
		return fmt.Errorf("building resource for %s %s/%s on node %s: %w", resourceType, namespace, name, node, err)
	}
	msg := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource, res, op).
		SetResourceVersion(rv).FillBody(content)
	klog.V(2).InfoS("Resyncing object to edge", "node", node, "resource", res, "operation", op, "resourceVersion", rv)
	if err := c.opts.Sender.Send(ctx, modules.CloudHub, *msg); err != nil {
		return fmt.Errorf("sending %s %s to cloudhub: %w", op, res, err)
	}
	return nil
}

// pruneDeletedNodes deletes the records of nodes that existed in the previous pass (or, on the first pass, of
// nodes that do not exist at all) and are gone now.
func (c *Controller) pruneDeletedNodes(ctx context.Context) error {
	var nodes corev1.NodeList
	if err := c.opts.Reader.List(ctx, &nodes); err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	current := make(map[string]bool, len(nodes.Items))
	for _, n := range nodes.Items {
		current[n.Name] = true
	}
	previous := c.knownNodes
	deleted := func(node string) bool { return !current[node] && (previous == nil || previous[node]) }
	c.knownNodes = current

	var syncs v1alpha1.ObjectSyncList
	if err := c.opts.Reader.List(ctx, &syncs); err != nil {
		return fmt.Errorf("listing object syncs: %w", err)
	}
	var errs []error
	for i := range syncs.Items {
		errs = append(errs, c.pruneIfDeleted(ctx, &syncs.Items[i], deleted))
	}
	var clusterSyncs v1alpha1.ClusterObjectSyncList
	if err := c.opts.Reader.List(ctx, &clusterSyncs); err != nil {
		return fmt.Errorf("listing cluster object syncs: %w", err)
	}
	for i := range clusterSyncs.Items {
		errs = append(errs, c.pruneIfDeleted(ctx, &clusterSyncs.Items[i], deleted))
	}
	return errors.Join(errs...)
}

func (c *Controller) pruneIfDeleted(ctx context.Context, obj client.Object, deleted func(string) bool) error {
	node, _, err := v1alpha1.ParseSyncName(obj.GetName())
	if err != nil || !deleted(node) {
		return nil
	}
	klog.InfoS("Deleting object sync of a deleted node", "node", node, "sync", klog.KObj(obj))
	if err := c.opts.Writer.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting object sync %s of deleted node %s: %w", obj.GetName(), node, err)
	}
	return nil
}

// newerThan compares resourceVersions as unsigned integers, as KubeEdge does; etcd-backed API servers issue
// numeric ones. Non-numeric versions are an error, never a crash.
func newerThan(live, recorded string) (bool, error) {
	l, err := strconv.ParseUint(live, 10, 64)
	if err != nil {
		return false, fmt.Errorf("live resourceVersion %q is not numeric: %w", live, err)
	}
	r, err := strconv.ParseUint(recorded, 10, 64)
	if err != nil {
		return false, fmt.Errorf("recorded resourceVersion %q is not numeric: %w", recorded, err)
	}
	return l > r, nil
}
