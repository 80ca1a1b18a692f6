// Package revocation is cloudcore's side of the certificate deny-list
// (pkg/security/revocation): it watches the one ConfigMap every cloudcore
// shares, answers "is this certificate revoked?" for the websocket handshake,
// open sessions and the certificate service, and writes the list when an edge
// Node is deleted or re-joins.
//
// Floors this process decides (a node deletion, a re-join) apply at once,
// before the ConfigMap write comes back through the watch, so a deleted
// node's edge cannot slip back in during that window.
package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	rev "github.com/tether-edge/tether/pkg/security/revocation"

	"github.com/tether-edge/tether/pkg/metrics"
)

// EdgeRoleLabel marks edge Nodes; only their deletion is recorded (kubelet
// nodes hold no certificate of ours).
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// DefaultPruneInterval is how often expired serial entries are looked for.
const DefaultPruneInterval = time.Hour

// ErrNotReady means the list has not been read yet: callers refuse (503)
// rather than let anything through.
var ErrNotReady = errors.New("certificate revocation list not loaded yet")

// Options configures a Manager. Kube is required.
type Options struct {
	Kube kubernetes.Interface
	// NodeInformer, when set, gets a delete handler: deleting an edge Node
	// revokes that node's certificates issued until then. The caller starts
	// it; the Manager never watches Nodes itself.
	NodeInformer cache.SharedIndexInformer
	// Registerer receives the metrics; nil means they are not exported.
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
	// PruneInterval defaults to DefaultPruneInterval.
	PruneInterval time.Duration
}

// Manager is the watched deny-list. Its methods are safe for concurrent use.
type Manager struct {
	opts     Options
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration
	entries  *prometheus.GaugeVec

	mu sync.RWMutex
	// queue holds nodes whose deletion floor is still to be written; nil
	// until Run.
	queue workqueue.TypedRateLimitingInterface[string]
	// data is the ConfigMap's data as last seen; list decodes it.
	data map[string]string
	list rev.List
	// local holds floors decided here until the ConfigMap shows them.
	local map[string]rev.NodeFloor
	// effective is list with local merged in; Check reads it.
	effective rev.List

	subMu   sync.Mutex
	subs    map[int]func()
	nextSub int
}

// New builds a Manager and registers its node delete handler; Run starts
// the ConfigMap watch.
func New(opts Options) (*Manager, error) {
	if opts.Kube == nil {
		return nil, errors.New("certificate revocation: Kubernetes client is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PruneInterval <= 0 {
		opts.PruneInterval = DefaultPruneInterval
	}
	m := &Manager{
		opts:    opts,
		local:   map[string]rev.NodeFloor{},
		subs:    map[int]func(){},
		entries: newEntriesGauge(opts.Registerer),
	}
	m.recompute()
	// One ConfigMap: the watch carries nothing else.
	m.factory = informers.NewSharedInformerFactoryWithOptions(opts.Kube, 0, informers.WithNamespace(rev.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", rev.ConfigMapName).String()
		}))
	m.informer = m.factory.Core().V1().ConfigMaps().Informer()
	var err error
	m.handler, err = m.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.configMapChanged(obj) },
		UpdateFunc: func(_, obj any) { m.configMapChanged(obj) },
		DeleteFunc: func(any) { m.configMapChanged(nil) },
	})
	if err != nil {
		return nil, fmt.Errorf("certificate revocation: watch ConfigMap: %w", err)
	}
	if opts.NodeInformer != nil {
		if _, err := opts.NodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: m.nodeDeleted}); err != nil {
			return nil, fmt.Errorf("certificate revocation: watch Node deletions: %w", err)
		}
	}
	return m, nil
}

func newEntriesGauge(reg prometheus.Registerer) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tether",
		Subsystem: "cloudhub",
		Name:      "revocation_entries",
		Help:      "Entries of the certificate revocation list, by kind (serial, node floor, malformed: ignored).",
	}, []string{"kind"})
	for _, k := range []string{"serial", "node", "malformed"} {
		g.WithLabelValues(k)
	}
	return metrics.Shared(reg, g)
}

