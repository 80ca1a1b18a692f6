package edgecontroller

// Edge autonomy: the pods of an edge node survive an outage of any length.
//
// Kubernetes evicts the pods of a node that stops answering: the node lifecycle controller taints it
// node.kubernetes.io/unreachable (or not-ready) with effect NoExecute, and the taint eviction controller deletes
// every pod whose matching tolerations run out. The DefaultTolerationSeconds admission plugin gives each pod 300 s
// for both taints; an unset tolerationSeconds means forever, and pod updates may change tolerationSeconds (unset it
// too) and add tolerations. So for every pod bound to an autonomous edge node the controller makes those two
// tolerations last forever, adding them where missing, and remembers on the pod what it changed (annotation
// AutonomyRestoreAnnotation). When a node opts out (label AutonomyLabel=false) the remembered values are put back:
// tolerations cannot be removed, so one the controller added gets DefaultTolerationSeconds.
//
// Decisions are made on the downstream loop from the informer caches (cheap, no API call); the writes run on the
// autonomy workers, off the loop, as merge patches preconditioned on the pod's resourceVersion and retried on
// conflict from a fresh read. A pod already as wanted is never written, so the patch's own update event ends
// there.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

const (
	// AutonomyLabel on a Node turns edge autonomy off ("false") or on ("true"); edge nodes without it are
	// autonomous. keadm join --autonomy=false sets it. Nodes without the edge role are never autonomous.
	AutonomyLabel = "node.tether.io/autonomy"
	// AutonomyRestoreAnnotation on a pod records the tolerationSeconds autonomy replaced, as a JSON object from
	// taint key to seconds, e.g. {"node.kubernetes.io/not-ready":300,"node.kubernetes.io/unreachable":300}. It is
	// what opting out puts back, and marks the pods autonomy changed.
	AutonomyRestoreAnnotation = "node.tether.io/autonomy-toleration-seconds"
	// DefaultTolerationSeconds is what a toleration autonomy added gets back when the node opts out: the value the
	// DefaultTolerationSeconds admission plugin uses by default.
	DefaultTolerationSeconds int64 = 300

	autonomyFieldManager = "tether-edge-autonomy"
	autonomyWorkers      = 2
)

// autonomyTaints are the taints the node lifecycle controller puts on a node that stops answering.
var autonomyTaints = []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable}

// autonomyMode is what a node asks of its pods' tolerations.
type autonomyMode int

const (
	autonomyNotEdge autonomyMode = iota // not an edge node: pods are left alone (except to undo autonomy)
	autonomyOn
	autonomyOff
)

func (m autonomyMode) String() string {
	switch m {
	case autonomyOn:
		return "on"
	case autonomyOff:
		return "off"
	}
	return "not an edge node"
}

// nodeAutonomy reads a node's mode: edge nodes are autonomous unless AutonomyLabel says false. A value that is not
// a boolean keeps the default.
func nodeAutonomy(n *corev1.Node) autonomyMode {
	if n == nil || !isEdge(n) {
		return autonomyNotEdge
	}
	if v, ok := n.Labels[AutonomyLabel]; ok {
		if on, err := strconv.ParseBool(v); err == nil && !on {
			return autonomyOff
		}
	}
	return autonomyOn
}

// tolerationPlan is the change autonomy wants on one pod.
type tolerationPlan struct {
	tolerations []corev1.Toleration
	// restore is the new AutonomyRestoreAnnotation; "" removes it.
	restore string
	reason  string // for the log
}

