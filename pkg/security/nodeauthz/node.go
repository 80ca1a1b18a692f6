package nodeauthz

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
)

// Edge role labels. cloudcore and edgecore set them on every edge node (kubectl shows ROLES agent,edge), so they
// are allowed although they sit in kubernetes.io, which kubelets may not write.
const (
	EdgeRoleLabel  = "node-role.kubernetes.io/edge"
	AgentRoleLabel = "node-role.kubernetes.io/agent"
)

// kubeletLabels are the kubernetes.io labels a kubelet may set on its own Node (k8s.io/kubelet's well-known set);
// kubeletLabelNamespaces are the namespaces it may use freely, with their subdomains.
var (
	kubeletLabels = map[string]bool{
		corev1.LabelHostname:                true,
		corev1.LabelTopologyZone:            true,
		corev1.LabelTopologyRegion:          true,
		corev1.LabelFailureDomainBetaZone:   true,
		corev1.LabelFailureDomainBetaRegion: true,
		corev1.LabelInstanceType:            true,
		corev1.LabelInstanceTypeStable:      true,
		corev1.LabelOSStable:                true,
		corev1.LabelArchStable:              true,
		"beta.kubernetes.io/os":             true,
		"beta.kubernetes.io/arch":           true,
	}
	kubeletLabelNamespaces = []string{corev1.LabelNamespaceSuffixKubelet, corev1.LabelNamespaceSuffixNode}
)

// NodeLabels allows node to change its labels from old to new (old nil on registration) unless a changed,
// added or removed key is one NodeRestriction forbids: anything under node-restriction.kubernetes.io, and
// kubernetes.io / k8s.io keys outside the kubelet's set. Those are how administrators steer privileged workloads,
// so a node must not be able to attract them.
func (a *Authorizer) NodeLabels(node string, old, new map[string]string) error {
	var forbidden []string
	check := func(k string) {
		if forbiddenLabel(k) && !slices.Contains(forbidden, k) {
			forbidden = append(forbidden, k)
		}
	}
	for k, v := range new {
		if ov, ok := old[k]; !ok || ov != v {
			check(k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			check(k)
		}
	}
	if len(forbidden) > 0 {
		slices.Sort(forbidden)
		return a.refuse(RuleNodeLabels, node, "may not set, change or remove labels %s", strings.Join(forbidden, ", "))
	}
	return nil
}

func forbiddenLabel(key string) bool {
	if key == EdgeRoleLabel || key == AgentRoleLabel {
		return false
	}
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	if inDomain(ns, corev1.LabelNamespaceNodeRestriction) {
		return true
	}
	if !inDomain(ns, "kubernetes.io") && !inDomain(ns, "k8s.io") {
		return false
	}
	if kubeletLabels[key] {
		return false
	}
	for _, allowed := range kubeletLabelNamespaces {
		if inDomain(ns, allowed) {
			return false
		}
	}
	return true
}

func inDomain(ns, domain string) bool { return ns == domain || strings.HasSuffix(ns, "."+domain) }

// NodeSpec allows a registration (old nil) or update of node's Node unless it sets a configSource (a node's view
// is scoped by its spec), or, on update, changes its taints or owner references (taints keep workloads away).
func (a *Authorizer) NodeSpec(node string, old, new *corev1.Node) error {
	if old == nil {
		if new.Spec.ConfigSource != nil {
			return a.refuse(RuleNodeSpec, node, "may not register with a configSource")
		}
		return nil
	}
	switch {
	case new.Spec.ConfigSource != nil && !apiequality.Semantic.DeepEqual(new.Spec.ConfigSource, old.Spec.ConfigSource):
		return a.refuse(RuleNodeSpec, node, "may not change its configSource")
	case !apiequality.Semantic.DeepEqual(new.Spec.Taints, old.Spec.Taints):
		return a.refuse(RuleNodeSpec, node, "may not change its taints")
	case !apiequality.Semantic.DeepEqual(new.OwnerReferences, old.OwnerReferences):
		return a.refuse(RuleNodeSpec, node, "may not change its owner references")
	}
	return nil
}
