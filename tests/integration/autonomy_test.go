//go:build integration

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/cloud/edgecontroller"
	"github.com/tether-edge/tether/tests/framework"
)

// Timers of the outage test: the API server's default not-ready/unreachable toleration (what the
// DefaultTolerationSeconds admission plugin gives a pod, 300 s by default) and kube-controller-manager's node
// monitor grace period (50 s by default).
const (
	outageToleration = 4 // seconds
	outageGrace      = "8s"
)

// Edge autonomy against the real node lifecycle and taint eviction controllers, a real cloudcore and an edge node
// on real containerd. Phase 1: the node is autonomous (the default); cloudcore is stopped for well past the pod's
// toleration, the node is tainted unreachable, and the pod stays in the API server with the same container
// running on the edge; when the link returns the node is Ready, the pod Ready, its container and restart count
// unchanged. Phase 2: the node opts out with kubectl label; the pod gets the admission plugin's toleration back and
// the same outage evicts it as Kubernetes does: deleted in the API server, then on the edge when it reconnects.
func TestEdgeAutonomySurvivesLongOutage(t *testing.T) {
	ctx := context.Background()
	secs := strconv.Itoa(outageToleration)
	cp := framework.StartControlPlane(t,
		framework.WithAPIServerFlag("default-not-ready-toleration-seconds", secs),
		framework.WithAPIServerFlag("default-unreachable-toleration-seconds", secs))
	framework.StartKubeControllers(t, cp, "--node-monitor-period=1s", "--node-monitor-grace-period="+outageGrace,
		"--node-startup-grace-period=20s", "--node-eviction-rate=10")
	// With every node of a zone unreachable the node lifecycle controller assumes its own network failed and
	// evicts nothing; a healthy kubelet node keeps the zone "partially" up, as in a real cluster.
	heartbeatKubeletNode(t, cp, "kubelet-1")

	ctd := framework.StartContainerd(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeNodeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"), ctd)
	e := &podEnv{cp: cp, ctd: ctd, cloud: cloud, edge: framework.StartEdgeNode(t, cfg)}
	waitNodeReady(t, cp)

	// A pod on the kubelet node keeps what admission gave it: autonomy is for edge nodes only.
	kubeletPod := testPod("on-kubelet", func(p *corev1.Pod) { p.Spec.NodeName = "kubelet-1" })
	e.create(t, kubeletPod)

	// ---- Phase 1: autonomous (no label) ----
	e.create(t, testPod("survivor", nil))
	p := e.waitPod(t, "survivor", "Running and tolerating outages forever", 60*time.Second, func(p *corev1.Pod) bool {
		return running(p) && outageToleranceSeconds(p) == nil
	})
	t.Logf("tolerations: %s, restore record %s", tolerationsString(p), p.Annotations[edgecontroller.AutonomyRestoreAnnotation])
	if want := fmt.Sprintf(`{"node.kubernetes.io/not-ready":%d,"node.kubernetes.io/unreachable":%d}`, outageToleration, outageToleration); p.Annotations[edgecontroller.AutonomyRestoreAnnotation] != want {
		t.Errorf("restore record = %q, want %q", p.Annotations[edgecontroller.AutonomyRestoreAnnotation], want)
	}
	before := p.Status.ContainerStatuses[0]
	if before.RestartCount != 0 {
		t.Errorf("restart count %d before any outage, want 0", before.RestartCount)
	}
	ids := e.containerIDs(t, p.UID)
	if len(ids) != 1 || "containerd://"+ids[0] != before.ContainerID {
		t.Fatalf("runtime containers %v, API says %s", ids, before.ContainerID)
	}

	tainted := func() bool {
		var n corev1.Node
		must(t, cp.Client.Get(ctx, client.ObjectKey{Name: node}, &n))
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeUnreachable && taint.Effect == corev1.TaintEffectNoExecute {
				return true
			}
		}
		return false
	}
	outage := func(what string) time.Time {
		t.Helper()
		if tainted() {
			t.Fatalf("%s: node still tainted from before", what)
		}
		e.cloud.Stop()
		cut := time.Now()
		framework.Eventually(t, 60*time.Second, "node "+node+" tainted unreachable ("+what+")", tainted)
		t.Logf("%s: node tainted unreachable %s after the link went down", what, time.Since(cut).Round(100*time.Millisecond))
		return cut
	}
	cut := outage("autonomy on")
	// Well past the toleration the pod would have had: the taint manager would have deleted it by now.
	time.Sleep(3 * outageToleration * time.Second)
	var during corev1.Pod
	must(t, cp.Client.Get(ctx, client.ObjectKeyFromObject(p), &during))
	if during.DeletionTimestamp != nil || during.UID != p.UID {
		t.Fatalf("pod evicted during the outage (deletionTimestamp %v)", during.DeletionTimestamp)
	}
	t.Logf("after %s offline: pod in the API server, Ready condition %s (the node lifecycle controller's mark)",
		time.Since(cut).Round(time.Second), podReady(&during))
	if got := e.containerIDs(t, p.UID); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("containers during the outage = %v, want the same %v", got, ids)
	}

	e.cloud = framework.StartCloud(t, e.cloud.Config)
	waitNodeReady(t, cp)
	after := e.waitPod(t, "survivor", "Ready again with the same container", 60*time.Second, func(q *corev1.Pod) bool {
		return running(q) && podReady(q) == corev1.ConditionTrue
	})
	cs := after.Status.ContainerStatuses[0]
	if cs.ContainerID != before.ContainerID || cs.RestartCount != before.RestartCount || after.UID != p.UID {
		t.Errorf("after reconnect: container %s restarts %d (uid %s), want %s restarts %d (uid %s)",
			cs.ContainerID, cs.RestartCount, after.UID, before.ContainerID, before.RestartCount, p.UID)
	}
	if got := e.containerIDs(t, p.UID); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("containers after reconnect = %v, want the same %v", got, ids)
	}
	framework.Eventually(t, 30*time.Second, "unreachable taint removed after reconnect", func() bool { return !tainted() })
	var kp corev1.Pod
	must(t, cp.Client.Get(ctx, client.ObjectKeyFromObject(kubeletPod), &kp))
	if s := outageToleranceSeconds(&kp); s == nil || *s != outageToleration || kp.Annotations[edgecontroller.AutonomyRestoreAnnotation] != "" {
		t.Errorf("pod on the kubelet node was changed: %s", tolerationsString(&kp))
	}

	// ---- Phase 2: opted out ----
	if _, err := cp.Kubectl(ctx, "label", "node", node, edgecontroller.AutonomyLabel+"=false"); err != nil {
		t.Fatal(err)
	}
	e.waitPod(t, "survivor", "tolerations restored", 30*time.Second, func(q *corev1.Pod) bool {
		s := outageToleranceSeconds(q)
		return s != nil && *s == outageToleration && q.Annotations[edgecontroller.AutonomyRestoreAnnotation] == ""
	})
	cut = outage("autonomy off")
	evicted := e.waitPod(t, "survivor", "evicted by the taint manager", 60*time.Second, func(q *corev1.Pod) bool {
		return q.DeletionTimestamp != nil
	})
	t.Logf("autonomy off: pod deleted %s after the link went down", evicted.DeletionTimestamp.Sub(cut).Round(time.Second))
	if got := e.containerIDs(t, p.UID); fmt.Sprint(got) != fmt.Sprint(ids) {
		// The toleration change reached the edge before the outage; it must not have restarted anything either.
		t.Errorf("the edge, offline, should still run the pod's container %v: containers %v", ids, got)
	}
	e.cloud = framework.StartCloud(t, e.cloud.Config)
	framework.Eventually(t, 60*time.Second, "evicted pod gone from the API server", func() bool {
		var q corev1.Pod
		return apierrors.IsNotFound(cp.Client.Get(ctx, client.ObjectKeyFromObject(p), &q))
	})
	framework.Eventually(t, 30*time.Second, "evicted pod's containers stopped on the edge", func() bool {
		return len(e.containerIDs(t, p.UID)) == 0
	})
}

