package edged

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/resource"
)

func TestStartRebuildsFromDatabaseAndRuntime(t *testing.T) {
	adopted := newPod("adopted", "uid-adopted", testNode) // running before the restart
	lost := newPod("lost", "uid-lost", testNode)          // sandbox gone (reboot)
	foreign := newPod("foreign", "uid-foreign", "edge-2")
	h := start(t, setup{
		offline: true, // autonomy: nothing but the database
		pods:    []*corev1.Pod{adopted, lost, foreign},
		running: []types.UID{adopted.UID, "uid-stray"},
	})

	h.eventually("both pods synced", func() bool { return h.rt.syncCount(adopted.UID) > 0 && h.rt.syncCount(lost.UID) > 0 })
	h.eventually("stray killed", func() bool { return len(h.rt.killed()) > 0 })
	if got, want := h.rt.killed(), []killCall{{"uid-stray", DefaultGracePeriod}}; !slices.Equal(got, want) {
		t.Errorf("kills = %v, want %v", got, want)
	}
	if n := h.rt.syncCount(foreign.UID); n != 0 {
		t.Errorf("pod of another node synced %d times", n)
	}
	q := h.meta.sent(resource.TypePod, model.QueryOperation)
	if len(q) != 1 || q[0].Router.Resource != "default/pod" {
		t.Errorf("pod queries = %v, want one on default/pod", q)
	}
}

func TestPodMessages(t *testing.T) {
	h := start(t, setup{})
	p := newPod("web", "uid-web", testNode)
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](7)

	steps := []struct {
		name string
		do   func()
		wait func() bool
	}{
		{"insert syncs", func() { h.pushPod(model.InsertOperation, p) },
			func() bool { return h.rt.syncCount(p.UID) == 1 }},
		{"spec update syncs again", func() {
			u := p.DeepCopy()
			u.ResourceVersion, u.Spec.Containers[0].Image = "11", "nginx:2"
			h.pushPod(model.UpdateOperation, u)
		}, func() bool { return h.rt.syncCount(p.UID) == 2 }},
		{"pod of another node ignored, malformed pod skipped, loop continues", func() {
			h.pushPod(model.InsertOperation, newPod("foreign", "uid-foreign", "edge-2"))
			h.push(model.InsertOperation, "ns1/pod/broken", json.RawMessage(`{"metadata": {"name": 5}`))
			h.push(model.InsertOperation, "ns1/pod/broken", "not json at all")
			h.pushPod(model.InsertOperation, newPod("next", "uid-next", testNode))
		}, func() bool { return h.rt.syncCount("uid-next") == 1 }},
		{"cloud delete kills with the pod's grace", func() { h.pushPod(model.DeleteOperation, p) },
			func() bool { return len(h.rt.killed()) == 1 }},
	}
	for _, s := range steps {
		s.do()
		h.eventually(s.name, s.wait)
	}
	if n := h.rt.syncCount("uid-foreign"); n != 0 {
		t.Errorf("foreign pod synced %d times", n)
	}
	if got, want := h.rt.killed(), []killCall{{p.UID, 7 * time.Second}}; !slices.Equal(got, want) {
		t.Errorf("kills = %v, want %v", got, want)
	}
	// The object is already gone from the API server; nothing goes upstream.
	if n := len(h.meta.sent(resource.TypePod, model.DeleteOperation)); n != 0 {
		t.Errorf("%d pod deletes sent for a pod the cloud deleted", n)
	}
}

func TestGracefulDeletion(t *testing.T) {
	tests := []struct {
		name      string
		grace     *int64
		offline   bool
		wantGrace time.Duration
	}{
		{name: "grace from the deletion", grace: ptr.To[int64](5), wantGrace: 5 * time.Second},
		{name: "default grace", wantGrace: DefaultGracePeriod},
		{name: "offline: delete held until the cloud is back", grace: ptr.To[int64](0), offline: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPod("web", "uid-web", testNode)
			h := start(t, setup{pods: []*corev1.Pod{p}, offline: tt.offline})
			h.eventually("sync", func() bool { return h.rt.syncCount(p.UID) == 1 })

			del := p.DeepCopy()
			del.ResourceVersion = "20"
			del.DeletionTimestamp = ptr.To(metav1.NewTime(t0))
			del.DeletionGracePeriodSeconds = tt.grace
			h.pushPod(model.UpdateOperation, del)
			h.eventually("kill", func() bool { return len(h.rt.killed()) == 1 })
			if k := h.rt.killed()[0]; k.uid != p.UID || k.grace != tt.wantGrace {
				t.Errorf("kill = %+v, want grace %v", k, tt.wantGrace)
			}
			if tt.offline {
				if n := len(h.meta.sent(resource.TypePod, model.DeleteOperation)); n != 0 {
					t.Fatalf("%d deletes sent while offline", n)
				}
				h.meta.setOnline(true)
				h.stepUntil("registration", time.Second, func() bool { return len(h.meta.sent("nodepatch", "patch")) > 0 })
			}
			h.eventually("upstream delete", func() bool { return len(h.meta.sent(resource.TypePod, model.DeleteOperation)) == 1 })

			m := h.meta.sent(resource.TypePod, model.DeleteOperation)[0]
			if m.Router.Resource != "ns1/pod/web" {
				t.Errorf("delete resource = %q", m.Router.Resource)
			}
			data, err := m.GetContentData()
			if err != nil {
				t.Fatal(err)
			}
			opts := decodeInto[metav1.DeleteOptions](t, data)
			if opts.GracePeriodSeconds == nil || *opts.GracePeriodSeconds != 0 ||
				opts.Preconditions == nil || opts.Preconditions.UID == nil || *opts.Preconditions.UID != p.UID {
				t.Errorf("delete options = %s", data)
			}

			// The cloud's final delete of the same pod must not kill it again.
			h.pushPod(model.DeleteOperation, del)
			h.pushPod(model.InsertOperation, newPod("barrier", "uid-barrier", testNode))
			h.eventually("barrier pod synced", func() bool { return h.rt.syncCount("uid-barrier") == 1 })
			if n := len(h.rt.killed()); n != 1 {
				t.Errorf("%d kills, want 1", n)
			}
		})
	}
}