// Run watches the ConfigMap, writes deletion floors and prunes expired
// entries until ctx is done; it returns nil then.
func (m *Manager) Run(ctx context.Context) error {
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "certificate-revocation"})
	m.mu.Lock()
	m.queue = queue
	for node, f := range m.local {
		if f.NodeUID != "" {
			queue.Add(node) // deletions seen before Run
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer queue.ShutDown()
	m.factory.Start(ctx.Done())
	defer m.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), m.handler.HasSynced) {
		return nil
	}
	m.mu.RLock()
	serials, nodes := len(m.list.Serials), len(m.list.Nodes)
	m.mu.RUnlock()
	klog.InfoS("Certificate revocation list loaded", "configMap", klog.KRef(rev.Namespace, rev.ConfigMapName),
		"serials", serials, "nodeFloors", nodes)
	wg.Go(func() {
		for m.writeNext(ctx, queue) {
		}
	})
	tick := time.NewTicker(m.opts.PruneInterval)
	defer tick.Stop()
	for {
		m.prune(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Ready reports whether the list has been read.
func (m *Manager) Ready() bool { return m.handler != nil && m.handler.HasSynced() }

// Check returns ErrNotReady, a *rev.RevokedError, or nil.
func (m *Manager) Check(cert *x509.Certificate) error {
	if !m.Ready() {
		return ErrNotReady
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.effective.Check(cert)
}

// CheckNode is Check for a certificate used on behalf of node (legacy
// KubeEdge certificates name none).
func (m *Manager) CheckNode(cert *x509.Certificate, node string) error {
	if !m.Ready() {
		return ErrNotReady
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.effective.CheckNode(cert, node)
}

// IssueTime is when to date a certificate for node signed at now, so that
// it is never older than the node's floor (see rev.IssueTime).
func (m *Manager) IssueTime(node string, now time.Time) time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f, _ := m.effective.Floor(node)
	return rev.IssueTime(f.Before, now)
}

// Subscribe calls fn, from a goroutine of the Manager, whenever the list
// may have grown; fn must not block. The returned function unsubscribes.
func (m *Manager) Subscribe(fn func()) func() {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = fn
	return func() {
		m.subMu.Lock()
		delete(m.subs, id)
		m.subMu.Unlock()
	}
}

func (m *Manager) notify() {
	m.subMu.Lock()
	fns := make([]func(), 0, len(m.subs))
	for _, fn := range m.subs {
		fns = append(fns, fn)
	}
	m.subMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// RevokeNode revokes node's certificates issued before `before`: it writes
// the floor and applies it here at once. It returns only once the floor is
// in the API server, so a re-join can rely on the old node being shut out
// for every cloudcore.
func (m *Manager) RevokeNode(ctx context.Context, node string, before time.Time, reason string) error {
	f := rev.NodeFloor{Before: before, Reason: reason}
	if _, err := rev.RevokeNode(ctx, m.opts.Kube, node, f, m.opts.Now()); err != nil {
		return err
	}
	m.mu.Lock()
	m.addLocal(node, f)
	m.mu.Unlock()
	klog.InfoS("Revoked node certificates", "node", node, "issuedBefore", before.UTC().Format(time.RFC3339Nano), "reason", reason)
	m.notify()
	return nil
}

// NodeGone tells the Manager the API server has no Node called name. If the
// Node watch has not delivered its deletion yet, the deletion is recorded
// now, so that a certificate issued next for that name is dated after the
// floor the deletion writes.
func (m *Manager) NodeGone(name string) {
	if m.opts.NodeInformer == nil {
		return
	}
	obj, exists, err := m.opts.NodeInformer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return
	}
	if n, ok := obj.(*corev1.Node); ok && isEdge(n) {
		m.recordDeletion(n.Name, string(n.UID))
	}
}

func (m *Manager) nodeDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok || !isEdge(n) {
		return
	}
	m.recordDeletion(n.Name, string(n.UID))
}

func isEdge(n *corev1.Node) bool {
	_, ok := n.Labels[EdgeRoleLabel]
	return ok
}

// recordDeletion applies a floor at now for a deleted Node (once per UID)
// and queues its write.
func (m *Manager) recordDeletion(name, uid string) {
	now := m.opts.Now()
	m.mu.Lock()
	if f, ok := m.effective.Floor(name); ok && uid != "" && f.NodeUID == uid {
		m.mu.Unlock()
		return
	}
	m.addLocal(name, rev.NodeFloor{Before: now, Reason: rev.ReasonNodeDeleted, NodeUID: uid})
	if m.queue != nil {
		m.queue.Add(name)
	}
	m.mu.Unlock()
	klog.InfoS("Edge node deleted: revoking its certificates", "node", name, "uid", uid,
		"issuedBefore", now.UTC().Format(time.RFC3339Nano))
	m.notify()
}

// addLocal keeps the later of two floors. Caller holds mu.
func (m *Manager) addLocal(node string, f rev.NodeFloor) {
	if cur, ok := m.local[node]; ok && !cur.Before.Before(f.Before) {
		return
	}
	m.local[node] = f
	m.recompute()
}

// writeNext writes one queued deletion floor; false once the queue is shut.
func (m *Manager) writeNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	node, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(node)
	m.mu.RLock()
	f, ok := m.local[node]
	m.mu.RUnlock()
	if !ok {
		queue.Forget(node)
		return true
	}
	if _, err := rev.RevokeNode(ctx, m.opts.Kube, node, f, m.opts.Now()); err != nil {
		if ctx.Err() != nil {
			return true
		}
		// The floor already applies here; other cloudcores need the write.
		klog.InfoS("Cannot record node floor in the revocation list, will retry", "node", node, "err", err)
		queue.AddRateLimited(node)
		return true
	}
	queue.Forget(node)
	return true
}

func (m *Manager) configMapChanged(obj any) {
	var data map[string]string
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		data = cm.Data
	} else if obj == nil {
		klog.InfoS("Certificate revocation list deleted: nothing is revoked any more (except what this cloudcore decided since)",
			"configMap", klog.KRef(rev.Namespace, rev.ConfigMapName))
	}
	list, errs := rev.Decode(data)
	for _, err := range errs {
		klog.InfoS("Ignoring malformed certificate revocation entry", "configMap", klog.KRef(rev.Namespace, rev.ConfigMapName), "err", err)
	}
	m.mu.Lock()
	m.data = maps.Clone(data)
	m.list = list
	for node, f := range m.local {
		if cur, ok := list.Nodes[node]; ok && (!cur.Before.Before(f.Before) || f.NodeUID != "" && cur.NodeUID == f.NodeUID) {
			delete(m.local, node)
		}
	}
	m.recompute()
	m.mu.Unlock()
	m.entries.WithLabelValues("serial").Set(float64(len(list.Serials)))
	m.entries.WithLabelValues("node").Set(float64(len(list.Nodes)))
	m.entries.WithLabelValues("malformed").Set(float64(len(errs)))
	m.notify()
}

// recompute merges local into list. Caller holds mu.
func (m *Manager) recompute() {
	eff := rev.List{Serials: m.list.Serials, Nodes: maps.Clone(m.list.Nodes)}
	if eff.Nodes == nil {
		eff.Nodes = map[string]rev.NodeFloor{}
	}
	for node, f := range m.local {
		if cur, ok := eff.Nodes[node]; !ok || cur.Before.Before(f.Before) {
			eff.Nodes[node] = f
		}
	}
	m.effective = eff
}

// prune removes serial entries of expired certificates, if there are any.
func (m *Manager) prune(ctx context.Context) {
	m.mu.RLock()
	due := len(rev.Expired(m.data, m.opts.Now())) > 0
	m.mu.RUnlock()
	if !due {
		return
	}
	removed, err := rev.Prune(ctx, m.opts.Kube, m.opts.Now())
	if err != nil {
		if ctx.Err() == nil {
			klog.InfoS("Cannot prune the certificate revocation list, will retry", "err", err)
		}
		return
	}
	if len(removed) > 0 {
		klog.InfoS("Pruned revocation entries of expired certificates", "entries", removed)
	}
}
