package edgecontroller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/resource"
)

// BenchmarkStatusUpdates measures what the node authorizer adds to the hot path: the node and pod status patches
// every edge node sends, for 1,000 nodes with 10 pods each. The API server is a reactor that answers at once, so
// the numbers are cloudcore's own CPU per update. "authorizer=off" runs the same handler steps without the
// authorization and patch-sanitising steps; the ratio of the two is the authorizer's cost.
//
//	go test -run '^$' -bench StatusUpdates -benchmem ./cloud/edgecontroller/
func BenchmarkStatusUpdates(b *testing.B) {
	const nodes, podsPerNode = 1000, 10
	kube := fake.NewClientset()
	pod0 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", ResourceVersion: "1"}}
	node0 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: "1"}}
	kube.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, pod0, nil })
	kube.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) { return true, node0, nil })
	r, err := newRun(Options{Kube: kube, Config: v1alpha1.EdgeController{Enable: true}, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	if err := addPodIndexers(r.pods); err != nil {
		b.Fatal(err)
	}
	var reqs []*request
	for n := range nodes {
		name := fmt.Sprintf("edge-%04d", n)
		node := edgeNode(name, "1")
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		must(b, r.inf.Nodes().GetIndexer().Add(node))
		reqs = append(reqs, benchRequest(b, name, "default", resource.TypeNodePatch, name,
			`{"status":{"conditions":[{"type":"Ready","status":"True"}]}}`))
		for p := range podsPerNode {
			pn := fmt.Sprintf("%s-p%d", name, p)
			must(b, r.pods.GetIndexer().Add(pod(pn, name, "1")))
			reqs = append(reqs, benchRequest(b, name, "default", resource.TypePodPatch, pn,
				fmt.Sprintf(`{"metadata":{"uid":"uid-%s"},"status":{"phase":"Running"}}`, pn)))
		}
	}
	ctx := context.Background()
	for _, authorize := range []bool{false, true} {
		b.Run(fmt.Sprintf("authorizer=%s", map[bool]string{false: "off", true: "on"}[authorize]), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req := reqs[i%len(reqs)]
				i++
				var err error
				switch {
				case authorize && req.res.Type == resource.TypeNodePatch:
					_, err = r.patchNodeStatus(ctx, req)
				case authorize:
					_, err = r.patchPodStatus(ctx, req)
				default:
					err = r.statusWithoutAuthorizer(ctx, req)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
		})
	}
}

// statusWithoutAuthorizer is patchNodeStatus / patchPodStatus minus the authorizer and the patch sanitising: the
// baseline of BenchmarkStatusUpdates.
func (r *run) statusWithoutAuthorizer(ctx context.Context, req *request) error {
	patch, err := req.patch()
	if err != nil {
		return err
	}
	if req.res.Type == resource.TypeNodePatch {
		live, err := r.liveNode(ctx, req.res.Name)
		if err != nil {
			return err
		}
		if patch, err = adjustConditionPatch(patch, nodeConditionStates(live.Status.Conditions), r.now(), r.freq, true); err != nil {
			return err
		}
		_, err = r.opts.Kube.CoreV1().Nodes().Patch(ctx, req.res.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}
	live, err := r.livePod(ctx, req.res.Namespace, req.res.Name)
	if err != nil {
		return err
	}
	if patch, err = adjustConditionPatch(patch, podConditionStates(live.Status.Conditions), r.now(), 0, false); err != nil {
		return err
	}
	_, err = r.opts.Kube.CoreV1().Pods(req.res.Namespace).Patch(ctx, req.res.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

func benchRequest(b *testing.B, node, ns, typ, name, patch string) *request {
	res, err := resource.BuildCloud(node, ns, typ, name)
	must(b, err)
	c, err := resource.ParseCloud(res)
	must(b, err)
	msg := model.NewMessage("").BuildRouter("edged", model.GroupResource, res, model.PatchOperation).FillBody(patch)
	return &request{msg: *msg, res: c}
}
