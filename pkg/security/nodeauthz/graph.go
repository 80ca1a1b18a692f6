package nodeauthz

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// indexGraph is the pod index behind every decision: a pod bound to node N has the keys N (the node's pods),
// N/pod/ns/name, and N/<kind>/ns/name for each object it references.
const indexGraph = "nodeauthz-graph"

func nodeKey(node string) string { return node }

func graphKey(node, kind, ns, name string) string { return node + "/" + kind + "/" + ns + "/" + name }

func graphKeys(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	node, ns := p.Spec.NodeName, p.Namespace
	refs := PodReferences(p)
	keys := make([]string, 0, 3+len(refs.ConfigMaps)+len(refs.Secrets)+len(refs.PVCs))
	keys = append(keys, nodeKey(node), graphKey(node, KindPod, ns, p.Name), graphKey(node, KindServiceAccount, ns, serviceAccount(p)))
	for _, n := range refs.ConfigMaps {
		keys = append(keys, graphKey(node, KindConfigMap, ns, n))
	}
	for _, n := range refs.Secrets {
		keys = append(keys, graphKey(node, KindSecret, ns, n))
	}
	for _, n := range refs.PVCs {
		keys = append(keys, graphKey(node, KindPVC, ns, n))
	}
	return keys, nil
}

// serviceAccount is the pod's ServiceAccount; the API server defaults an empty one to "default".
func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}

// References are the API objects a pod needs on its node, each list sorted and unique.
type References struct {
	ConfigMaps []string
	Secrets    []string
	PVCs       []string
}

// PodReferences returns everything a kubelet would read for a pod's volumes, environment and image pulls: the
// edges of the graph that start at the pod.
func PodReferences(p *corev1.Pod) References {
	var r References
	cm := func(n string) {
		if n != "" {
			r.ConfigMaps = append(r.ConfigMaps, n)
		}
	}
	sec := func(n string) {
		if n != "" {
			r.Secrets = append(r.Secrets, n)
		}
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			cm(v.ConfigMap.Name)
		case v.Secret != nil:
			sec(v.Secret.SecretName)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					cm(s.ConfigMap.Name)
				}
				if s.Secret != nil {
					sec(s.Secret.Name)
				}
			}
		case v.PersistentVolumeClaim != nil:
			if v.PersistentVolumeClaim.ClaimName != "" {
				r.PVCs = append(r.PVCs, v.PersistentVolumeClaim.ClaimName)
			}
		case v.Ephemeral != nil:
			// The ephemeral volume controller names the claim <pod>-<volume>.
			r.PVCs = append(r.PVCs, p.Name+"-"+v.Name)
		case v.CSI != nil && v.CSI.NodePublishSecretRef != nil:
			sec(v.CSI.NodePublishSecretRef.Name)
		case v.FlexVolume != nil && v.FlexVolume.SecretRef != nil:
			sec(v.FlexVolume.SecretRef.Name)
		case v.ISCSI != nil && v.ISCSI.SecretRef != nil:
			sec(v.ISCSI.SecretRef.Name)
		case v.RBD != nil && v.RBD.SecretRef != nil:
			sec(v.RBD.SecretRef.Name)
		case v.CephFS != nil && v.CephFS.SecretRef != nil:
			sec(v.CephFS.SecretRef.Name)
		case v.AzureFile != nil:
			sec(v.AzureFile.SecretName)
		case v.ScaleIO != nil && v.ScaleIO.SecretRef != nil:
			sec(v.ScaleIO.SecretRef.Name)
		case v.StorageOS != nil && v.StorageOS.SecretRef != nil:
			sec(v.StorageOS.SecretRef.Name)
		case v.Cinder != nil && v.Cinder.SecretRef != nil:
			sec(v.Cinder.SecretRef.Name)
		}
	}
	env := func(from []corev1.EnvFromSource, vars []corev1.EnvVar) {
		for _, f := range from {
			if f.ConfigMapRef != nil {
				cm(f.ConfigMapRef.Name)
			}
			if f.SecretRef != nil {
				sec(f.SecretRef.Name)
			}
		}
		for _, e := range vars {
			if e.ValueFrom == nil {
				continue
			}
			if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
				cm(ref.Name)
			}
			if ref := e.ValueFrom.SecretKeyRef; ref != nil {
				sec(ref.Name)
			}
		}
	}
	for _, c := range p.Spec.InitContainers {
		env(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.Containers {
		env(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.EphemeralContainers {
		env(c.EnvFrom, c.Env)
	}
	for _, s := range p.Spec.ImagePullSecrets {
		sec(s.Name)
	}
	for _, l := range []*[]string{&r.ConfigMaps, &r.Secrets, &r.PVCs} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return r
}
