package kuberuntime

import (
	"encoding/json"
	"hash/fnv"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels identify what we created, so a restarted edgecore finds its sandboxes and containers again. The
// io.kubernetes.* keys are the kubelet's, which crictl and other tools display; tether.io/managed keeps us away
// from containers of other clients of the same containerd (a kubelet, another edgecore).
const (
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelContainerName = "io.kubernetes.container.name"
	LabelManaged       = "tether.io/managed"

	// AnnotationContainerHash is the hash of the container spec fields that define the running container; a
	// different hash on the next sync means the spec changed and the container is replaced.
	AnnotationContainerHash = "tether.io/container-hash"
	// AnnotationRestartCount survives edgecore restarts, unlike anything kept in memory.
	AnnotationRestartCount = "tether.io/restart-count"
	// AnnotationContainerType tells init containers from regular ones (names are unique across both).
	AnnotationContainerType = "tether.io/container-type"

	managedValue      = "true"
	containerTypeInit = "init"
	containerTypeMain = "regular"
)

func podLabels(pod *corev1.Pod) map[string]string {
	l := make(map[string]string, len(pod.Labels)+4)
	for k, v := range pod.Labels {
		l[k] = v
	}
	l[LabelPodUID] = string(pod.UID)
	l[LabelPodName] = pod.Name
	l[LabelPodNamespace] = pod.Namespace
	l[LabelManaged] = managedValue
	return l
}

func containerLabels(pod *corev1.Pod, c *corev1.Container) map[string]string {
	return map[string]string{
		LabelPodUID:        string(pod.UID),
		LabelPodName:       pod.Name,
		LabelPodNamespace:  pod.Namespace,
		LabelContainerName: c.Name,
		LabelManaged:       managedValue,
	}
}

// hashedSpec lists what a container is created from. Probes, lifecycle hooks, termination message settings and
// the pull policy are left out: changing them must not restart a running container.
type hashedSpec struct {
	Name            string
	Image           string
	Command         []string
	Args            []string
	WorkingDir      string
	Ports           []corev1.ContainerPort
	EnvFrom         []corev1.EnvFromSource
	Env             []corev1.EnvVar
	Resources       corev1.ResourceRequirements
	VolumeMounts    []corev1.VolumeMount
	SecurityContext *corev1.SecurityContext
	Stdin           bool
	StdinOnce       bool
	TTY             bool
}

func containerHash(c *corev1.Container) string {
	b, err := json.Marshal(hashedSpec{
		Name: c.Name, Image: c.Image, Command: c.Command, Args: c.Args, WorkingDir: c.WorkingDir,
		Ports: c.Ports, EnvFrom: c.EnvFrom, Env: c.Env, Resources: c.Resources, VolumeMounts: c.VolumeMounts,
		SecurityContext: c.SecurityContext, Stdin: c.Stdin, StdinOnce: c.StdinOnce, TTY: c.TTY,
	})
	if err != nil {
		// Only unmarshalable types fail here, and the spec has none.
		panic(err)
	}
	h := fnv.New64a()
	_, _ = h.Write(b)
	return strconv.FormatUint(h.Sum64(), 16)
}

// restartCountOf reads the restart count we stored; containers without the annotation fall back to the CRI
// attempt, which we set to the same number.
func restartCountOf(c *runtimeapi.Container) int32 {
	if v, ok := c.GetAnnotations()[AnnotationRestartCount]; ok {
		if n, err := strconv.ParseInt(v, 10, 32); err == nil {
			return int32(n)
		}
	}
	return int32(c.GetMetadata().GetAttempt())
}
