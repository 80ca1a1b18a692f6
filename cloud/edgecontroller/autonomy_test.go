package edgecontroller

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// isAutonomyPatch tells cloudcore's own toleration patches from writes made on an edge's behalf.
func isAutonomyPatch(a k8stesting.Action) bool {
	p, ok := a.(k8stesting.PatchActionImpl)
	return ok && a.GetResource().Resource == "pods" && p.PatchOptions.FieldManager == autonomyFieldManager
}

// Tolerations as the API server's admission and controllers write them.
var (
	notReady300    = corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}
	unreachable300 = corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}
	notReadyEver   = corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}
	unreachableEvr = corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}
	dedicated      = corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "shop", Effect: corev1.TaintEffectNoSchedule}
)

func tolerationSeconds(t corev1.Toleration, s int64) corev1.Toleration {
	t.TolerationSeconds = &s
	return t
}

const restored300 = `{"node.kubernetes.io/not-ready":300,"node.kubernetes.io/unreachable":300}`

// autonomyNode is an edge node whose AutonomyLabel is label ("" = unset).
func autonomyNode(name, label string) *corev1.Node {
	n := edgeNode(name, "1")
	if label != "" {
		n.Labels[AutonomyLabel] = label
	}
	return n
}

func withTolerations(ts ...corev1.Toleration) podOpt {
	return func(p *corev1.Pod) { p.Spec.Tolerations = ts }
}

func withAnnotation(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

// newTestAutonomy is an autonomy over listers holding objs, writing to kube (which holds objs too).
func newTestAutonomy(t *testing.T, kube *fake.Clientset, objs ...runtime.Object) *autonomy {
	t.Helper()
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, podIndexers())
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *corev1.Pod:
			err = pods.Add(o)
		case *corev1.Node:
			err = nodes.Add(o)
		}
		must(t, err)
	}
	a := newAutonomy(kube, corelisters.NewPodLister(pods), pods, corelisters.NewNodeLister(nodes), time.Second)
	t.Cleanup(a.queue.ShutDown)
	return a
}

