// Package nodeauthz decides what an edge node may read and write through cloudcore. Edge hosts are physically
// exposed, so cloudcore treats every request that comes up the link as coming from a possibly compromised node and
// applies the rules Kubernetes applies to kubelets: the Node authorizer (a node reads only what the pods bound to it
// reference) and the NodeRestriction admission plugin (a node writes only itself, its own pods' status, mirror pods
// and a limited set of its own labels). The same graph decides what cloudcore pushes down to a node.
//
// Decisions are answered from the pod informer cloudcore already keeps: an index maps each node to the pods bound
// to it and to the objects those pods reference, so a check is one map lookup and needs no API call. See
// docs/security.md for the rules and how they differ from Kubernetes'.
package nodeauthz

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/pkg/metrics"
)

// Rule names a reason for refusing a node's request. Rules are the metric label and part of every refusal message,
// so an operator can tell from a log line which rule fired.
type Rule string

// The rules. Each one is a sentence in docs/security.md.
const (
	// RuleOwnNode: a node writes only its own Node and Lease.
	RuleOwnNode Rule = "own-node"
	// RuleNodeLabels: a node may not set node-restriction.kubernetes.io labels, nor kubernetes.io/k8s.io labels
	// outside the kubelet's set (the edge roles excepted).
	RuleNodeLabels Rule = "node-labels"
	// RuleNodeSpec: a node may not set its configSource, nor change its taints or owner references.
	RuleNodeSpec Rule = "node-spec"
	// RulePodBound: pod status and deletes only for pods bound to the node, the live UID as precondition.
	RulePodBound Rule = "pod-bound"
	// RuleMirrorPod: a node creates only mirror pods of its own, owned by its Node, referencing no API objects.
	RuleMirrorPod Rule = "mirror-pod"
	// RuleReferenced: a node reads (and is sent) only the Secrets, ConfigMaps, PVCs and PVs its pods reference.
	RuleReferenced Rule = "referenced-object"
	// RuleServiceAccountToken: tokens only for a pod bound to the node, for that pod's own ServiceAccount, bound to
	// the pod, with an audience and lifetime the pod's projected volumes ask for.
	RuleServiceAccountToken Rule = "serviceaccount-token"
	// RuleEvent: events only about the node itself or pods bound to it.
	RuleEvent Rule = "event-object"
	// RuleNotReady: the graph has not been loaded yet; the node should retry.
	RuleNotReady Rule = "graph-not-synced"
)

var allRules = []Rule{RuleOwnNode, RuleNodeLabels, RuleNodeSpec, RulePodBound, RuleMirrorPod, RuleReferenced,
	RuleServiceAccountToken, RuleEvent, RuleNotReady}

// Refusal is the error for a request a rule forbids. Handlers answer it as 403 Forbidden (429 for RuleNotReady).
type Refusal struct {
	Rule   Rule
	Node   string
	Reason string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("forbidden by rule %s: node %q: %s", r.Rule, r.Node, r.Reason)
}

// IsRefusal returns the Refusal in err's chain, if any.
func IsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// Options configure an Authorizer.
type Options struct {
	// Pods is the informer of pods bound to nodes; New adds the graph index to it, so it must not have started.
	Pods cache.SharedIndexInformer
	// Nodes reads Nodes (for the mirror-pod owner UID check).
	Nodes corelisters.NodeLister
	// Registerer receives the refusal counter; nil leaves it unexported.
	Registerer prometheus.Registerer
}

// Authorizer answers the questions of the rules above. It is safe for concurrent use.
type Authorizer struct {
	pods     cache.SharedIndexInformer
	nodes    corelisters.NodeLister
	refusals *prometheus.CounterVec
}

// New returns an Authorizer over opts.Pods, adding its index to the informer.
func New(opts Options) (*Authorizer, error) {
	if opts.Pods == nil || opts.Nodes == nil {
		return nil, errors.New("node authorizer: a pod informer and a node lister are required")
	}
	if _, ok := opts.Pods.GetIndexer().GetIndexers()[indexGraph]; !ok {
		if err := opts.Pods.AddIndexers(cache.Indexers{indexGraph: graphKeys}); err != nil {
			return nil, fmt.Errorf("node authorizer: adding the graph index to the pod informer: %w", err)
		}
	}
	return &Authorizer{pods: opts.Pods, nodes: opts.Nodes, refusals: newRefusals(opts.Registerer)}, nil
}

