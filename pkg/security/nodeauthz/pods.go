package nodeauthz

import (
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// MirrorPodAnnotation marks the API server's copy of a static pod.
const MirrorPodAnnotation = "kubernetes.io/config.mirror"

// MirrorPod allows node to create pod only as NodeRestriction allows a kubelet to: a mirror pod bound to the node,
// owned (as controller, without blockOwnerDeletion) by the node's own Node object, and referencing no
// ServiceAccount, Secret, ConfigMap, claim or other API object — otherwise creating a pod would be a way to get
// cloudcore to ship those objects to the node.
func (a *Authorizer) MirrorPod(node string, pod *corev1.Pod) error {
	refuse := func(format string, args ...any) error { return a.refuse(RuleMirrorPod, node, format, args...) }
	if _, ok := pod.Annotations[MirrorPodAnnotation]; !ok {
		return refuse("pod %s/%s has no %q annotation: a node creates only mirror pods", pod.Namespace, pod.Name, MirrorPodAnnotation)
	}
	if pod.Spec.NodeName != node {
		return refuse("may create pods only with spec.nodeName set to itself, not %q", pod.Spec.NodeName)
	}
	if len(pod.OwnerReferences) != 1 {
		return refuse("may create pods only with a single owner reference set to itself")
	}
	owner := pod.OwnerReferences[0]
	if owner.APIVersion != "v1" || owner.Kind != "Node" || owner.Name != node {
		return refuse("may create pods only with an owner reference set to itself")
	}
	if !ptr.Deref(owner.Controller, false) {
		return refuse("may create pods only with a controller owner reference set to itself")
	}
	if ptr.Deref(owner.BlockOwnerDeletion, false) {
		return refuse("must not set blockOwnerDeletion on an owner reference")
	}
	n, err := a.nodes.Get(node)
	if err != nil {
		return refuse("cannot verify its Node's UID: %v", err)
	}
	if owner.UID != n.UID {
		return refuse("owner reference UID %s is not its Node's UID %s", owner.UID, n.UID)
	}
	if what := apiReference(pod); what != "" {
		return refuse("may not create pods that reference %s", what)
	}
	return nil
}

// apiReference names the first kind of API object pod references, or "".
func apiReference(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return "serviceaccounts"
	}
	refs := PodReferences(pod)
	switch {
	case len(refs.Secrets) > 0:
		return "secrets"
	case len(refs.ConfigMaps) > 0:
		return "configmaps"
	case len(refs.PVCs) > 0:
		return "persistentvolumeclaims"
	case len(pod.Spec.ResourceClaims) > 0:
		return "resourceclaims"
	}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.CSI != nil:
			return "csidrivers (via CSI volumes)"
		case v.Glusterfs != nil:
			return "endpoints (via glusterFS volumes)"
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.DownwardAPI == nil {
					return "API objects (via projected volumes)"
				}
			}
		}
	}
	return ""
}

// Token lifetimes a node may ask for: the API server's minimum, and the kubelet's default when a projection does not
// say (kube-api-access asks for 3607 s).
const (
	minTokenSeconds     = 600
	defaultTokenSeconds = 3600
)

