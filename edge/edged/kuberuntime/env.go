package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TokenGetter is an optional extension of ObjectGetter: when the getter implements it, projected
// serviceAccountToken sources are written; otherwise they are left out (the file is absent).
type TokenGetter interface {
	GetServiceAccountToken(ctx context.Context, namespace, name string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
}

// objectCache asks the getter at most once per object during one SyncPod: env, envFrom and volumes of several
// containers often name the same ConfigMap, and each question may cross the network to the cloud. Getters
// must report a missing object with an error for which apierrors.IsNotFound is true, so optional references
// work.
type objectCache struct {
	getter  ObjectGetter
	cms     map[string]objResult[corev1.ConfigMap]
	secrets map[string]objResult[corev1.Secret]
}

type objResult[T any] struct {
	obj *T
	err error
}

func newObjectCache(g ObjectGetter) *objectCache {
	return &objectCache{getter: g, cms: map[string]objResult[corev1.ConfigMap]{}, secrets: map[string]objResult[corev1.Secret]{}}
}

var errNoGetter = errors.New("no object getter to resolve ConfigMaps and Secrets")

func (c *objectCache) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if r, ok := c.cms[ns+"/"+name]; ok {
		return r.obj, r.err
	}
	var r objResult[corev1.ConfigMap]
	if c.getter == nil {
		r.err = errNoGetter
	} else if r.obj, r.err = c.getter.GetConfigMap(ctx, ns, name); r.err != nil {
		r.err = fmt.Errorf("configmap %q: %w", ns+"/"+name, r.err)
	}
	c.cms[ns+"/"+name] = r
	return r.obj, r.err
}

func (c *objectCache) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if r, ok := c.secrets[ns+"/"+name]; ok {
		return r.obj, r.err
	}
	var r objResult[corev1.Secret]
	if c.getter == nil {
		r.err = errNoGetter
	} else if r.obj, r.err = c.getter.GetSecret(ctx, ns, name); r.err != nil {
		r.err = fmt.Errorf("secret %q: %w", ns+"/"+name, r.err)
	}
	c.secrets[ns+"/"+name] = r
	return r.obj, r.err
}

func isOptional(b *bool) bool { return b != nil && *b }

// podIPs is what status.podIP and status.hostIP resolve to when a container is created.
type podIPs struct{ pod, host string }

// makeEnv resolves the container's environment as the kubelet does: envFrom first, then env in order, later
// definitions winning, and $(VAR) in values expanded against the variables defined before.
func makeEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, objs *objectCache, ips podIPs, alloc corev1.ResourceList) ([]*runtimeapi.KeyValue, error) {
	var order []string
	vars := map[string]string{}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := objs.configMap(ctx, pod.Namespace, ef.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && isOptional(ef.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
				set(ef.Prefix+k, cm.Data[k])
			}
		case ef.SecretRef != nil:
			s, err := objs.secret(ctx, pod.Namespace, ef.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && isOptional(ef.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			for _, k := range slices.Sorted(maps.Keys(s.Data)) {
				set(ef.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		v, ok, err := envValueFrom(ctx, pod, c, e, objs, ips, alloc)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	out := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, k := range order {
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(vars[k])})
	}
	return out, nil
}

// envValueFrom resolves one valueFrom; ok is false when an optional source is missing and the variable is left
// out.
func envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar, objs *objectCache, ips podIPs, alloc corev1.ResourceList) (string, bool, error) {
	vf := e.ValueFrom
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := objs.configMap(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return v, true, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s, err := objs.secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return string(v), true, nil
	case vf.FieldRef != nil:
		v, err := podFieldValue(pod, vf.FieldRef.FieldPath, ips)
		return v, err == nil, err
	case vf.ResourceFieldRef != nil:
		v, err := resourceFieldValue(pod, c, vf.ResourceFieldRef, alloc)
		return v, err == nil, err
	}
	return "", false, errors.New("valueFrom names no source")
}

// podFieldValue answers the downward API's fieldRef paths.
func podFieldValue(pod *corev1.Pod, fieldPath string, ips podIPs) (string, error) {
	if key, ok := subscript(fieldPath, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(fieldPath, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return ips.host, nil
	case "status.podIP", "status.podIPs":
		return ips.pod, nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", fieldPath)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// formatMap is the downward API file format: one key="value" per line, sorted.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
	}
	return b.String()
}

// resourceFieldValue answers resourceFieldRef; an unset limit falls back to node allocatable, as the kubelet does.
func resourceFieldValue(pod *corev1.Pod, self *corev1.Container, ref *corev1.ResourceFieldSelector, alloc corev1.ResourceList) (string, error) {
	c := self
	if ref.ContainerName != "" {
		c = nil
		for _, cc := range allContainers(pod) {
			if cc.Name == ref.ContainerName {
				c = cc
			}
		}
		if c == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(res)]
	if !ok && kind == "limits" {
		q, ok = alloc[corev1.ResourceName(res)]
	}
	if !ok {
		if kind == "requests" {
			return "0", nil
		}
		return "", fmt.Errorf("resourceFieldRef %s: container %s sets no limit and node allocatable is unknown", ref.Resource, c.Name)
	}
	divisor := resource.MustParse("1")
	if !ref.Divisor.IsZero() {
		divisor = ref.Divisor
	}
	if res == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// expand is the Kubernetes $(VAR) syntax: $(NAME) becomes the variable's value when defined and stays as written
// otherwise; $$ is a literal $.
func expand(in string, vars map[string]string) string {
	return expandWith(in, func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	})
}

// expandWith is expand with the variables looked up by a function.
func expandWith(in string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(in, "$") {
		return in
	}
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		if in[i] != '$' || i+1 >= len(in) {
			b.WriteByte(in[i])
			continue
		}
		switch in[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(in[i+2:], ')')
			if end < 0 {
				b.WriteString(in[i:])
				return b.String()
			}
			name := in[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(in[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
