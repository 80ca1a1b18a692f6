package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
)

// Volume plugin directory names are the kubelet's, so the on-disk layout looks familiar.
const (
	pluginConfigMap   = "kubernetes.io~configmap"
	pluginSecret      = "kubernetes.io~secret"
	pluginEmptyDir    = "kubernetes.io~empty-dir"
	pluginDownwardAPI = "kubernetes.io~downward-api"
	pluginProjected   = "kubernetes.io~projected"

	defaultVolumeMode = 0o644
)

// podVolumes is the host side of a pod's volumes after a sync: the path of each ready volume, and why the
// others are not ready. Only containers mounting a failed volume are held back. readOnly marks the volumes
// Edged writes (ConfigMap, Secret, downward API, projected): containers always get them read-only, as from
// the kubelet, so a container cannot tamper with what Edged swaps in atomically.
type podVolumes struct {
	paths    map[string]string
	errs     map[string]error
	readOnly map[string]bool
}

func (m *Manager) podDir(uid string) string {
	return filepath.Join(m.opts.RootDir, "pods", uid)
}

func (m *Manager) volumeDir(uid, plugin, name string) string {
	return filepath.Join(m.podDir(uid), "volumes", plugin, name)
}

// syncVolumes prepares every volume of the pod. ConfigMap, Secret, downward API and projected volumes are
// rewritten on every sync, so updates reach running containers; a volume that cannot be refreshed keeps its
// previous content.
func (m *Manager) syncVolumes(ctx context.Context, pod *corev1.Pod, objs *objectCache, ips podIPs) podVolumes {
	pv := podVolumes{paths: map[string]string{}, errs: map[string]error{}, readOnly: map[string]bool{}}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		p, err := m.syncVolume(ctx, pod, v, objs, ips)
		if err != nil {
			pv.errs[v.Name] = fmt.Errorf("volume %q: %w", v.Name, err)
			continue
		}
		pv.paths[v.Name] = p
		pv.readOnly[v.Name] = v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil
	}
	return pv
}

func (m *Manager) syncVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, objs *objectCache, ips podIPs) (string, error) {
	uid := string(pod.UID)
	switch {
	case v.HostPath != nil:
		return v.HostPath.Path, checkHostPath(v.HostPath)
	case v.EmptyDir != nil:
		dir := m.volumeDir(uid, pluginEmptyDir, v.Name)
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			return dir, ensureTmpfs(dir, m.memoryVolumeSize(pod, v.EmptyDir.SizeLimit), emptyDirTmpfsMode)
		}
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return "", err
		}
		// Any container user may write to an emptyDir, whatever the umask.
		return dir, os.Chmod(dir, 0o777)
	case v.ConfigMap != nil:
		payload, err := configMapPayload(ctx, pod, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode, objs)
		if err != nil {
			return "", err
		}
		return m.writeVolume(pod, pluginConfigMap, v.Name, payload)
	case v.Secret != nil:
		payload, err := secretPayload(ctx, pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode, objs)
		if err != nil {
			return "", err
		}
		if err := ensureTmpfs(m.volumeDir(uid, pluginSecret, v.Name), m.memoryVolumeSize(pod, nil), secretTmpfsMode); err != nil {
			return "", err
		}
		return m.writeVolume(pod, pluginSecret, v.Name, payload)
	case v.DownwardAPI != nil:
		payload, err := downwardPayload(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode, ips, m.opts.NodeAllocatable)
		if err != nil {
			return "", err
		}
		return m.writeVolume(pod, pluginDownwardAPI, v.Name, payload)
	case v.Projected != nil:
		payload, err := m.projectedPayload(ctx, pod, v.Projected, objs, ips)
		if err != nil {
			return "", err
		}
		// Projected volumes carry service account tokens and secrets: memory too, as with the kubelet.
		if err := ensureTmpfs(m.volumeDir(uid, pluginProjected, v.Name), m.memoryVolumeSize(pod, nil), secretTmpfsMode); err != nil {
			return "", err
		}
		return m.writeVolume(pod, pluginProjected, v.Name, payload)
	}
	return "", errors.New("unsupported volume type (supported: configMap, secret, hostPath, emptyDir, downwardAPI, projected)")
}

func (m *Manager) writeVolume(pod *corev1.Pod, plugin, name string, payload map[string]fileData) (string, error) {
	dir := m.volumeDir(string(pod.UID), plugin, name)
	changed, err := writeAtomic(dir, payload)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", dir, err)
	}
	if changed {
		klog.V(2).InfoS("Volume content written", "pod", klog.KObj(pod), "volume", name, "files", len(payload))
	}
	return dir, nil
}

func fileMode(item *int32, def *int32) os.FileMode {
	if item != nil {
		return os.FileMode(*item) & 0o777
	}
	if def != nil {
		return os.FileMode(*def) & 0o777
	}
	return defaultVolumeMode
}

