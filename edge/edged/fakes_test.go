package edged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

const testNode = "edge-1"

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeRuntime records what edged asks of the runtime and answers with scripted statuses.
type fakeRuntime struct {
	mu         sync.Mutex
	syncs      map[types.UID]int
	kills      []killCall
	running    map[types.UID]bool
	status     map[types.UID]corev1.PodStatus
	syncErr    error
	versionErr error
	gcs        int
	cmSeen     []string // "ns/name" of ConfigMaps read during syncs, with the result
}

type killCall struct {
	uid   types.UID
	grace time.Duration
}

var _ kuberuntime.Runtime = (*fakeRuntime)(nil)

func newFakeRuntime(running ...types.UID) *fakeRuntime {
	r := &fakeRuntime{syncs: map[types.UID]int{}, running: map[types.UID]bool{}, status: map[types.UID]corev1.PodStatus{}}
	for _, uid := range running {
		r.running[uid] = true
	}
	return r
}

func (r *fakeRuntime) SyncPod(ctx context.Context, pod *corev1.Pod, objects kuberuntime.ObjectGetter) (corev1.PodStatus, error) {
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		cm, err := objects.GetConfigMap(ctx, pod.Namespace, v.ConfigMap.Name)
		seen := pod.Namespace + "/" + v.ConfigMap.Name + "=" + fmt.Sprint(err)
		if err == nil {
			seen = pod.Namespace + "/" + v.ConfigMap.Name + "=" + cm.Data["key"]
		}
		r.mu.Lock()
		r.cmSeen = append(r.cmSeen, seen)
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs[pod.UID]++
	r.running[pod.UID] = true
	if st, ok := r.status[pod.UID]; ok {
		return *st.DeepCopy(), r.syncErr
	}
	return runningStatus(), r.syncErr
}

func runningStatus() corev1.PodStatus {
	return corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, State: corev1.ContainerState{
			Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0)}}}},
	}
}

func (r *fakeRuntime) KillPod(_ context.Context, uid types.UID, grace time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kills = append(r.kills, killCall{uid, grace})
	delete(r.running, uid)
	return nil
}

func (r *fakeRuntime) RunningPods(context.Context) ([]types.UID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []types.UID
	for uid := range r.running {
		out = append(out, uid)
	}
	return out, nil
}

func (r *fakeRuntime) GarbageCollect(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gcs++
	return nil
}

func (r *fakeRuntime) Version(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.versionErr != nil {
		return "", r.versionErr
	}
	return "fake://1.0", nil
}

func (r *fakeRuntime) syncCount(uid types.UID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncs[uid]
}

func (r *fakeRuntime) killed() []killCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]killCall(nil), r.kills...)
}

func (r *fakeRuntime) setStatus(uid types.UID, st corev1.PodStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status[uid] = st
}

func (r *fakeRuntime) set(f func(r *fakeRuntime)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// fakeMeta stands in for MetaManager and, behind it, the cloud: it answers edged's requests the way §11.2 and
// §6.2 describe and records them.
type fakeMeta struct {
	bus *beehive.Bus

	mu         sync.Mutex
	online     bool
	registered bool
	pods       map[string]string // "ns/name" → pod JSON, the database
	objects    map[string]any    // edge resource → ConfigMap/Secret
	requests   []model.Message
	rv         int
}

func newFakeMeta(bus *beehive.Bus, online bool) *fakeMeta {
	return &fakeMeta{bus: bus, online: online, pods: map[string]string{}, objects: map[string]any{}, rv: 100}
}

func (f *fakeMeta) Name() string  { return modules.MetaManager }
func (f *fakeMeta) Group() string { return modules.MetaGroup }
func (f *fakeMeta) Enable() bool  { return true }

func (f *fakeMeta) Start(ctx context.Context) error {
	for {
		msg, err := f.bus.Receive(ctx, modules.MetaManager)
		if err != nil {
			return nil
		}
		if resp := f.answer(msg); resp != nil {
			resp.Router.Source = modules.MetaManager
			_ = f.bus.SendResp(*resp)
		}
	}
}

func (f *fakeMeta) setOnline(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.online = v
}

func (f *fakeMeta) storePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[pod.Namespace+"/"+pod.Name] = string(b)
}

func (f *fakeMeta) answer(msg model.Message) *model.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, msg)
	op := msg.Router.Operation
	res, err := resource.ParseEdge(msg.Router.Resource, op)
	if err != nil {
		return model.NewErrorMessage(&msg, err.Error())
	}
	notConnected := model.NewErrorMessage(&msg, "not connected")
	objectResp := func(obj any, errStatus any) *model.Message {
		return model.NewRespByMessage(&msg, map[string]any{"Object": obj, "Err": errStatus})
	}
	noErr := map[string]any{"ErrStatus": map[string]any{"metadata": map[string]any{}}}
	switch res.Type + " " + op {
	case "node insert":
		if !f.online {
			return notConnected
		}
		if f.registered {
			return objectResp(nil, map[string]any{"ErrStatus": map[string]any{
				"status": "Failure", "reason": "AlreadyExists", "code": 409, "message": `nodes "edge-1" already exists`}})
		}
		f.registered = true
		return objectResp(msg.Content, noErr)
	case "node update":
		return model.NewRespByMessage(&msg, okContent)
	case "nodepatch patch", "podpatch patch":
		if !f.online {
			return model.NewErrorMessage(&msg, "connection lost")
		}
		f.rv++
		return objectResp(map[string]any{"metadata": map[string]any{"name": res.Name, "resourceVersion": strconv.Itoa(f.rv)}}, nil)
	case "pod query":
		list := []string{}
		for _, p := range f.pods {
			list = append(list, p)
		}
		return model.NewRespByMessage(&msg, list)
	case "pod delete":
		if !f.online {
			return notConnected
		}
		delete(f.pods, res.Namespace+"/"+res.Name)
		return model.NewRespByMessage(&msg, okContent)
	case "configmap query", "secret query":
		obj, ok := f.objects[msg.Router.Resource]
		switch {
		case f.online && ok:
			b, _ := json.Marshal(obj)
			return model.NewRespByMessage(&msg, json.RawMessage(b))
		case f.online:
			return model.NewRespByMessage(&msg, fmt.Sprintf("%ss %q not found", res.Type, res.Name))
		case ok:
			b, _ := json.Marshal(obj)
			return model.NewRespByMessage(&msg, []string{string(b)})
		default:
			return model.NewRespByMessage(&msg, []string{})
		}
	}
	return model.NewErrorMessage(&msg, "unsupported by fake: "+op+" "+msg.Router.Resource)
}