// outageToleranceSeconds is the tolerationSeconds of the pod's unreachable NoExecute toleration, nil for forever
// (or no such toleration; the tests only look at pods that have one).
func outageToleranceSeconds(p *corev1.Pod) *int64 {
	var out *int64
	found := false
	for _, tol := range p.Spec.Tolerations {
		if tol.Key == corev1.TaintNodeUnreachable && tol.Effect == corev1.TaintEffectNoExecute {
			if !found || (tol.TolerationSeconds != nil && (out == nil || *tol.TolerationSeconds < *out)) {
				out = tol.TolerationSeconds
			}
			found = true
		}
	}
	if !found {
		return ptr.To[int64](0)
	}
	return out
}

func tolerationsString(p *corev1.Pod) string {
	s := ""
	for _, tol := range p.Spec.Tolerations {
		secs := "forever"
		if tol.TolerationSeconds != nil {
			secs = fmt.Sprintf("%ds", *tol.TolerationSeconds)
		}
		s += fmt.Sprintf("[%s %s %s %s] ", tol.Key, tol.Operator, tol.Effect, secs)
	}
	return s
}

func podReady(p *corev1.Pod) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// heartbeatKubeletNode registers a kubelet node (no edge role) that stays Ready: its Lease is renewed every second
// until the test ends, as a kubelet would.
func heartbeatKubeletNode(t *testing.T, cp *framework.ControlPlane, name string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	must(t, cp.Client.Create(ctx, n))
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: now, LastTransitionTime: now}}
	must(t, cp.Client.Status().Update(ctx, n))
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: name},
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &metav1.MicroTime{Time: time.Now()}}}
	must(t, cp.Client.Create(ctx, lease))
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			if err := cp.Client.Update(ctx, lease); err != nil && ctx.Err() == nil {
				t.Logf("renewing lease of %s: %v", name, err)
				_ = cp.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