// planTolerations returns what the pod's tolerations and restore record should become for mode, and false when
// they are as wanted already. It does not modify pod.
func planTolerations(pod *corev1.Pod, mode autonomyMode) (tolerationPlan, bool) {
	if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || podFinished(&pod.Status) || isMirrorPod(pod) {
		// Mirror pods follow their node's static pods, which no eviction stops; finished and deleted pods need
		// nothing.
		return tolerationPlan{}, false
	}
	raw, recorded := pod.Annotations[AutonomyRestoreAnnotation]
	if mode != autonomyOn {
		if !recorded {
			return tolerationPlan{}, false // never changed by autonomy: not ours to touch
		}
		return planRestore(pod, raw), true
	}
	rec, err := parseRestore(raw)
	if err != nil {
		// Edited by hand: what follows records afresh.
		rec = map[string]int64{}
	}
	tols := slices.Clone(pod.Spec.Tolerations)
	changed := false
	for _, key := range autonomyTaints {
		found := false
		for i := range tols {
			t := &tols[i]
			if !toleratesOutage(t, key) {
				continue
			}
			found = true
			if t.TolerationSeconds != nil {
				if prev, ok := rec[key]; !ok || *t.TolerationSeconds < prev {
					rec[key] = *t.TolerationSeconds
				}
				t.TolerationSeconds = nil
				changed = true
			}
		}
		if !found {
			tols = append(tols, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
			if _, ok := rec[key]; !ok {
				rec[key] = DefaultTolerationSeconds
			}
			changed = true
		}
	}
	if !changed {
		return tolerationPlan{}, false
	}
	b, _ := json.Marshal(rec) // map[string]int64 always encodes, keys sorted
	return tolerationPlan{tolerations: tols, restore: string(b), reason: "outage tolerated indefinitely"}, true
}

// planRestore puts back the recorded tolerationSeconds on tolerations that still tolerate forever, and drops the
// record. An unreadable record restores DefaultTolerationSeconds for both taints.
func planRestore(pod *corev1.Pod, raw string) tolerationPlan {
	rec, err := parseRestore(raw)
	if err != nil {
		rec = map[string]int64{}
		for _, key := range autonomyTaints {
			rec[key] = DefaultTolerationSeconds
		}
	}
	tols := slices.Clone(pod.Spec.Tolerations)
	for i := range tols {
		t := &tols[i]
		// The API server allows tolerationSeconds only with effect NoExecute.
		if t.TolerationSeconds != nil || t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		for _, key := range slices.Sorted(maps.Keys(rec)) {
			if toleratesOutage(t, key) {
				s := rec[key]
				t.TolerationSeconds = &s
				break
			}
		}
	}
	return tolerationPlan{tolerations: tols, reason: "autonomy off: toleration seconds restored"}
}

func parseRestore(raw string) (map[string]int64, error) {
	rec := map[string]int64{}
	if raw == "" {
		return rec, nil
	}
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// toleratesOutage reports whether t is a toleration of exactly the NoExecute taint key (any value-less match).
// Tolerations without a key also match, but they cover every taint and are left as their author wrote them.
func toleratesOutage(t *corev1.Toleration, key string) bool {
	if t.Key != key || (t.Effect != "" && t.Effect != corev1.TaintEffectNoExecute) {
		return false
	}
	switch t.Operator {
	case corev1.TolerationOpExists:
		return true
	case "", corev1.TolerationOpEqual:
		return t.Value == "" // the node lifecycle controller's taints have no value
	}
	return false
}

func isMirrorPod(p *corev1.Pod) bool {
	_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// autonomy applies the plans. check and checkNode run on the downstream loop and only queue pod keys; the workers
// write.
type autonomy struct {
	kube    kubernetes.Interface
	pods    corelisters.PodLister
	byNode  cache.Indexer // pods by indexNode
	nodes   corelisters.NodeLister
	timeout time.Duration
	queue   workqueue.TypedRateLimitingInterface[string]
}

func newAutonomy(kube kubernetes.Interface, pods corelisters.PodLister, byNode cache.Indexer, nodes corelisters.NodeLister, timeout time.Duration) *autonomy {
	return &autonomy{
		kube: kube, pods: pods, byNode: byNode, nodes: nodes, timeout: timeout,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
}

// check queues p if its tolerations are not what its node asks. A node not in the cache yet is checked with all
// its pods when it arrives.
func (a *autonomy) check(p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		return
	}
	n, err := a.nodes.Get(p.Spec.NodeName)
	if err != nil {
		n = nil // node gone or not seen yet: undo only
	}
	if _, change := planTolerations(p, nodeAutonomy(n)); change {
		a.queue.Add(p.Namespace + "/" + p.Name)
	}
}

// checkNode checks every pod of n when the node is new or its mode changed.
func (a *autonomy) checkNode(n, old *corev1.Node) {
	mode := nodeAutonomy(n)
	if old != nil {
		prev := nodeAutonomy(old)
		if prev == mode {
			return
		}
		klog.InfoS("Edge autonomy of node changed; updating its pods' tolerations", "node", n.Name, "from", prev.String(), "to", mode.String())
	}
	objs, err := a.byNode.ByIndex(indexNode, n.Name)
	if err != nil {
		klog.ErrorS(err, "Cannot list pods of node", "node", n.Name)
		return
	}
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			a.check(p)
		}
	}
}

// run works the queue until ctx ends.
func (a *autonomy) run(ctx context.Context) {
	for {
		key, shutdown := a.queue.Get()
		if shutdown {
			return
		}
		err := a.sync(ctx, key)
		switch {
		case err == nil:
			a.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			klog.InfoS("Cannot update pod tolerations for edge autonomy; retrying", "pod", key, "err", err)
			a.queue.AddRateLimited(key)
		}
		a.queue.Done(key)
	}
}

// sync brings one pod's tolerations in line with its node's mode. The first attempt reads the cache; after a
// conflict the pod is read from the API server, so a retry never patches from the version that just lost.
func (a *autonomy) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var pod *corev1.Pod
		var err error
		if cached {
			pod, err = a.pods.Pods(ns).Get(name)
			cached = false
		} else {
			cctx, cancel := context.WithTimeout(ctx, a.timeout)
			pod, err = a.kube.CoreV1().Pods(ns).Get(cctx, name, metav1.GetOptions{})
			cancel()
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		var n *corev1.Node
		if pod.Spec.NodeName != "" {
			if n, err = a.nodes.Get(pod.Spec.NodeName); err != nil {
				n = nil
			}
		}
		mode := nodeAutonomy(n)
		plan, change := planTolerations(pod, mode)
		if !change {
			return nil
		}
		if err := a.patch(ctx, pod, plan); err != nil {
			return err
		}
		klog.InfoS("Edge autonomy: pod tolerations updated", "pod", klog.KObj(pod), "node", pod.Spec.NodeName, "autonomy", mode.String(), "change", plan.reason)
		return nil
	})
}

func (a *autonomy) patch(ctx context.Context, pod *corev1.Pod, plan tolerationPlan) error {
	var restore any // JSON null removes the annotation
	if plan.restore != "" {
		restore = plan.restore
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			// A merge patch carrying resourceVersion is refused with a conflict if the pod changed since.
			"resourceVersion": pod.ResourceVersion,
			"annotations":     map[string]any{AutonomyRestoreAnnotation: restore},
		},
		// Lists are replaced whole by a merge patch; the precondition keeps concurrent changes safe.
		"spec": map[string]any{"tolerations": plan.tolerations},
	})
	if err != nil {
		return fmt.Errorf("encoding toleration patch of pod %s: %w", klog.KObj(pod), err)
	}
	cctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	_, err = a.kube.CoreV1().Pods(pod.Namespace).Patch(cctx, pod.Name, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: autonomyFieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