// sent returns edged's requests of one resource type and operation.
func (f *fakeMeta) sent(typ, op string) []model.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Message
	for _, m := range f.requests {
		r, err := resource.ParseEdge(m.Router.Resource, m.Router.Operation)
		if err == nil && r.Type == typ && m.Router.Operation == op {
			out = append(out, m)
		}
	}
	return out
}

// harness runs edged on a real bus with the fakes and a fake clock.
type harness struct {
	t    *testing.T
	ctx  context.Context
	bus  *beehive.Bus
	meta *fakeMeta
	rt   *fakeRuntime
	clk  *testingclock.FakeClock
}

type setup struct {
	offline    bool
	registered bool          // the node exists in the cloud already
	pods       []*corev1.Pod // in the database at start
	running    []types.UID   // in the runtime at start
	cfg        func(*v1alpha2.Edged)
}

func writeHostRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for path, content := range map[string]string{
		"proc/meminfo":                   "MemTotal:        2048000 kB\nMemFree:          100 kB\n",
		"proc/sys/kernel/osrelease":      "6.1.0-test\n",
		"proc/sys/kernel/random/boot_id": "boot-1\n",
		"etc/machine-id":                 "machine-1\n",
		"etc/os-release":                 "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
		"sys/class/dmi/id/product_uuid":  "ABC-UUID\n",
	} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func testConfig() *v1alpha2.Edged {
	return &v1alpha2.Edged{
		Enable:                true,
		HostnameOverride:      testNode,
		NodeIP:                "192.0.2.10",
		NodeLabels:            map[string]string{"zone": "a"},
		RegisterNodeNamespace: "default",
		TailoredKubeletConfig: &v1alpha2.TailoredKubeletConfig{
			ReadOnlyPort:              10350,
			NodeStatusUpdateFrequency: metav1.Duration{Duration: 10 * time.Second},
			MaxPods:                   50,
			RegisterNode:              true,
		},
	}
}

func start(t *testing.T, s setup) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bus := beehive.New(beehive.Options{})
	h := &harness{t: t, ctx: ctx, bus: bus, meta: newFakeMeta(bus, !s.offline), rt: newFakeRuntime(s.running...),
		clk: testingclock.NewFakeClock(t0)}
	h.meta.registered = s.registered
	for _, p := range s.pods {
		h.meta.storePod(t, p)
	}
	cfg := testConfig()
	if s.cfg != nil {
		s.cfg(cfg)
	}
	e, err := New(cfg, bus, h.rt, WithClock(h.clk), WithHostRoot(writeHostRoot(t)),
		WithRequestTimeout(5*time.Second), WithRetryMin(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []beehive.Module{h.meta, e} {
		if err := bus.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus: %v", err)
		}
	})
	return h
}

// push delivers a cloud message to edged the way MetaManager forwards it.
func (h *harness) push(op, res string, content any) {
	h.t.Helper()
	msg := model.NewMessage("").BuildRouter("edgecontroller", model.GroupResource, res, op).FillBody(content)
	if err := h.bus.Send(h.ctx, modules.Edged, *msg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) pushPod(op string, pod *corev1.Pod) {
	h.t.Helper()
	b, err := json.Marshal(pod)
	if err != nil {
		h.t.Fatal(err)
	}
	h.push(op, pod.Namespace+"/pod/"+pod.Name, json.RawMessage(b))
}

// eventually polls cond; it is how tests wait without asserting on timing.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stepUntil advances the fake clock by d until cond holds; timers created after a step are caught by the
// next one.
func (h *harness) stepUntil(what string, d time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		h.clk.Step(d)
		time.Sleep(2 * time.Millisecond)
	}
}

func newPod(name string, uid types.UID, node string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: name, UID: uid, ResourceVersion: "10"},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
		},
		Status: corev1.PodStatus{
			Phase:    corev1.PodPending,
			QOSClass: corev1.PodQOSBestEffort,
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour))}},
		},
	}
}

// patchOf decodes the string content of a nodepatch or podpatch request.
func patchOf(t *testing.T, m model.Message) map[string]json.RawMessage {
	t.Helper()
	s, ok := m.Content.(string)
	if !ok {
		t.Fatalf("patch content is %T, want a JSON string", m.Content)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("patch content %q: %v", s, err)
	}
	return out
}

func decodeInto[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

var errRuntimeDown = errors.New("dial unix /run/containerd/containerd.sock: connection refused")
