package metamanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// ackCounter is a hub that signals every ACK it receives.
type ackCounter struct {
	bus  *beehive.Bus
	acks chan struct{}
}

func (a *ackCounter) Name() string  { return modules.EdgeHub }
func (a *ackCounter) Group() string { return modules.EdgeHubGroup }
func (a *ackCounter) Enable() bool  { return true }
func (a *ackCounter) Start(ctx context.Context) error {
	for {
		msg, err := a.bus.Receive(ctx, modules.EdgeHub)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, beehive.ErrStopped) {
				return nil
			}
			return err
		}
		if msg.Router.Operation == model.ResponseOperation {
			a.acks <- struct{}{}
		}
	}
}

// BenchmarkCloudInsertAck measures a pod insert from the cloud through to
// its ACK (SQLite commit included). "serial" is CloudHub's ACK queue, one
// message in flight per node; "pipelined" bounds what MetaManager can do.
func BenchmarkCloudInsertAck(b *testing.B) {
	for _, window := range []int{1, 256} {
		name := "serial"
		if window > 1 {
			name = fmt.Sprintf("pipelined-%d", window)
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, harnessOpts{noHub: true, discard: true, registerExtra: func(bus *beehive.Bus) beehive.Module {
				return &ackCounter{bus: bus, acks: make(chan struct{}, window)}
			}})
			acks := h.extra.(*ackCounter).acks
			msgs := make([]model.Message, 64)
			for i := range msgs {
				name := fmt.Sprintf("pod-%d", i)
				msgs[i] = *model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource,
					"default/pod/"+name, model.UpdateOperation).FillBody(podJSON(name, "uid-"+name, "1"))
			}
			inFlight := 0
			b.ResetTimer()
			for i := range b.N {
				if inFlight == window {
					<-acks
					inFlight--
				}
				m := msgs[i%len(msgs)]
				m.Header.ID = fmt.Sprintf("m-%d", i)
				if err := h.bus.Send(h.ctx, modules.MetaManager, m); err != nil {
					b.Fatal(err)
				}
				inFlight++
			}
			for ; inFlight > 0; inFlight-- {
				<-acks
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// realisticPod is a pod as EdgeController sends it: two containers with env, mounts, probes and resources,
// three volumes, labels, annotations and a running status (≈ 4 KB of JSON, managedFields dropped).
func realisticPod(name, rv string) json.RawMessage {
	c := func(n string) corev1.Container {
		return corev1.Container{
			Name: n, Image: "registry.example.com/team/" + n + ":1.27.3",
			Command: []string{"/usr/local/bin/" + n}, Args: []string{"--config=/etc/" + n + "/config.yaml", "--v=2"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
				{Name: "LOG_LEVEL", Value: "info"}, {Name: "MQTT_BROKER", Value: "tcp://127.0.0.1:1883"}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/" + n}, {Name: "data", MountPath: "/var/lib/" + n},
				{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
				PeriodSeconds: 10, FailureThreshold: 3},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent,
		}
	}
	now := metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("8a0f6d3e-5b1c-4f7e-9d2a-" + fmt.Sprintf("%012d", len(name))),
			ResourceVersion: rv, CreationTimestamp: now, GenerateName: "sensor-gateway-6d9f7c-",
			Labels:      map[string]string{"app": "sensor-gateway", "pod-template-hash": "6d9f7c", "tier": "edge"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2025-01-02T03:04:05Z", "prometheus.io/scrape": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "sensor-gateway-6d9f7c",
				UID: "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718", Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}},
		Spec: corev1.PodSpec{
			NodeName: "edge-1", RestartPolicy: corev1.RestartPolicyAlways, DNSPolicy: corev1.DNSClusterFirst,
			ServiceAccountName: "default", SchedulerName: "default-scheduler", HostNetwork: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))}},
			Containers: []corev1.Container{c("gateway"), c("exporter")},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sensor-gateway"}}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/sensor-gateway"}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}}}}}},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "192.168.1.20", PodIP: "192.168.1.20", StartTime: &now, QOSClass: corev1.PodQOSBurstable,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "gateway", Ready: true, Image: "registry.example.com/team/gateway:1.27.3",
				ImageID: "sha256:3b0c1c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", ContainerID: "containerd://0123456789abcdef",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}},
	}
	data, err := json.Marshal(pod)
	if err != nil {
		panic(err)
	}
	return data
}

func ptr[T any](v T) *T { return &v }

// BenchmarkPodAck measures objects per second through MetaManager: a realistic pod update from the cloud (see
// realisticPod), persisted in a real SQLite file and ACKed. "serial" is what CloudHub does (one message in flight
// per node, so one commit per object); "window-32" has 32 in flight, the most MetaManager could take.
func BenchmarkPodAck(b *testing.B) {
	for _, window := range []int{1, 32} {
		name := "serial"
		if window > 1 {
			name = fmt.Sprintf("window-%d", window)
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, harnessOpts{noHub: true, discard: true, registerExtra: func(bus *beehive.Bus) beehive.Module {
				return &ackCounter{bus: bus, acks: make(chan struct{}, window)}
			}})
			acks := h.extra.(*ackCounter).acks
			msgs := make([]model.Message, 100)
			for i := range msgs {
				name := fmt.Sprintf("sensor-gateway-6d9f7c-%05d", i)
				msgs[i] = *model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource,
					"default/pod/"+name, model.UpdateOperation).FillBody(realisticPod(name, "1"))
			}
			b.Logf("pod message: %d bytes of JSON", len(msgs[0].Content.(json.RawMessage)))
			n := 0
			for b.Loop() {
				for range window {
					m := msgs[n%len(msgs)]
					m.Header.ID = fmt.Sprintf("m-%d", n)
					if err := h.bus.Send(h.ctx, modules.MetaManager, m); err != nil {
						b.Fatal(err)
					}
					n++
				}
				for range window {
					<-acks
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "objects/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/object")
		})
	}
}
