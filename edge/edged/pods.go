package edged

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/resource"
)

// podManager owns one worker per pod, keyed by UID: syncs of one pod are serialised, pods run in parallel.
type podManager struct {
	e      *Edged
	meta   *metaClient
	link   *link
	node   *nodeAgent
	getter objectGetter

	mu         sync.Mutex
	workers    map[types.UID]*podWorker
	names      map[string]types.UID // "ns/name" → UID, to notice a pod replaced under the same name
	tombstones map[types.UID]int64  // finished pods (clock seconds), so late messages do not revive them
	killing    map[types.UID]bool   // strays being killed

	// wg tracks workers and stray kills. Only the consume and run goroutines add to it, and Start waits on
	// it after both have returned.
	wg         sync.WaitGroup
	housekeepC chan struct{}
}

func newPodManager(e *Edged, meta *metaClient, lk *link, na *nodeAgent) *podManager {
	return &podManager{
		e: e, meta: meta, link: lk, node: na, getter: objectGetter{c: meta},
		workers:    make(map[types.UID]*podWorker),
		names:      make(map[string]types.UID),
		tombstones: make(map[types.UID]int64),
		killing:    make(map[types.UID]bool),
		housekeepC: make(chan struct{}, 1),
	}
}

// run drives the periodic work: resync, housekeeping, and flushing held updates when the cloud is back.
func (pm *podManager) run(ctx context.Context) {
	clk := pm.e.opts.clock
	resync := clk.NewTicker(pm.e.opts.resyncInterval)
	defer resync.Stop()
	hk := clk.NewTicker(pm.e.opts.housekeeping)
	defer hk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C():
			pm.signalAll(workSync)
		case <-pm.link.back:
			pm.signalAll(workFlush)
		case <-hk.C():
			pm.housekeeping(ctx)
		case <-pm.housekeepC:
			pm.housekeeping(ctx)
		}
	}
}

// initialLoad rebuilds the pod set from MetaManager's database, retrying until it answers. It returns false
// when ctx ends first.
func (pm *podManager) initialLoad(ctx context.Context) bool {
	delay := pm.e.opts.retryMin
	for attempt := 1; ; attempt++ {
		n, err := pm.relist(ctx)
		if err == nil {
			klog.InfoS("Loaded pods from MetaManager", "pods", n, "attempts", attempt)
			select {
			case pm.housekeepC <- struct{}{}:
			default:
			}
			return true
		}
		if attempt == 1 {
			klog.InfoS("Cannot load pods from MetaManager; retrying with back-off", "err", err)
		} else {
			klog.V(4).InfoS("Cannot load pods from MetaManager", "attempt", attempt, "err", err)
		}
		if !sleep(ctx, pm.e.opts.clock, delay, nil) {
			return false
		}
		delay = min(2*delay, pm.e.opts.resyncInterval)
	}
}

// relist makes the pod set match the database: new pods start, known ones update, and pods the database no
// longer has are killed. It returns how many pods of this node it found.
func (pm *podManager) relist(ctx context.Context) (int, error) {
	items, err := pm.meta.listPods(ctx, pm.e.namespace)
	if err != nil {
		return 0, err
	}
	seen := make(map[types.UID]bool, len(items))
	for _, raw := range items {
		var pod corev1.Pod
		if err := json.Unmarshal(raw, &pod); err != nil {
			klog.ErrorS(err, "Skipping malformed pod from MetaManager", "json", truncate(raw))
			continue
		}
		if pm.upsert(ctx, &pod) {
			seen[pod.UID] = true
		}
	}
	pm.mu.Lock()
	var gone []*podWorker
	for uid, w := range pm.workers {
		if !seen[uid] {
			gone = append(gone, w)
		}
	}
	pm.mu.Unlock()
	for _, w := range gone {
		w.remove(nil)
	}
	return len(seen), nil
}