func newRefusals(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tether",
		Subsystem: "nodeauthz",
		Name:      "refusals_total",
		Help:      "Edge node requests and downstream deliveries refused by the node authorizer, by rule.",
	}, []string{"rule"})
	for _, r := range allRules {
		c.WithLabelValues(string(r))
	}
	return metrics.Shared(reg, c)
}

// refuse counts and returns a refusal.
func (a *Authorizer) refuse(rule Rule, node, format string, args ...any) error {
	a.refusals.WithLabelValues(string(rule)).Inc()
	return &Refusal{Rule: rule, Node: node, Reason: fmt.Sprintf(format, args...)}
}

// ready refuses while the pod cache is incomplete: an empty graph would refuse legitimate requests for good reasons
// that are not true.
func (a *Authorizer) ready(node string) error {
	if !a.pods.HasSynced() {
		return a.refuse(RuleNotReady, node, "cloudcore has not loaded the pods yet; retry")
	}
	return nil
}

// OwnNode allows a write to the Node or Lease named name only when it is the node itself.
func (a *Authorizer) OwnNode(node, name string) error {
	if name != node {
		return a.refuse(RuleOwnNode, node, "may not act on node %q", name)
	}
	return nil
}

// PodBound allows status writes and deletes of pod only when it is bound to node.
func (a *Authorizer) PodBound(node string, pod *corev1.Pod) error {
	if pod.Spec.NodeName != node {
		return a.refuse(RulePodBound, node, "pod %s/%s is bound to %q", pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	return nil
}

// Object kinds of the graph, as they appear in index keys and in MayRead.
const (
	KindPod            = "pod"
	KindConfigMap      = "configmap"
	KindSecret         = "secret"
	KindServiceAccount = "serviceaccount"
	KindPVC            = "persistentvolumeclaim"
)

// MayRead allows node to read (and be sent) the namespaced object kind ns/name: a ConfigMap, Secret, PVC or
// ServiceAccount referenced by a pod bound to it, or such a pod itself.
func (a *Authorizer) MayRead(node, kind, ns, name string) error {
	if err := a.ready(node); err != nil {
		return err
	}
	objs, err := a.pods.GetIndexer().ByIndex(indexGraph, graphKey(node, kind, ns, name))
	if err != nil {
		return fmt.Errorf("node authorizer: looking up %s %s/%s for node %s: %w", kind, ns, name, node, err)
	}
	if len(objs) == 0 {
		return a.refuse(RuleReferenced, node, "no pod bound to it references %s %s/%s", kind, ns, name)
	}
	return nil
}

// podsOf returns the pods bound to node (for PV checks, which go through each pod's claims).
func (a *Authorizer) podsOf(node string) ([]*corev1.Pod, error) {
	objs, err := a.pods.GetIndexer().ByIndex(indexGraph, nodeKey(node))
	if err != nil {
		return nil, fmt.Errorf("node authorizer: listing pods of node %s: %w", node, err)
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// MayReadPV allows node to read PersistentVolume pv when a claim referenced by one of its pods is bound to it;
// claim returns the claim ns/name (from a cache or the API server).
func (a *Authorizer) MayReadPV(node, pv string, claim func(ns, name string) (*corev1.PersistentVolumeClaim, error)) error {
	if err := a.ready(node); err != nil {
		return err
	}
	pods, err := a.podsOf(node)
	if err != nil {
		return err
	}
	for _, p := range pods {
		for _, c := range PodReferences(p).PVCs {
			pvc, err := claim(p.Namespace, c)
			if err == nil && pvc.Spec.VolumeName == pv {
				return nil
			}
		}
	}
	return a.refuse(RuleReferenced, node, "no claim of a pod bound to it is bound to persistentvolume %s", pv)
}

// MayHold decides whether node may hold the object of a downstream message; resource types outside the graph (the
// node's own Node, devices, ...) are decided by their controllers and pass.
func (a *Authorizer) MayHold(node, resourceType, ns, name string) error {
	switch strings.ToLower(resourceType) {
	case KindConfigMap, KindSecret, KindPVC, KindPod:
		return a.MayRead(node, strings.ToLower(resourceType), ns, name)
	}
	return nil
}