func TestAutonomyTolerations(t *testing.T) {
	daemonSet := []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	deleting := metav1.Now()
	tests := []struct {
		name string
		node *corev1.Node
		pod  *corev1.Pod
		// want is the pod's tolerations afterwards (nil: unchanged, and no write at all).
		want        []corev1.Toleration
		wantRestore string // AutonomyRestoreAnnotation afterwards; "" absent
	}{
		{name: "missing tolerations are added forever", node: autonomyNode("edge-1", ""),
			pod:  pod("p", "edge-1", "5", withTolerations(dedicated)),
			want: []corev1.Toleration{dedicated, notReadyEver, unreachableEvr}, wantRestore: restored300},
		{name: "admission's 300 s become forever", node: autonomyNode("edge-1", ""),
			pod:  pod("p", "edge-1", "5", withTolerations(dedicated, notReady300, unreachable300)),
			want: []corev1.Toleration{dedicated, notReadyEver, unreachableEvr}, wantRestore: restored300},
		{name: "label true is the default", node: autonomyNode("edge-1", "true"),
			pod:  pod("p", "edge-1", "5", withTolerations(notReady300, tolerationSeconds(unreachable300, 5))),
			want: []corev1.Toleration{notReadyEver, unreachableEvr}, wantRestore: `{"node.kubernetes.io/not-ready":300,"node.kubernetes.io/unreachable":5}`},
		{name: "unreadable label keeps the default", node: autonomyNode("edge-1", "maybe"),
			pod:  pod("p", "edge-1", "5", withTolerations(notReady300, unreachable300)),
			want: []corev1.Toleration{notReadyEver, unreachableEvr}, wantRestore: restored300},
		{name: "an Equal toleration without value counts; other effects do not", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(
				corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpEqual, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](60)},
				corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})),
			want: []corev1.Toleration{
				{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpEqual, Effect: corev1.TaintEffectNoExecute},
				{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
				notReadyEver},
			wantRestore: `{"node.kubernetes.io/not-ready":300,"node.kubernetes.io/unreachable":60}`},
		{name: "already forever is not written", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, restored300))},
		{name: "DaemonSet pod tolerating forever is not written", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(daemonSet...))},
		{name: "opt-out restores 300 s", node: autonomyNode("edge-1", "false"),
			pod:  pod("p", "edge-1", "5", withTolerations(dedicated, notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, restored300)),
			want: []corev1.Toleration{dedicated, notReady300, unreachable300}},
		{name: "opt-out restores what was recorded", node: autonomyNode("edge-1", "false"),
			pod: pod("p", "edge-1", "5", withTolerations(notReadyEver, unreachableEvr),
				withAnnotation(AutonomyRestoreAnnotation, `{"node.kubernetes.io/not-ready":7,"node.kubernetes.io/unreachable":5}`)),
			want: []corev1.Toleration{tolerationSeconds(notReadyEver, 7), tolerationSeconds(unreachableEvr, 5)}},
		{name: "opt-out with an unreadable record restores 300 s", node: autonomyNode("edge-1", "0"),
			pod:  pod("p", "edge-1", "5", withTolerations(notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, "{")),
			want: []corev1.Toleration{notReady300, unreachable300}},
		{name: "opt-out leaves pods autonomy never changed", node: autonomyNode("edge-1", "false"),
			pod: pod("p", "edge-1", "5", withTolerations(notReady300, unreachable300))},
		{name: "opt-out leaves DaemonSet pods", node: autonomyNode("edge-1", "false"),
			pod: pod("p", "edge-1", "5", withTolerations(daemonSet...))},
		{name: "non-edge node untouched", node: node("kubelet-1", "1"),
			pod: pod("p", "kubelet-1", "5", withTolerations(notReady300, unreachable300))},
		{name: "non-edge node without admission's tolerations untouched", node: node("kubelet-1", "1"),
			pod: pod("p", "kubelet-1", "5")},
		{name: "node that left the edge role gets autonomy undone", node: node("kubelet-1", "1"),
			pod:  pod("p", "kubelet-1", "5", withTolerations(notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, restored300)),
			want: []corev1.Toleration{notReady300, unreachable300}},
		{name: "mirror pod untouched", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(notReady300), withAnnotation(corev1.MirrorPodAnnotationKey, "hash"))},
		{name: "terminating pod untouched", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(notReady300, unreachable300), func(p *corev1.Pod) { p.DeletionTimestamp = &deleting })},
		{name: "finished pod untouched", node: autonomyNode("edge-1", ""),
			pod: pod("p", "edge-1", "5", withTolerations(notReady300, unreachable300), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := fake.NewClientset(tt.node, tt.pod)
			a := newTestAutonomy(t, kube, tt.node, tt.pod)
			before := tt.pod.DeepCopy()

			a.check(tt.pod)
			if queued := a.queue.Len() == 1; queued != (tt.want != nil) {
				t.Errorf("queued = %v, want %v", queued, tt.want != nil)
			}
			must(t, a.sync(context.Background(), "default/p"))
			if !reflect.DeepEqual(tt.pod, before) {
				t.Error("the cached pod was modified")
			}
			patches := 0
			for _, act := range kube.Actions() {
				if act.GetVerb() != "get" && act.GetVerb() != "list" && act.GetVerb() != "watch" {
					patches++
					if !isAutonomyPatch(act) {
						t.Errorf("unexpected write %v", act)
					}
				}
			}
			got, err := kube.CoreV1().Pods("default").Get(context.Background(), "p", metav1.GetOptions{})
			must(t, err)
			if tt.want == nil {
				if patches != 0 {
					t.Errorf("%d writes to a pod that needed none", patches)
				}
				return
			}
			if patches != 1 {
				t.Errorf("%d writes, want 1", patches)
			}
			if !reflect.DeepEqual(got.Spec.Tolerations, tt.want) {
				t.Errorf("tolerations =\n  %s\nwant\n  %s", js(got.Spec.Tolerations), js(tt.want))
			}
			if r := got.Annotations[AutonomyRestoreAnnotation]; r != tt.wantRestore {
				t.Errorf("restore annotation = %q, want %q", r, tt.wantRestore)
			}

			// Idempotent: the result needs nothing more in the same mode.
			if _, change := planTolerations(got, nodeAutonomy(tt.node)); change {
				t.Errorf("a second pass would change the pod again")
			}
		})
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A conflict makes the worker read the pod again from the API server and patch from that version.
func TestAutonomyRetriesConflicts(t *testing.T) {
	n := autonomyNode("edge-1", "")
	cached := pod("p", "edge-1", "5", withTolerations(notReady300, unreachable300))
	live := pod("p", "edge-1", "6", withTolerations(notReady300, unreachable300, dedicated))
	kube := fake.NewClientset(n, live)
	var patchedRVs []string
	kube.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		var body struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		must(t, json.Unmarshal(a.(k8stesting.PatchActionImpl).Patch, &body))
		patchedRVs = append(patchedRVs, body.Metadata.ResourceVersion)
		if body.Metadata.ResourceVersion != "6" {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", nil)
		}
		return false, nil, nil
	})
	a := newTestAutonomy(t, kube, n, cached)
	must(t, a.sync(context.Background(), "default/p"))
	if !reflect.DeepEqual(patchedRVs, []string{"5", "6"}) {
		t.Errorf("patches preconditioned on %v, want [5 6]", patchedRVs)
	}
	got, err := kube.CoreV1().Pods("default").Get(context.Background(), "p", metav1.GetOptions{})
	must(t, err)
	if want := []corev1.Toleration{notReadyEver, unreachableEvr, dedicated}; !reflect.DeepEqual(got.Spec.Tolerations, want) {
		t.Errorf("tolerations = %s, want %s (the live pod's, made forever)", js(got.Spec.Tolerations), js(want))
	}
}