// handle applies one message from MetaManager.
func (pm *podManager) handle(ctx context.Context, msg model.Message) error {
	op := msg.Router.Operation
	if op == model.ResponseOperation || op == model.ResponseErrorOperation {
		// A cloud reply whose asker gave up, passed on by MetaManager after storing it; the object is in the
		// database for the next query.
		klog.V(4).InfoS("Ignoring late reply", "msgID", msg.Header.ID, "resource", msg.Router.Resource)
		return nil
	}
	res, err := resource.ParseEdge(msg.Router.Resource, op)
	if err != nil {
		return fmt.Errorf("message %s: %w", msg.Header.ID, err)
	}
	switch res.Type {
	case resource.TypePod:
		return pm.handlePod(ctx, msg, res)
	case resource.TypeConfigMap, resource.TypeSecret:
		switch op {
		case model.InsertOperation, model.UpdateOperation, model.DeleteOperation:
			pm.resyncReferencing(res.Type, res.Namespace, res.Name)
			return nil
		}
	}
	return fmt.Errorf("message %s: unsupported %s on %s", msg.Header.ID, op, msg.Router.Resource)
}

func (pm *podManager) handlePod(ctx context.Context, msg model.Message, res resource.Edge) error {
	var pod corev1.Pod
	decodeErr := msg.UnmarshalContent(&pod)
	switch msg.Router.Operation {
	case model.InsertOperation, model.UpdateOperation:
		if decodeErr != nil {
			return fmt.Errorf("pod %s/%s: %w", res.Namespace, res.Name, decodeErr)
		}
		if pod.UID == "" {
			return fmt.Errorf("pod %s/%s: no uid", res.Namespace, res.Name)
		}
		pm.upsert(ctx, &pod)
		return nil
	case model.DeleteOperation:
		uid := pod.UID
		if decodeErr != nil || uid == "" {
			pm.mu.Lock()
			uid = pm.names[res.Namespace+"/"+res.Name]
			pm.mu.Unlock()
		}
		if uid == "" {
			// KubeEdge re-lists on a delete it cannot place; so do we.
			klog.InfoS("Pod delete without a known pod; re-listing", "pod", klog.KRef(res.Namespace, res.Name))
			_, err := pm.relist(ctx)
			return err
		}
		pm.mu.Lock()
		w := pm.workers[uid]
		pm.mu.Unlock()
		if w == nil {
			klog.V(4).InfoS("Delete of a pod edged does not run", "pod", klog.KRef(res.Namespace, res.Name), "podUID", uid)
			return nil
		}
		var final *corev1.Pod
		if decodeErr == nil && pod.UID != "" {
			final = &pod
		}
		w.remove(final)
		return nil
	}
	return fmt.Errorf("pod %s/%s: unsupported operation %q", res.Namespace, res.Name, msg.Router.Operation)
}

// upsert hands the pod to its worker, starting one if needed. It reports whether the pod belongs to this
// node and is being run.
func (pm *podManager) upsert(ctx context.Context, pod *corev1.Pod) bool {
	if pod.Spec.NodeName != pm.e.nodeName {
		klog.V(4).InfoS("Ignoring pod of another node", "pod", klog.KObj(pod), "nodeName", pod.Spec.NodeName)
		return false
	}
	if pod.UID == "" {
		klog.InfoS("Ignoring pod without uid", "pod", klog.KObj(pod))
		return false
	}
	key := pod.Namespace + "/" + pod.Name
	pm.mu.Lock()
	if _, dead := pm.tombstones[pod.UID]; dead {
		pm.mu.Unlock()
		klog.V(4).InfoS("Ignoring finished pod", "pod", klog.KObj(pod), "podUID", pod.UID)
		return false
	}
	var replaced *podWorker
	if old, ok := pm.names[key]; ok && old != pod.UID {
		// Deleted and recreated under the same name: the old object is gone from the cloud.
		replaced = pm.workers[old]
	}
	pm.names[key] = pod.UID
	w := pm.workers[pod.UID]
	if w == nil {
		w = newPodWorker(pm, pod.UID)
		pm.workers[pod.UID] = w
		pm.wg.Go(func() { w.run(ctx) })
	}
	pm.mu.Unlock()
	if replaced != nil {
		replaced.remove(nil)
	}
	w.update(pod)
	return true
}