// keyPayload maps keys to files: all keys, or only the listed items (each must exist unless optional).
func keyPayload(data map[string][]byte, items []corev1.KeyToPath, optional bool, def *int32, what string) (map[string]fileData, error) {
	out := map[string]fileData{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = fileData{data: v, mode: fileMode(nil, def)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("couldn't find key %s in %s", it.Key, what)
		}
		out[it.Path] = fileData{data: v, mode: fileMode(it.Mode, def)}
	}
	return out, nil
}

func configMapPayload(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, def *int32, objs *objectCache) (map[string]fileData, error) {
	cm, err := objs.configMap(ctx, pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && isOptional(optional) {
			return map[string]fileData{}, nil
		}
		return nil, err
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return keyPayload(data, items, isOptional(optional), def, "ConfigMap "+pod.Namespace+"/"+name)
}

func secretPayload(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, def *int32, objs *objectCache) (map[string]fileData, error) {
	s, err := objs.secret(ctx, pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && isOptional(optional) {
			return map[string]fileData{}, nil
		}
		return nil, err
	}
	return keyPayload(s.Data, items, isOptional(optional), def, "Secret "+pod.Namespace+"/"+name)
}

func downwardPayload(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def *int32, ips podIPs, alloc corev1.ResourceList) (map[string]fileData, error) {
	out := map[string]fileData{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = podFieldValue(pod, it.FieldRef.FieldPath, ips)
		case it.ResourceFieldRef != nil:
			if it.ResourceFieldRef.ContainerName == "" {
				return nil, fmt.Errorf("downward API file %s: resourceFieldRef needs containerName", it.Path)
			}
			v, err = resourceFieldValue(pod, nil, it.ResourceFieldRef, alloc)
		default:
			err = errors.New("no fieldRef or resourceFieldRef")
		}
		if err != nil {
			return nil, fmt.Errorf("downward API file %s: %w", it.Path, err)
		}
		out[it.Path] = fileData{data: []byte(v), mode: fileMode(it.Mode, def)}
	}
	return out, nil
}

func (m *Manager) projectedPayload(ctx context.Context, pod *corev1.Pod, pv *corev1.ProjectedVolumeSource, objs *objectCache, ips podIPs) (map[string]fileData, error) {
	out := map[string]fileData{}
	for _, src := range pv.Sources {
		var part map[string]fileData
		var err error
		switch {
		case src.ConfigMap != nil:
			part, err = configMapPayload(ctx, pod, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, pv.DefaultMode, objs)
		case src.Secret != nil:
			part, err = secretPayload(ctx, pod, src.Secret.Name, src.Secret.Items, src.Secret.Optional, pv.DefaultMode, objs)
		case src.DownwardAPI != nil:
			part, err = downwardPayload(pod, src.DownwardAPI.Items, pv.DefaultMode, ips, m.opts.NodeAllocatable)
		case src.ServiceAccountToken != nil:
			part, err = tokenPayload(ctx, pod, src.ServiceAccountToken, pv.DefaultMode, objs)
		default:
			err = errors.New("unsupported projected source (supported: configMap, secret, downwardAPI, serviceAccountToken)")
		}
		if err != nil {
			return nil, err
		}
		maps.Copy(out, part)
	}
	return out, nil
}

// tokenPayload asks the getter for a service account token when it can issue one. Without one the file is left
// out rather than failing the pod: most edge workloads never talk to the API server.
func tokenPayload(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection, def *int32, objs *objectCache) (map[string]fileData, error) {
	tg, ok := objs.getter.(TokenGetter)
	if !ok {
		klog.V(4).InfoS("No token source; leaving out the service account token file", "pod", klog.KObj(pod), "path", src.Path)
		return nil, nil
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
		},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := tg.GetServiceAccountToken(ctx, pod.Namespace, sa, req)
	if err != nil {
		return nil, fmt.Errorf("service account token %s/%s: %w", pod.Namespace, sa, err)
	}
	return map[string]fileData{src.Path: {data: []byte(tr.Status.Token), mode: fileMode(nil, def)}}, nil
}

func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	p := hp.Path
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		return os.MkdirAll(p, 0o755)
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("hostPath type %s: %w", t, err)
	}
	m := fi.Mode()
	ok := map[corev1.HostPathType]bool{
		corev1.HostPathDirectory: m.IsDir(),
		corev1.HostPathFile:      m.IsRegular(),
		corev1.HostPathSocket:    m&os.ModeSocket != 0,
		corev1.HostPathCharDev:   m&os.ModeCharDevice != 0,
		corev1.HostPathBlockDev:  m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0,
	}
	if good, known := ok[t]; !known || !good {
		return fmt.Errorf("hostPath %s is not of type %s", p, t)
	}
	return nil
}