// A node's pods are checked again only when its mode changes.
func TestAutonomyNodeChanges(t *testing.T) {
	on := autonomyNode("edge-1", "")
	p1 := pod("p1", "edge-1", "5", withTolerations(notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, restored300))
	p2 := pod("p2", "edge-1", "5", withTolerations(notReady300, unreachable300)) // never changed by autonomy
	other := pod("o", "edge-2", "5", withTolerations(notReadyEver, unreachableEvr), withAnnotation(AutonomyRestoreAnnotation, restored300))
	off := autonomyNode("edge-1", "false")
	a := newTestAutonomy(t, fake.NewClientset(), off, p1, p2, other)

	relabelled := on.DeepCopy()
	relabelled.Labels["zone"] = "north"
	a.checkNode(relabelled, on)
	if a.queue.Len() != 0 {
		t.Fatalf("a label change that keeps the mode queued %d pods", a.queue.Len())
	}
	a.checkNode(off, on)
	if a.queue.Len() != 1 {
		t.Fatalf("turning autonomy off queued %d pods, want 1 (p1; p2 was never changed, o is another node's)", a.queue.Len())
	}
	if key, _ := a.queue.Get(); key != "default/p1" {
		t.Errorf("queued %s, want default/p1", key)
	}
}

// Through the whole controller: a pod on an edge node is made to tolerate outages, and opting the node out puts
// the admission plugin's values back.
func TestAutonomyInController(t *testing.T) {
	objs := append(barrierObjects(), pod("web", "edge-1", "5", withTolerations(notReady300, unreachable300)))
	h := start(t, objs...)
	waitTolerations := func(what string, want []corev1.Toleration) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			p := h.getPod("web")
			if reflect.DeepEqual(p.Spec.Tolerations, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: tolerations %s, want %s", what, js(p.Spec.Tolerations), js(want))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitTolerations("autonomy on", []corev1.Toleration{notReadyEver, unreachableEvr})

	n, err := h.kube.CoreV1().Nodes().Get(h.ctx, "edge-1", metav1.GetOptions{})
	must(t, err)
	n.Labels[AutonomyLabel] = "false"
	n.ResourceVersion = "70"
	_, err = h.kube.CoreV1().Nodes().Update(h.ctx, n, metav1.UpdateOptions{})
	must(t, err)
	waitTolerations("autonomy off", []corev1.Toleration{notReady300, unreachable300})
	if p := h.getPod("web"); p.Annotations[AutonomyRestoreAnnotation] != "" {
		t.Errorf("restore annotation left after opting out: %q", p.Annotations[AutonomyRestoreAnnotation])
	}
}
