package kuberuntime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edge/edged/kuberuntime/internal/fakecri"
)

func TestMain(m *testing.M) {
	// klog's flush daemon is process-wide and started by klog itself.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

const (
	nodeIP     = "192.168.1.10"
	pauseImage = "tether/pause:3.10"
	appImage   = "tether/testapp:v1"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeObjects is an ObjectGetter over maps, answering NotFound like MetaManager does.
type fakeObjects struct {
	mu      sync.Mutex
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (f *fakeObjects) GetConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f *fakeObjects) GetSecret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (f *fakeObjects) setConfigMap(name string, data map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cms["default/"+name] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: data}
}

func (f *fakeObjects) setSecret(name string, data map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	f.secrets["default/"+name] = s
}

type harness struct {
	t        *testing.T
	ctx      context.Context
	cri      *fakecri.Server
	clock    *fakeClock
	endpoint string
	root     string
	logs     string
	cgroups  string
	objs     *fakeObjects
	m        *Manager
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes, and t.TempDir() embeds the test name.
	sockDir, err := os.MkdirTemp("", "fcri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	h := &harness{
		t:       t,
		ctx:     context.Background(),
		clock:   &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		root:    t.TempDir(),
		logs:    t.TempDir(),
		cgroups: t.TempDir(),
		objs:    &fakeObjects{cms: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}},
	}
	// Runs before the TempDir cleanups: tmpfs and subPath binds must go before their directories can.
	t.Cleanup(func() {
		if err := unmountUnder(h.root); err != nil {
			t.Errorf("unmount test pod volumes: %v", err)
		}
	})
	h.cri = fakecri.New(h.clock.Now)
	h.endpoint, err = h.cri.Start(filepath.Join(sockDir, "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cri.Stop)
	h.cri.AddImage(pauseImage)
	h.cri.AddImage(appImage)
	h.m = h.newManager()
	return h
}

// newManager is a Manager as a (re)started edgecore would create it.
func (h *harness) newManager() *Manager {
	h.t.Helper()
	m, err := New(Options{
		Endpoint: h.endpoint, RootDir: h.root, LogDir: h.logs, PodSandboxImage: pauseImage,
		CgroupParent: "/tether-pods", CgroupRoot: h.cgroups, NodeIP: nodeIP, Now: h.clock.Now,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = m.Close() })
	return m
}

// sync runs SyncPod and stores the status in the pod, as Edged does after reporting it.
func (h *harness) sync(pod *corev1.Pod) (corev1.PodStatus, error) {
	h.t.Helper()
	return h.syncWith(h.m, pod)
}

func (h *harness) syncWith(m *Manager, pod *corev1.Pod) (corev1.PodStatus, error) {
	h.t.Helper()
	st, err := m.SyncPod(h.ctx, pod, h.objs)
	pod.Status = st
	return st, err
}

func (h *harness) mustSync(pod *corev1.Pod) corev1.PodStatus {
	h.t.Helper()
	st, err := h.sync(pod)
	if err != nil {
		h.t.Fatalf("SyncPod(%s): %v", pod.Name, err)
	}
	return st
}

func (h *harness) mustSyncWith(m *Manager, pod *corev1.Pod) corev1.PodStatus {
	h.t.Helper()
	st, err := h.syncWith(m, pod)
	if err != nil {
		h.t.Fatalf("SyncPod(%s): %v", pod.Name, err)
	}
	return st
}

func (h *harness) containers(uid types.UID) []fakecri.Container {
	var out []fakecri.Container
	for _, c := range h.cri.Containers() {
		if c.Config.GetLabels()[LabelPodUID] == string(uid) {
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) sandboxes(uid types.UID) []fakecri.Sandbox {
	var out []fakecri.Sandbox
	for _, sb := range h.cri.Sandboxes() {
		if sb.Config.GetLabels()[LabelPodUID] == string(uid) {
			out = append(out, sb)
		}
	}
	return out
}

// running returns the running container of that name.
func (h *harness) running(uid types.UID, name string) fakecri.Container {
	h.t.Helper()
	for _, c := range h.containers(uid) {
		if c.Config.GetMetadata().GetName() == name && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			return c
		}
	}
	h.t.Fatalf("no running container %s in pod %s", name, uid)
	return fakecri.Container{}
}

func (h *harness) exit(uid types.UID, name string, code int32) {
	h.t.Helper()
	if err := h.cri.ExitContainer(h.running(uid, name).ID, code); err != nil {
		h.t.Fatal(err)
	}
}

func testPod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	grace := int64(30)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:                      "edge-1",
			HostNetwork:                   true,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent,
			}},
		},
	}
	for _, f := range mutate {
		f(pod)
	}
	return pod
}

func containerStatusOf(t *testing.T, st corev1.PodStatus, name string) corev1.ContainerStatus {
	t.Helper()
	for _, cs := range append(st.InitContainerStatuses, st.ContainerStatuses...) {
		if cs.Name == name {
			return cs
		}
	}
	t.Fatalf("no status for container %s in %+v", name, st.ContainerStatuses)
	return corev1.ContainerStatus{}
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{}
}

// containerErr returns the *ContainerError for the container in err, or nil.
func containerErr(err error, container string) *ContainerError {
	var joined interface{ Unwrap() []error }
	errs := []error{err}
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	for _, e := range errs {
		var ce *ContainerError
		if errors.As(e, &ce) && ce.Container == container {
			return ce
		}
	}
	return nil
}

func envOf(c fakecri.Container) map[string]string {
	out := map[string]string{}
	for _, kv := range c.Config.GetEnvs() {
		out[kv.GetKey()] = string(kv.GetValue())
	}
	return out
}

func wantWaiting(t *testing.T, cs corev1.ContainerStatus, reason, msgPart string) {
	t.Helper()
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != reason || !strings.Contains(cs.State.Waiting.Message, msgPart) {
		t.Fatalf("container %s: want Waiting %s containing %q, got %+v", cs.Name, reason, msgPart, cs.State)
	}
}

// needRoot skips tests that mount (tmpfs volumes, subPath binds): Edged runs as root, the tests may not.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts need root")
	}
}