func TestPodReplacedUnderSameName(t *testing.T) {
	h := start(t, setup{})
	old := newPod("web", "uid-old", testNode)
	h.pushPod(model.InsertOperation, old)
	h.eventually("old synced", func() bool { return h.rt.syncCount(old.UID) == 1 })

	h.pushPod(model.InsertOperation, newPod("web", "uid-new", testNode))
	h.eventually("new synced, old killed", func() bool {
		return h.rt.syncCount("uid-new") == 1 && len(h.rt.killed()) == 1
	})
	if k := h.rt.killed()[0]; k.uid != old.UID {
		t.Errorf("killed %s, want %s", k.uid, old.UID)
	}
}

func TestPodStatusPatchedOnlyOnChange(t *testing.T) {
	p := newPod("web", "uid-web", testNode)
	h := start(t, setup{pods: []*corev1.Pod{p}})
	h.eventually("first status", func() bool { return len(h.meta.sent("podpatch", "patch")) == 1 })

	m := h.meta.sent("podpatch", "patch")[0]
	if m.Router.Resource != "ns1/podpatch/web" {
		t.Errorf("resource = %q", m.Router.Resource)
	}
	patch := patchOf(t, m)
	if meta := decodeInto[map[string]string](t, patch["metadata"]); meta["uid"] != string(p.UID) {
		t.Errorf("patch metadata = %s, want the pod uid", patch["metadata"])
	}
	var cloud corev1.Pod
	cloud.Status = *p.Status.DeepCopy()
	applied := applyPatch(t, cloud, patch)
	st := applied.Status
	if st.Phase != corev1.PodRunning || st.HostIP != "192.0.2.10" || st.QOSClass != corev1.PodQOSBestEffort || st.StartTime == nil {
		t.Errorf("patched status = %+v", st)
	}
	if c := findCondition(st.Conditions, corev1.PodScheduled); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("PodScheduled lost: %+v", st.Conditions)
	}
	if c := findCondition(st.Conditions, corev1.PodReady); c == nil || !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready = %+v, want True since t0", c)
	}

	// Resyncs with the same runtime status send nothing. A sync finishes (status included) before the next
	// begins, so two more syncs prove the first of them sent nothing.
	n := h.rt.syncCount(p.UID)
	h.stepUntil("two resyncs", DefaultResyncInterval, func() bool { return h.rt.syncCount(p.UID) >= n+2 })
	if got := len(h.meta.sent("podpatch", "patch")); got != 1 {
		t.Fatalf("%d status patches after unchanged resyncs, want 1", got)
	}

	failed := runningStatus()
	failed.Phase = corev1.PodFailed
	failed.Conditions[0].Status = corev1.ConditionFalse
	h.rt.setStatus(p.UID, failed)
	h.stepUntil("second status", DefaultResyncInterval, func() bool { return len(h.meta.sent("podpatch", "patch")) == 2 })
	second := patchOf(t, h.meta.sent("podpatch", "patch")[1])
	st = applyPatch(t, applied, second).Status
	if st.Phase != corev1.PodFailed {
		t.Errorf("phase = %s, want Failed", st.Phase)
	}
	if c := findCondition(st.Conditions, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse || c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready after failure = %+v, want False with a new transition time", c)
	}
}

func TestOfflineStatusHeldAndSentOnce(t *testing.T) {
	p := newPod("web", "uid-web", testNode)
	h := start(t, setup{offline: true, pods: []*corev1.Pod{p}})
	h.eventually("sync", func() bool { return h.rt.syncCount(p.UID) == 1 })

	// The status changes while offline; only the latest must reach the cloud.
	failed := runningStatus()
	failed.Phase = corev1.PodFailed
	h.rt.setStatus(p.UID, failed)
	h.stepUntil("resyncs while offline", DefaultResyncInterval, func() bool { return h.rt.syncCount(p.UID) >= 3 })
	if n := len(h.meta.sent("podpatch", "patch")); n != 0 {
		t.Fatalf("%d pod status patches while offline", n)
	}

	h.meta.setOnline(true)
	h.stepUntil("status after reconnect", time.Second, func() bool { return len(h.meta.sent("podpatch", "patch")) > 0 })
	n := h.rt.syncCount(p.UID)
	h.stepUntil("two resyncs", DefaultResyncInterval, func() bool { return h.rt.syncCount(p.UID) >= n+2 })
	patches := h.meta.sent("podpatch", "patch")
	if len(patches) != 1 {
		t.Fatalf("%d status patches after reconnect, want 1", len(patches))
	}
	if st := applyPatch(t, *p, patchOf(t, patches[0])).Status; st.Phase != corev1.PodFailed {
		t.Errorf("phase sent = %s, want the latest (Failed)", st.Phase)
	}
}

