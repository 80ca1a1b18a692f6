package edgecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestMain(m *testing.M) {
	// klog's flush daemon is process-wide and started by klog itself. Informer goroutines are not ignored: the
	// controller must stop them.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// waitTimeout bounds every wait; reaching it is a failure, never part of the expected behaviour.
const waitTimeout = 10 * time.Second

// testNow is the controller's clock in tests; whole seconds, as API times are serialized.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// recorder stands in for CloudHub: it keeps everything sent to module "cloudhub".
type recorder struct {
	bus *beehive.Bus

	mu     sync.Mutex
	msgs   []model.Message
	notify chan struct{} // closed and replaced on every new message
}

func (r *recorder) Name() string  { return modules.CloudHub }
func (r *recorder) Group() string { return modules.CloudHub }
func (r *recorder) Enable() bool  { return true }

func (r *recorder) Start(ctx context.Context) error {
	for {
		msg, err := r.bus.Receive(ctx, modules.CloudHub)
		if err != nil {
			return nil
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, msg)
		close(r.notify)
		r.notify = make(chan struct{})
		r.mu.Unlock()
	}
}

func (r *recorder) snapshot() ([]model.Message, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]model.Message(nil), r.msgs...), r.notify
}

type harness struct {
	t    *testing.T
	kube *fake.Clientset
	bus  *beehive.Bus
	rec  *recorder
	ctx  context.Context
	seq  int // barrier generations
}

// start runs the controller and a recording "cloudhub" on a real bus until the test ends.
func start(t *testing.T, objs ...runtime.Object) *harness {
	t.Helper()
	return startKube(t, fake.NewClientset(objs...))
}

// startKube is start with a prepared clientset (reactors must be added before the informers run).
func startKube(t *testing.T, kube *fake.Clientset) *harness {
	t.Helper()
	honourPatchPreconditions(kube)
	bus := beehive.New(beehive.Options{})
	rec := &recorder{bus: bus, notify: make(chan struct{})}
	ctrl := New(Options{
		Bus:  bus,
		Kube: kube,
		Config: v1alpha1.EdgeController{
			Enable: true, NodeUpdateFrequency: 10,
			Buffer: map[string]int32{"patchNode": 16}, Load: map[string]int32{"patchNodeWorkers": 2},
		},
		Now: func() time.Time { return testNow },
	})
	for _, m := range []beehive.Module{rec, ctrl} {
		if err := bus.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus run: %v", err)
		}
	})
	return &harness{t: t, kube: kube, bus: bus, rec: rec, ctx: ctx}
}

// honourPatchPreconditions makes the fake API server refuse a pod merge patch whose resourceVersion is not the
// stored one, as the real one does; the fake's tracker would apply it and roll the pod back.
func honourPatchPreconditions(kube *fake.Clientset) {
	kube.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p, ok := a.(k8stesting.PatchActionImpl)
		if !ok || p.GetPatchType() != types.MergePatchType {
			return false, nil, nil
		}
		var body struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if json.Unmarshal(p.GetPatch(), &body) != nil || body.Metadata.ResourceVersion == "" {
			return false, nil, nil
		}
		obj, err := kube.Tracker().Get(p.GetResource(), p.GetNamespace(), p.GetName())
		if err != nil {
			return false, nil, nil
		}
		if live := obj.(*corev1.Pod).ResourceVersion; live != body.Metadata.ResourceVersion {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, p.GetName(),
				fmt.Errorf("resourceVersion %s, stored %s", body.Metadata.ResourceVersion, live))
		}
		return false, nil, nil
	})
}

// waitFor returns the first message (in arrival order) matching pred, waiting for it.
func (h *harness) waitFor(what string, pred func(model.Message) bool) model.Message {
	h.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		msgs, notify := h.rec.snapshot()
		for _, m := range msgs {
			if pred(m) {
				return m
			}
		}
		select {
		case <-notify:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; got:\n%s", what, describe(msgs))
		}
	}
}

// find returns the index of the first message for resource with operation op (any op when ""), or -1.
func (h *harness) find(res, op string) int {
	msgs, _ := h.rec.snapshot()
	for i, m := range msgs {
		if m.Router.Resource == res && (op == "" || m.Router.Operation == op) {
			return i
		}
	}
	return -1
}

func (h *harness) count(res, op string) int {
	msgs, _ := h.rec.snapshot()
	n := 0
	for _, m := range msgs {
		if m.Router.Resource == res && (op == "" || m.Router.Operation == op) {
			n++
		}
	}
	return n
}

func (h *harness) message(i int) model.Message {
	msgs, _ := h.rec.snapshot()
	return msgs[i]
}

func (h *harness) expectMsg(res, op, rv string) model.Message {
	h.t.Helper()
	return h.waitFor(fmt.Sprintf("%s %s rv=%q", op, res, rv), func(m model.Message) bool {
		return m.Router.Resource == res && (op == "" || m.Router.Operation == op) && (rv == "" || m.Header.ResourceVersion == rv)
	})
}

func describe(msgs []model.Message) string {
	s := ""
	for _, m := range msgs {
		s += fmt.Sprintf("  %s %s rv=%s parent=%s\n", m.Router.Operation, m.Router.Resource, m.Header.ResourceVersion, m.Header.ParentID)
	}
	return s
}