// finish forgets a worker whose pod is gone for good.
func (pm *podManager) finish(w *podWorker, key string) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	delete(pm.workers, w.uid)
	if pm.names[key] == w.uid {
		delete(pm.names, key)
	}
	pm.tombstones[w.uid] = pm.e.opts.clock.Now().Unix()
}

func (pm *podManager) signalAll(what work) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for _, w := range pm.workers {
		w.signal(what)
	}
}

// resyncReferencing syncs the pods that use a changed ConfigMap or Secret, so the runtime refreshes volumes.
func (pm *podManager) resyncReferencing(typ, namespace, name string) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	n := 0
	for _, w := range pm.workers {
		if pod := w.current(); pod != nil && pod.Namespace == namespace && references(pod, typ, name) {
			w.signal(workSync)
			n++
		}
	}
	klog.V(2).InfoS("Object changed; resyncing pods that use it", "type", typ, "object", klog.KRef(namespace, name), "pods", n)
}

// housekeeping kills runtime pods edged does not know (deleted while edgecore was down), collects dead
// containers and forgets old tombstones.
func (pm *podManager) housekeeping(ctx context.Context) {
	uids, err := pm.e.rt.RunningPods(ctx)
	if err != nil {
		klog.InfoS("Cannot list runtime pods; housekeeping skipped", "err", err)
		return
	}
	cutoff := pm.e.opts.clock.Now().Add(-tombstoneTTL).Unix()
	var strays []types.UID
	pm.mu.Lock()
	for _, uid := range uids {
		if pm.workers[uid] == nil && !pm.killing[uid] {
			pm.killing[uid] = true
			strays = append(strays, uid)
		}
	}
	for uid, t := range pm.tombstones {
		if t < cutoff {
			delete(pm.tombstones, uid)
		}
	}
	pm.mu.Unlock()
	for _, uid := range strays {
		klog.InfoS("Killing pod unknown to the node", "podUID", uid)
		pm.wg.Go(func() {
			if err := pm.e.rt.KillPod(ctx, uid, DefaultGracePeriod); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "Cannot kill unknown pod; next housekeeping retries", "podUID", uid)
			}
			pm.mu.Lock()
			delete(pm.killing, uid)
			pm.mu.Unlock()
		})
	}
	if err := pm.e.rt.GarbageCollect(ctx); err != nil && ctx.Err() == nil {
		klog.InfoS("Container garbage collection failed", "err", err)
	}
}

// references reports whether the pod uses the ConfigMap or Secret: volumes, projected sources, env,
// envFrom, and (secrets) image pull secrets — the references edgecontroller tracks (§6.1).
func references(pod *corev1.Pod, typ, name string) bool {
	cm := typ == resource.TypeConfigMap
	for _, v := range pod.Spec.Volumes {
		switch {
		case cm && v.ConfigMap != nil && v.ConfigMap.Name == name:
			return true
		case !cm && v.Secret != nil && v.Secret.SecretName == name:
			return true
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if (cm && s.ConfigMap != nil && s.ConfigMap.Name == name) || (!cm && s.Secret != nil && s.Secret.Name == name) {
					return true
				}
			}
		}
	}
	if !cm {
		for _, s := range pod.Spec.ImagePullSecrets {
			if s.Name == name {
				return true
			}
		}
	}
	containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range pod.Spec.EphemeralContainers {
		containers = append(containers, corev1.Container(c.EphemeralContainerCommon))
	}
	for _, c := range containers {
		for _, f := range c.EnvFrom {
			if (cm && f.ConfigMapRef != nil && f.ConfigMapRef.Name == name) || (!cm && f.SecretRef != nil && f.SecretRef.Name == name) {
				return true
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if (cm && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == name) ||
				(!cm && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name) {
				return true
			}
		}
	}
	return false
}

func truncate(b []byte) string {
	const limit = 200
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}