func TestConfigMapUpdateResyncsReferencingPods(t *testing.T) {
	user := newPod("user", "uid-user", testNode)
	user.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm1"}}}}}
	other := newPod("other", "uid-other", testNode)
	h := start(t, setup{pods: []*corev1.Pod{user, other}})
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "cm1"}, Data: map[string]string{"key": "v1"}}
	h.meta.mu.Lock()
	h.meta.objects["ns1/configmap/cm1"] = cm.DeepCopy()
	h.meta.mu.Unlock()
	h.eventually("initial syncs", func() bool { return h.rt.syncCount(user.UID) == 1 && h.rt.syncCount(other.UID) == 1 })

	cm.Data["key"] = "v2"
	h.meta.mu.Lock()
	h.meta.objects["ns1/configmap/cm1"] = cm.DeepCopy()
	h.meta.mu.Unlock()
	b, _ := json.Marshal(cm)
	h.push(model.UpdateOperation, "ns1/configmap/cm1", json.RawMessage(b))
	h.eventually("resync of the user", func() bool { return h.rt.syncCount(user.UID) == 2 })
	h.rt.set(func(r *fakeRuntime) {
		if !slices.Contains(r.cmSeen, "ns1/cm1=v2") {
			t.Errorf("runtime read %v, want the new value", r.cmSeen)
		}
	})
}

func TestReferences(t *testing.T) {
	vol := func(vs corev1.VolumeSource) *corev1.Pod {
		p := newPod("p", "u", testNode)
		p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: vs}}
		return p
	}
	env := func(e corev1.EnvVar, from corev1.EnvFromSource) *corev1.Pod {
		p := newPod("p", "u", testNode)
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Env: []corev1.EnvVar{e}, EnvFrom: []corev1.EnvFromSource{from}}}
		return p
	}
	ref := corev1.LocalObjectReference{Name: "x"}
	tests := []struct {
		name     string
		pod      *corev1.Pod
		typ      string
		want     bool
		wantName string
	}{
		{"configmap volume", vol(corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref}}), resource.TypeConfigMap, true, "x"},
		{"configmap volume, other name", vol(corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref}}), resource.TypeConfigMap, false, "y"},
		{"configmap volume is not a secret", vol(corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref}}), resource.TypeSecret, false, "x"},
		{"secret volume", vol(corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}), resource.TypeSecret, true, "x"},
		{"projected secret", vol(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: ref}}}}}), resource.TypeSecret, true, "x"},
		{"env configmap key", env(corev1.EnvVar{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref}}}, corev1.EnvFromSource{}), resource.TypeConfigMap, true, "x"},
		{"envFrom secret", env(corev1.EnvVar{Name: "A", Value: "b"}, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: ref}}), resource.TypeSecret, true, "x"},
		{"plain env", env(corev1.EnvVar{Name: "A", Value: "x"}, corev1.EnvFromSource{}), resource.TypeConfigMap, false, "x"},
		{"image pull secret", func() *corev1.Pod {
			p := newPod("p", "u", testNode)
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{ref}
			return p
		}(), resource.TypeSecret, true, "x"},
	}
	for _, tt := range tests {
		if got := references(tt.pod, tt.typ, tt.wantName); got != tt.want {
			t.Errorf("%s: references = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDeleteOfUnknownPodRelists(t *testing.T) {
	keep := newPod("keep", "uid-keep", testNode)
	gone := newPod("gone", "uid-gone", testNode)
	h := start(t, setup{pods: []*corev1.Pod{keep, gone}})
	h.eventually("syncs", func() bool { return h.rt.syncCount(keep.UID) == 1 && h.rt.syncCount(gone.UID) == 1 })

	h.meta.mu.Lock()
	delete(h.meta.pods, "ns1/gone")
	h.meta.mu.Unlock()
	// A delete edged cannot place (no content, unknown name) makes it re-list.
	h.push(model.DeleteOperation, "ns1/pod/unknown", nil)
	h.eventually("pod missing from the database killed", func() bool { return len(h.rt.killed()) == 1 })
	if k := h.rt.killed()[0]; k.uid != gone.UID {
		t.Errorf("killed %s, want %s", k.uid, gone.UID)
	}
	if n := len(h.meta.sent(resource.TypePod, model.QueryOperation)); n != 2 {
		t.Errorf("%d pod queries, want 2", n)
	}
}