// barrier makes sure every informer event that happened before it has been handled: it changes one object per
// informer (the barrier pod, ConfigMap and Secret, and edge-1) and waits for their messages, which the controller's
// single downstream loop sends in event order. Fixtures must include barrierObjects. Only the ConfigMap and Secret
// events send barrier-cm and barrier-secret once barrier-holder (their only user, never changed) was handled, so
// their messages prove those events were reached; tests that resync edge-1 must not rely on it.
func (h *harness) barrier() {
	h.t.Helper()
	h.expectMsg("node/edge-1/default/pod/barrier-holder", model.InsertOperation, "")
	h.seq++
	rv := fmt.Sprint(90000 + h.seq)
	ctx := h.ctx
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "barrier-cm", UID: "uid-barrier-cm", ResourceVersion: rv}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "barrier-secret", UID: "uid-barrier-secret", ResourceVersion: rv}}
	var err error
	if h.seq == 1 {
		_, err = h.kube.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		must(h.t, err)
		_, err = h.kube.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{})
	} else {
		_, err = h.kube.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
		must(h.t, err)
		_, err = h.kube.CoreV1().Secrets("default").Update(ctx, sec, metav1.UpdateOptions{})
	}
	must(h.t, err)
	p, err := h.kube.CoreV1().Pods("default").Get(ctx, "barrier", metav1.GetOptions{})
	must(h.t, err)
	p.ResourceVersion = rv
	_, err = h.kube.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{})
	must(h.t, err)
	n, err := h.kube.CoreV1().Nodes().Get(ctx, "edge-1", metav1.GetOptions{})
	must(h.t, err)
	n.ResourceVersion = rv
	_, err = h.kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	must(h.t, err)

	h.expectMsg("node/edge-1/default/configmap/barrier-cm", "", rv)
	h.expectMsg("node/edge-1/default/secret/barrier-secret", "", rv)
	h.expectMsg("node/edge-1/default/pod/barrier", "", rv)
	h.expectMsg("node/edge-1/null/node/edge-1", model.UpdateOperation, rv)
}

// barrierObjects are edge-1, the barrier pod on it and barrier-holder, a pod that uses barrier-cm and
// barrier-secret (created by barrier).
func barrierObjects() []runtime.Object {
	return []runtime.Object{
		edgeNode("edge-1", "1"),
		pod("barrier", "edge-1", "1"),
		pod("barrier-holder", "edge-1", "1", withVolumeConfigMap("barrier-cm"), withEnvFromSecret("barrier-secret")),
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ---- fixtures ----

func edgeNode(name, rv string) *corev1.Node {
	n := node(name, rv)
	n.Labels = map[string]string{EdgeRoleLabel: ""}
	return n
}

func node(name, rv string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv}}
}

type podOpt func(*corev1.Pod)

func pod(name, nodeName, rv string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withVolumeConfigMap(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v-" + name, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}})
	}
}

func withVolumeSecret(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v-" + name, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: name}}})
	}
}

func withProjected(cm, secret string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "projected", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: secret}}},
			}}}})
	}
}

func withEnvFromConfigMap(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].EnvFrom = append(p.Spec.Containers[0].EnvFrom, corev1.EnvFromSource{
			ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}})
	}
}

func withEnvFromSecret(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].EnvFrom = append(p.Spec.Containers[0].EnvFrom, corev1.EnvFromSource{
			SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}})
	}
}

func withEnvSecretKey(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "K", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "k"}}})
	}
}

func withEnvConfigMapKey(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "init", Env: []corev1.EnvVar{{Name: "K",
			ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "k"}}}}})
	}
}

// withTokenProjection mounts a service account token for audience, as kube-api-access volumes do.
func withTokenProjection(audience string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "token-" + audience, VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: audience, Path: "token"}},
			}}}})
	}
}

// mirrorPod is a static pod's mirror as a kubelet on node creates it.
func mirrorPod(name, node string) *corev1.Pod {
	p := pod(name, node, "")
	p.UID = ""
	p.Annotations = map[string]string{"kubernetes.io/config.mirror": "hash"}
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: types.UID("uid-" + node), Controller: ptr.To(true)}}
	return p
}

func withPullSecret(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
}

func configMap(name, rv string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv},
		Data: map[string]string{"k": "v"}}
}

func secret(name, rv string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv},
		Data: map[string][]byte{"k": []byte("v")}}
}

// content returns a message's content as it goes on the wire.
func content(t *testing.T, m model.Message) []byte {
	t.Helper()
	data, err := m.GetContentData()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// decodeContent decodes the wire content into v.
func decodeContent(t *testing.T, m model.Message, v any) {
	t.Helper()
	if err := json.Unmarshal(content(t, m), v); err != nil {
		t.Fatalf("content of %s: %v: %s", m.String(), err, content(t, m))
	}
}

// typeMeta reads apiVersion and kind from wire content.
func typeMeta(t *testing.T, m model.Message) metav1.TypeMeta {
	t.Helper()
	var tm metav1.TypeMeta
	decodeContent(t, m, &tm)
	return tm
}