// TokenRequest allows node to obtain a token of ServiceAccount ns/sa as tr asks, for pod (the live object tr's
// boundObjectRef names; nil when it does not exist). The token must be bound to a pod bound to the node, for that
// pod's own ServiceAccount, with at most one audience that one of the pod's projected token volumes asks for, and
// no longer-lived than that volume asks. An unset lifetime is set to the volume's.
func (a *Authorizer) TokenRequest(node, ns, sa string, tr *authv1.TokenRequest, pod *corev1.Pod) error {
	refuse := func(format string, args ...any) error {
		return a.refuse(RuleServiceAccountToken, node, format, args...)
	}
	ref := tr.Spec.BoundObjectRef
	switch {
	case ref == nil || ref.APIVersion != "v1" || ref.Kind != "Pod" || ref.Name == "":
		return refuse("requested a token for %s/%s not bound to a pod", ns, sa)
	case ref.UID == "":
		return refuse("requested a token with a pod binding without a uid")
	case pod == nil:
		return refuse("requested a token bound to pod %s/%s, which does not exist", ns, ref.Name)
	case ref.UID != pod.UID:
		return refuse("the UID in the bound object reference (%s) is not pod %s/%s's; it may have been deleted and recreated", ref.UID, ns, ref.Name)
	case pod.Spec.NodeName != node:
		return refuse("requested a token bound to pod %s/%s, which is scheduled on %q", ns, ref.Name, pod.Spec.NodeName)
	case serviceAccount(pod) != sa:
		return refuse("requested a token for service account %s/%s, but pod %s runs as %q", ns, sa, ref.Name, serviceAccount(pod))
	case len(tr.Spec.Audiences) > 1:
		return refuse("may request at most one audience, not %d", len(tr.Spec.Audiences))
	}
	audience := ""
	if len(tr.Spec.Audiences) == 1 {
		audience = tr.Spec.Audiences[0]
	}
	maxSeconds, ok := projectedTokenSeconds(pod, audience)
	if !ok {
		return refuse("pod %s/%s mounts no service account token for audience %q", ns, ref.Name, audience)
	}
	if tr.Spec.ExpirationSeconds == nil {
		tr.Spec.ExpirationSeconds = ptr.To(maxSeconds)
	}
	if *tr.Spec.ExpirationSeconds > maxSeconds {
		return refuse("requested a token valid for %d s; pod %s/%s's volume asks for at most %d s", *tr.Spec.ExpirationSeconds, ns, ref.Name, maxSeconds)
	}
	return nil
}

// projectedTokenSeconds returns the longest lifetime the pod's projected token volumes ask for audience ("" is the
// API server's own).
func projectedTokenSeconds(pod *corev1.Pod, audience string) (int64, bool) {
	var longest int64
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			t := s.ServiceAccountToken
			if t == nil || t.Audience != audience {
				continue
			}
			found = true
			longest = max(longest, ptr.Deref(t.ExpirationSeconds, defaultTokenSeconds), minTokenSeconds)
		}
	}
	return longest, found
}

// Event allows node to record ev when it is about the node itself (in the default namespace, as kubelets write
// them) or about pod, a pod bound to the node in the event's namespace (pod is the live object the event names; nil
// when it does not exist).
func (a *Authorizer) Event(node string, ev *corev1.Event, pod *corev1.Pod) error {
	obj := ev.InvolvedObject
	switch obj.Kind {
	case "Node":
		switch {
		case obj.Name != node:
			return a.refuse(RuleEvent, node, "may not record events about node %q", obj.Name)
		case ev.Namespace != metav1.NamespaceDefault:
			return a.refuse(RuleEvent, node, "events about the node belong in namespace %q, not %q", metav1.NamespaceDefault, ev.Namespace)
		}
		return nil
	case "Pod":
		switch {
		case obj.Namespace != ev.Namespace:
			return a.refuse(RuleEvent, node, "event %s/%s is about pod %s/%s in another namespace", ev.Namespace, ev.Name, obj.Namespace, obj.Name)
		case pod == nil:
			return a.refuse(RuleEvent, node, "event %s/%s is about pod %s/%s, which does not exist", ev.Namespace, ev.Name, obj.Namespace, obj.Name)
		case pod.Spec.NodeName != node:
			return a.refuse(RuleEvent, node, "event %s/%s is about pod %s/%s, which is bound to %q", ev.Namespace, ev.Name, obj.Namespace, obj.Name, pod.Spec.NodeName)
		case obj.UID != "" && obj.UID != pod.UID:
			return a.refuse(RuleEvent, node, "event %s/%s is about an earlier pod %s/%s (uid %s)", ev.Namespace, ev.Name, obj.Namespace, obj.Name, obj.UID)
		}
		return nil
	}
	return a.refuse(RuleEvent, node, "may record events only about itself and its pods, not a %q", obj.Kind)
}
