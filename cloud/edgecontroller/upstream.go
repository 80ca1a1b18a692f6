package edgecontroller

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// Errors classifying why a request failed; they map to the StatusError reasons edges (kubelet) understand.
var (
	errBadInput  = errors.New("bad request")
	errForbidden = errors.New("forbidden")
	errBusy      = errors.New("too many requests")
)

// replyShape is how a handler's result travels back.
type replyShape int

const (
	// shapeNone: fire-and-forget (events); failures are only logged.
	shapeNone replyShape = iota
	// shapeOK: "OK" on success ([v1.7] style), a StatusError otherwise.
	shapeOK
	// shapeObject: the object itself (TypeMeta set, RV in the header), a StatusError otherwise.
	shapeObject
	// shapeObjectResp: {"Object":..., "Err":...}, the kubelet bridge's reply.
	shapeObjectResp
	// shapeStatus: only ever an error; used to refuse unroutable messages.
	shapeStatus
)

type handler struct {
	pool  string // KubeEdge's buffer key; its worker count is load[pool+"Workers"]
	shape replyShape
	// replyType replaces the resource type in the reply's resource, when KubeEdge does so.
	replyType string
	fn        func(r *run, ctx context.Context, req *request) (runtime.Object, error)
}

// lookup is the routing table of §6.2.
func lookup(typ, op string) (handler, bool) {
	type key struct{ typ, op string }
	switch (key{typ, op}) {
	case key{resource.TypeNodeStatus, model.InsertOperation}:
		return handler{"createNode", shapeOK, resource.TypeNode, (*run).registerNode}, true
	case key{resource.TypeNodeStatus, model.UpdateOperation}:
		return handler{"updateNodeStatus", shapeOK, "", (*run).updateNodeStatus}, true
	case key{resource.TypeNode, model.InsertOperation}:
		return handler{"createNode", shapeObjectResp, "", (*run).registerNode}, true
	case key{resource.TypeNode, model.QueryOperation}:
		return handler{"queryNode", shapeObject, "", (*run).queryNode}, true
	case key{resource.TypeNode, model.UpdateOperation}:
		return handler{"updateNode", shapeOK, "", (*run).updateNode}, true
	case key{resource.TypeNodePatch, model.PatchOperation}:
		return handler{"patchNode", shapeObjectResp, "", (*run).patchNodeStatus}, true
	case key{resource.TypePodStatus, model.UpdateOperation}:
		return handler{"updatePodStatus", shapeOK, "", (*run).updatePodStatus}, true
	case key{resource.TypePodPatch, model.PatchOperation}:
		return handler{"patchPod", shapeObjectResp, "", (*run).patchPodStatus}, true
	case key{resource.TypePod, model.DeleteOperation}:
		return handler{"deletePod", shapeOK, "", (*run).deletePod}, true
	case key{resource.TypePod, model.InsertOperation}:
		return handler{"createPod", shapeObjectResp, "", (*run).createPod}, true
	case key{resource.TypeLease, model.InsertOperation}, key{resource.TypeLease, model.UpdateOperation}:
		return handler{"createLease", shapeObjectResp, "", (*run).writeLease}, true
	case key{resource.TypeLease, model.QueryOperation}:
		return handler{"queryLease", shapeObjectResp, "", (*run).queryLease}, true
	case key{resource.TypeConfigMap, model.QueryOperation}:
		return handler{"queryConfigMap", shapeObject, "", (*run).queryConfigMap}, true
	case key{resource.TypeSecret, model.QueryOperation}:
		return handler{"querySecret", shapeObject, "", (*run).querySecret}, true
	case key{resource.TypePersistentVolumeClaim, model.QueryOperation}:
		return handler{"queryPersistentVolumeClaim", shapeObject, "", (*run).queryPVC}, true
	case key{resource.TypePersistentVolume, model.QueryOperation}:
		return handler{"queryPersistentVolume", shapeObject, "", (*run).queryPV}, true
	case key{resource.TypeServiceAccountToken, model.QueryOperation}:
		return handler{"serviceAccountToken", shapeObject, "", (*run).createToken}, true
	case key{resource.TypeEvent, model.InsertOperation}, key{resource.TypeEvent, model.UpdateOperation},
		key{resource.TypeEvent, model.PatchOperation}:
		return handler{"processEvent", shapeNone, "", (*run).writeEvent}, true
	}
	return handler{}, false
}

type request struct {
	msg model.Message
	res resource.Cloud
}

// decode reads the content as JSON into v.
func (q *request) decode(v any) error {
	if q.msg.Content == nil {
		return fmt.Errorf("%w: %s %s has no content", errBadInput, q.msg.Router.Operation, q.msg.Router.Resource)
	}
	if err := q.msg.UnmarshalContent(v); err != nil {
		return fmt.Errorf("%w: %s %s: %w", errBadInput, q.msg.Router.Operation, q.msg.Router.Resource, err)
	}
	return nil
}

// namespace returns the resource's namespace, which must exist and match objNS when that is set.
func (q *request) namespace(objNS string) (string, error) {
	ns := q.res.Namespace
	if ns == "" || q.res.ClusterScoped() {
		return "", fmt.Errorf("%w: %s needs a namespace", errBadInput, q.msg.Router.Resource)
	}
	if objNS != "" && objNS != ns {
		return "", fmt.Errorf("%w: object namespace %q does not match %s", errBadInput, objNS, q.msg.Router.Resource)
	}
	return ns, nil
}

// name returns the resource's name, which must exist and match objName when that is set.
func (q *request) name(objName string) (string, error) {
	if q.res.Name == "" {
		return "", fmt.Errorf("%w: %s needs a name", errBadInput, q.msg.Router.Resource)
	}
	if objName != "" && objName != q.res.Name {
		return "", fmt.Errorf("%w: object name %q does not match %s", errBadInput, objName, q.msg.Router.Resource)
	}
	return q.res.Name, nil
}

// key returns the resource's namespace and name, checked as namespace and name check them.
func (q *request) key(objNS, objName string) (ns, name string, err error) {
	if ns, err = q.namespace(objNS); err != nil {
		return "", "", err
	}
	if name, err = q.name(objName); err != nil {
		return "", "", err
	}
	return ns, name, nil
}

// serve runs one request on a pool worker. API calls get their own deadline; the reply uses the module's context so
// a request that used up its time still gets its error back.
func (r *run) serve(ctx context.Context, h handler, req *request) {
	callCtx, cancel := context.WithTimeout(ctx, r.opts.RequestTimeout)
	obj, err := h.fn(r, callCtx, req)
	cancel()
	r.finish(ctx, h, req, obj, err)
}

// finish logs a failure and sends the reply h's shape calls for.
func (r *run) finish(ctx context.Context, h handler, req *request, obj runtime.Object, err error) {
	if err != nil {
		logFailure(req, err)
		obj = nil // may be a typed nil pointer
	}
	if h.shape == shapeNone {
		return
	}
	res := req.msg.Router.Resource
	if h.replyType != "" {
		c := req.res
		c.Type = h.replyType
		res = c.String()
	}
	resp := model.NewMessage(req.msg.Header.ID).
		BuildRouter(modules.EdgeController, model.GroupResource, res, model.ResponseOperation)
	if err == nil && obj != nil {
		obj = withTypeMeta(obj)
		if a, aerr := meta.Accessor(obj); aerr == nil {
			resp.SetResourceVersion(a.GetResourceVersion())
		}
	}
	switch {
	case h.shape == shapeObjectResp:
		resp.FillBody(&ObjectResp{Object: obj, Err: statusError(err)})
	case err != nil:
		// A Go error as content is what CloudHub recognises as a reply needing no ACK; on the wire it is the
		// StatusError's JSON, {"ErrStatus":{...}}.
		resp.FillBody(statusError(err))
	case h.shape == shapeOK:
		resp.FillBody("OK")
	default:
		resp.FillBody(obj)
	}
	r.send(ctx, resp)
}

func logFailure(req *request, err error) {
	if ref, ok := nodeauthz.IsRefusal(err); ok {
		klog.InfoS("Refusing edge request", "node", ref.Node, "rule", ref.Rule, "msg", req.msg.String(), "reason", ref.Reason)
		return
	}
	switch {
	case errors.Is(err, context.Canceled):
		// cloudcore is stopping; the edge retries the request with the next cloudcore.
		klog.V(2).InfoS("Edge request cut short: shutting down", "msg", req.msg.String(), "err", err)
	case errors.Is(err, errBadInput), errors.Is(err, errForbidden):
		klog.InfoS("Refusing edge request", "msg", req.msg.String(), "err", err)
	case apierrors.IsNotFound(err), apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		klog.V(2).InfoS("Edge request failed", "msg", req.msg.String(), "err", err)
	default:
		klog.ErrorS(err, "Edge request failed", "msg", req.msg.String())
	}
}

// statusError turns err into what a Kubernetes API server would have answered.
func statusError(err error) *apierrors.StatusError {
	if err == nil {
		return nil
	}
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return &apierrors.StatusError{ErrStatus: st.Status()}
	}
	if ref, ok := nodeauthz.IsRefusal(err); ok {
		if ref.Rule == nodeauthz.RuleNotReady {
			return apierrors.NewTooManyRequests(err.Error(), 1)
		}
		return forbidden(err)
	}
	switch {
	case errors.Is(err, errBadInput):
		return apierrors.NewBadRequest(err.Error())
	case errors.Is(err, errForbidden):
		return forbidden(err)
	case errors.Is(err, errBusy):
		return apierrors.NewTooManyRequests(err.Error(), 1)
	case errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError(err.Error(), 1)
	}
	return apierrors.NewInternalError(err)
}

func forbidden(err error) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden, Message: err.Error(),
	}}
}

// withTypeMeta returns a copy of obj with apiVersion and kind set: typed objects from clients and informers lack
// them, and edges decode by them.
func withTypeMeta(obj runtime.Object) runtime.Object {
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil || len(gvks) == 0 {
		return obj
	}
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	return obj
}

// clearServerFields drops what only the API server may set, so an object from the edge can be created.
func clearServerFields(m *metav1.ObjectMeta) {
	m.UID = ""
	m.ResourceVersion = ""
	m.Generation = 0
	m.CreationTimestamp = metav1.Time{}
	m.DeletionTimestamp = nil
	m.DeletionGracePeriodSeconds = nil
	m.ManagedFields = nil
}

// ---- nodes ----

// registerNode creates the Node in the content ([v1.7] nodestatus insert, v1.2x node insert), or reconciles an
// existing one: an edge registers again after every restart and must not fail because it registered before.
func (r *run) registerNode(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.authz.OwnNode(req.res.NodeID, req.res.Name); err != nil {
		return nil, err
	}
	in := &corev1.Node{}
	if err := req.decode(in); err != nil {
		return nil, err
	}
	if in.Name == "" {
		in.Name = req.res.Name
	}
	if in.Name != req.res.Name {
		return nil, fmt.Errorf("%w: node object %q registered as %q", errForbidden, in.Name, req.res.Name)
	}
	clearServerFields(&in.ObjectMeta)
	// Owners and finalizers would let a node tie its Node's life to other objects or block its deletion.
	in.OwnerReferences, in.Finalizers = nil, nil
	if err := r.authz.NodeSpec(req.res.NodeID, nil, in); err != nil {
		return nil, err
	}
	if err := r.authz.NodeLabels(req.res.NodeID, nil, in.Labels); err != nil {
		return nil, err
	}
	ensureEdgeLabel(&in.ObjectMeta)
	created, err := r.opts.Kube.CoreV1().Nodes().Create(ctx, in, metav1.CreateOptions{})
	if err == nil {
		klog.InfoS("Registered edge node", "node", in.Name)
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating node %s: %w", in.Name, err)
	}
	return r.reconcileNode(ctx, req.res.NodeID, in)
}

func ensureEdgeLabel(m *metav1.ObjectMeta) bool {
	if _, ok := m.Labels[EdgeRoleLabel]; ok {
		return false
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[EdgeRoleLabel] = ""
	return true
}

// reconcileNode merges a re-registration's labels and addresses into the existing Node.
func (r *run) reconcileNode(ctx context.Context, node string, in *corev1.Node) (*corev1.Node, error) {
	nodes := r.opts.Kube.CoreV1().Nodes()
	var out *corev1.Node
	err := retryOnConflict(func() error {
		live, err := nodes.Get(ctx, in.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n := live.DeepCopy()
		changed := ensureEdgeLabel(&n.ObjectMeta)
		for k, v := range in.Labels {
			if cur, ok := n.Labels[k]; !ok || cur != v {
				n.Labels[k] = v
				changed = true
			}
		}
		if err := r.authz.NodeLabels(node, live.Labels, n.Labels); err != nil {
			return err
		}
		if changed {
			if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		if len(in.Status.Addresses) > 0 && !equalAddresses(n.Status.Addresses, in.Status.Addresses) {
			n = n.DeepCopy()
			n.Status.Addresses = in.Status.Addresses
			if n, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		out = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("updating existing node %s: %w", in.Name, err)
	}
	klog.InfoS("Edge node re-registered", "node", in.Name)
	return out, nil
}

func equalAddresses(a, b []corev1.NodeAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// updateNodeStatus applies a [v1.7] NodeStatusRequest.
func (r *run) updateNodeStatus(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.authz.OwnNode(req.res.NodeID, req.res.Name); err != nil {
		return nil, err
	}
	var sr NodeStatusRequest
	if err := req.decode(&sr); err != nil {
		return nil, err
	}
	nodes := r.opts.Kube.CoreV1().Nodes()
	name := req.res.Name
	now := r.now()
	var out *corev1.Node
	err := retryOnConflict(func() error {
		live, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n := live.DeepCopy()
		status := *sr.Status.DeepCopy()
		status.Conditions = mergeNodeConditions(live.Status.Conditions, status.Conditions, now, r.freq)
		if status.VolumesAttached == nil {
			// Owned by the attach/detach controller, which the edge knows nothing about.
			status.VolumesAttached = live.Status.VolumesAttached
		}
		n.Status = status
		out, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("updating status of node %s: %w", name, err)
	}
	if gpus, ok := sr.ExtendResources[gpuResource]; ok {
		if out, err = r.annotateGPUs(ctx, out, gpus); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *run) annotateGPUs(ctx context.Context, n *corev1.Node, gpus []ExtendResource) (*corev1.Node, error) {
	value, err := json.Marshal(gpus)
	if err != nil {
		return nil, fmt.Errorf("encoding GPU status of node %s: %w", n.Name, err)
	}
	if n.Annotations[gpuStatusAnnotation] == string(value) {
		return n, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{gpuStatusAnnotation: string(value)}}})
	if err != nil {
		return nil, fmt.Errorf("encoding GPU annotation patch for node %s: %w", n.Name, err)
	}
	out, err := r.opts.Kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("annotating GPU status of node %s: %w", n.Name, err)
	}
	return out, nil
}

func (r *run) queryNode(ctx context.Context, req *request) (runtime.Object, error) {
	name, err := req.name("")
	if err != nil {
		return nil, err
	}
	return r.liveNode(ctx, name)
}

// liveNode reads a Node from the cache, or from the API server when the cache has not seen it yet.
func (r *run) liveNode(ctx context.Context, name string) (*corev1.Node, error) {
	if n, err := r.nodes.Get(name); err == nil {
		return n, nil
	}
	n, err := r.opts.Kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting node %s: %w", name, err)
	}
	return n, nil
}

// updateNode merges the labels and annotations the edge sends; the rest of a Node is the cloud's.
func (r *run) updateNode(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.authz.OwnNode(req.res.NodeID, req.res.Name); err != nil {
		return nil, err
	}
	var n corev1.Node
	if err := req.decode(&n); err != nil {
		return nil, err
	}
	if len(n.Labels) > 0 {
		live, err := r.liveNode(ctx, req.res.Name)
		if err != nil {
			return nil, err
		}
		if err := r.authz.NodeLabels(req.res.NodeID, live.Labels, mergedLabels(live.Labels, n.Labels)); err != nil {
			return nil, err
		}
	}
	md := map[string]any{}
	if len(n.Labels) > 0 {
		md["labels"] = n.Labels
	}
	if len(n.Annotations) > 0 {
		md["annotations"] = n.Annotations
	}
	if len(md) == 0 {
		return nil, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": md})
	if err != nil {
		return nil, fmt.Errorf("encoding metadata patch for node %s: %w", req.res.Name, err)
	}
	out, err := r.opts.Kube.CoreV1().Nodes().Patch(ctx, req.res.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("patching metadata of node %s: %w", req.res.Name, err)
	}
	return out, nil
}

func (r *run) patchNodeStatus(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.authz.OwnNode(req.res.NodeID, req.res.Name); err != nil {
		return nil, err
	}
	name := req.res.Name
	live, err := r.liveNode(ctx, name)
	if err != nil {
		return nil, err
	}
	patch, err := req.patch()
	if err != nil {
		return nil, err
	}
	if patch, err = r.nodeStatusPatch(req.res.NodeID, live, patch); err != nil {
		return nil, err
	}
	patch, err = adjustConditionPatch(patch, nodeConditionStates(live.Status.Conditions), r.now(), r.freq, true)
	if err != nil {
		return nil, fmt.Errorf("%w: status patch of node %s: %w", errBadInput, name, err)
	}
	out, err := r.opts.Kube.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("patching status of node %s: %w", name, err)
	}
	return out, nil
}

// mergedLabels is old with the (non-nil) changes of a merge patch applied.
func mergedLabels(old, changes map[string]string) map[string]string {
	out := make(map[string]string, len(old)+len(changes))
	maps.Copy(out, old)
	maps.Copy(out, changes)
	return out
}

// nodeStatusPatch keeps what a node may change through its status: the status, and its labels and annotations
// (the kubelet patches those through status too) with the label rules applied. Anything else, spec.taints
// included, is dropped rather than refused, as the API server's status strategy drops it.
func (r *run) nodeStatusPatch(node string, live *corev1.Node, patch []byte) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(patch, &doc); err != nil {
		return nil, fmt.Errorf("%w: status patch of node %s is not a JSON object: %w", errBadInput, node, err)
	}
	out := map[string]json.RawMessage{}
	if st, ok := doc["status"]; ok {
		out["status"] = st
	}
	if raw, ok := doc["metadata"]; ok {
		var md struct {
			Labels      map[string]*string `json:"labels"`
			Annotations json.RawMessage    `json:"annotations"`
		}
		if err := json.Unmarshal(raw, &md); err != nil {
			return nil, fmt.Errorf("%w: metadata in status patch of node %s: %w", errBadInput, node, err)
		}
		keep := map[string]any{}
		if len(md.Labels) > 0 {
			next := maps.Clone(live.Labels)
			if next == nil {
				next = map[string]string{}
			}
			for k, v := range md.Labels {
				if v == nil {
					delete(next, k)
				} else {
					next[k] = *v
				}
			}
			if err := r.authz.NodeLabels(node, live.Labels, next); err != nil {
				return nil, err
			}
			keep["labels"] = md.Labels
		}
		if len(md.Annotations) > 0 {
			keep["annotations"] = md.Annotations
		}
		if len(keep) > 0 {
			b, err := json.Marshal(keep)
			if err != nil {
				return nil, fmt.Errorf("encoding metadata of node %s status patch: %w", node, err)
			}
			out["metadata"] = b
		}
	}
	if _, hasMD := doc["metadata"]; !hasMD && len(out) == len(doc) {
		return patch, nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding status patch of node %s: %w", node, err)
	}
	return b, nil
}

// patch returns the content as patch bytes: a JSON string holding the patch (kubelet bridge) or the patch itself.
func (q *request) patch() ([]byte, error) {
	var data []byte
	var err error
	if q.msg.Content != nil {
		data, err = q.msg.GetContentData()
	}
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: %s %s has no patch: %v", errBadInput, q.msg.Router.Operation, q.msg.Router.Resource, err)
	}
	return data, nil
}

// ---- pods ----

// livePod reads a Pod from the cache, or from the API server when the cache has not seen it yet.
func (r *run) livePod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if p, err := r.podLister.Pods(ns).Get(name); err == nil {
		return p, nil
	}
	p, err := r.opts.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", ns, name, err)
	}
	return p, nil
}

func (r *run) patchPodStatus(ctx context.Context, req *request) (runtime.Object, error) {
	ns, name, err := req.key("", "")
	if err != nil {
		return nil, err
	}
	live, err := r.livePod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if err := r.authz.PodBound(req.res.NodeID, live); err != nil {
		return nil, err
	}
	patch, err := req.patch()
	if err != nil {
		return nil, err
	}
	if patch, err = podStatusPatch(live, patch); err != nil {
		return nil, err
	}
	patch, err = adjustConditionPatch(patch, podConditionStates(live.Status.Conditions), r.now(), 0, false)
	if err != nil {
		return nil, fmt.Errorf("%w: status patch of pod %s/%s: %w", errBadInput, ns, name, err)
	}
	out, err := r.opts.Kube.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("patching status of pod %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// podStatusPatch keeps only the status of a pod status patch and makes the live pod's UID its precondition, so a
// node can neither relabel its pods through their status (NodeRestriction forbids it) nor write the status of a
// namesake that replaced the pod it ran.
func podStatusPatch(live *corev1.Pod, patch []byte) ([]byte, error) {
	var doc struct {
		Metadata struct {
			UID types.UID `json:"uid"`
		} `json:"metadata"`
		Status json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(patch, &doc); err != nil {
		return nil, fmt.Errorf("%w: status patch of pod %s/%s is not a JSON object: %w", errBadInput, live.Namespace, live.Name, err)
	}
	if doc.Metadata.UID != "" && doc.Metadata.UID != live.UID {
		return nil, apierrors.NewConflict(corev1.Resource("pods"), live.Name,
			fmt.Errorf("status is for pod uid %s, the pod now has uid %s", doc.Metadata.UID, live.UID))
	}
	uid, err := json.Marshal(live.UID)
	if err != nil {
		return nil, fmt.Errorf("encoding status patch of pod %s/%s: %w", live.Namespace, live.Name, err)
	}
	// Built by hand: the status was just validated by Unmarshal, and this runs for every pod status update.
	out := append(append([]byte(`{"metadata":{"uid":`), uid...), '}')
	if len(doc.Status) > 0 {
		out = append(append(append(out, `,"status":`...), doc.Status...), '}')
		return out, nil
	}
	return append(out, '}'), nil
}

// updatePodStatus applies [v1.7] PodStatusRequests: one when the resource names a pod, a list otherwise.
func (r *run) updatePodStatus(ctx context.Context, req *request) (runtime.Object, error) {
	ns, err := req.namespace("")
	if err != nil {
		return nil, err
	}
	var reqs []PodStatusRequest
	if req.res.Name != "" {
		var one PodStatusRequest
		if err := req.decode(&one); err != nil {
			return nil, err
		}
		one.Name = req.res.Name
		reqs = append(reqs, one)
	} else if err := req.decode(&reqs); err != nil {
		return nil, err
	}
	var errs []error
	for i := range reqs {
		errs = append(errs, r.applyPodStatus(ctx, req, ns, &reqs[i]))
	}
	return nil, errors.Join(errs...)
}

func (r *run) applyPodStatus(ctx context.Context, req *request, ns string, sr *PodStatusRequest) error {
	if sr.Name == "" {
		return fmt.Errorf("%w: pod status without a pod name in %s", errBadInput, req.msg.Router.Resource)
	}
	pods := r.opts.Kube.CoreV1().Pods(ns)
	now := r.now()
	var out *corev1.Pod
	gone := false
	err := retryOnConflict(func() error {
		live, err := pods.Get(ctx, sr.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			gone = true
			return nil
		case err != nil:
			return err
		case (sr.UID != "" && live.UID != sr.UID) || live.Spec.NodeName != req.res.NodeID:
			gone = true
			return nil
		}
		p := live.DeepCopy()
		p.Status = *sr.Status.DeepCopy()
		normalizePodStatus(&live.Status, &p.Status, now)
		out, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("updating status of pod %s/%s: %w", ns, sr.Name, err)
	}
	if gone {
		// The edge runs a pod the cloud no longer has there: tell it to drop it.
		klog.V(2).InfoS("Status for a pod that is gone, deleting it on the edge", "node", req.res.NodeID, "pod", klog.KRef(ns, sr.Name), "uid", sr.UID)
		stub := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sr.Name, UID: sr.UID}}
		r.down.sendTo(ctx, req.res.NodeID, ns, resource.TypePod, sr.Name, model.DeleteOperation, stub)
		return nil
	}
	if out.DeletionTimestamp != nil && podFinished(&out.Status) {
		// Nothing runs any more: finish the graceful deletion the edge cannot finish for a [v1.7] pod.
		err := pods.Delete(ctx, out.Name, *deleteNowIfUID(out.UID))
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting finished pod %s/%s: %w", ns, out.Name, err)
		}
	}
	return nil
}

func deleteNowIfUID(uid types.UID) *metav1.DeleteOptions {
	opts := metav1.NewDeleteOptions(0)
	opts.Preconditions = metav1.NewUIDPreconditions(string(uid))
	return opts
}

// deletePod deletes a pod for its node. The content is a UID ([v1.7]) or DeleteOptions (kubelet bridge).
func (r *run) deletePod(ctx context.Context, req *request) (runtime.Object, error) {
	ns, name, err := req.key("", "")
	if err != nil {
		return nil, err
	}
	data, err := req.msg.GetContentData()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errBadInput, req.msg.Router.Resource, err)
	}
	data = bytes.TrimSpace(data)
	var opts *metav1.DeleteOptions
	switch {
	case len(data) > 0 && data[0] == '{':
		opts = &metav1.DeleteOptions{}
		if err := json.Unmarshal(data, opts); err != nil {
			return nil, fmt.Errorf("%w: delete options for %s: %w", errBadInput, req.msg.Router.Resource, err)
		}
	case len(data) > 0:
		opts = deleteNowIfUID(types.UID(data))
	default:
		return nil, fmt.Errorf("%w: delete of %s carries neither a UID nor delete options", errBadInput, req.msg.Router.Resource)
	}
	live, err := r.livePod(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, nil // already gone: what the edge wanted
	}
	if err != nil {
		return nil, err
	}
	if err := r.authz.PodBound(req.res.NodeID, live); err != nil {
		return nil, err
	}
	// Delete exactly the pod checked above, not a namesake created since on another node; a different UID from
	// the edge means the pod it meant is gone already.
	if opts.Preconditions != nil && opts.Preconditions.UID != nil && *opts.Preconditions.UID != live.UID {
		return nil, nil
	}
	uid := live.UID
	opts.Preconditions = &metav1.Preconditions{UID: &uid}
	opts.DryRun = nil
	if err := r.opts.Kube.CoreV1().Pods(ns).Delete(ctx, name, *opts); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deleting pod %s/%s: %w", ns, name, err)
	}
	return nil, nil
}

// createPod creates a mirror pod for a static pod of the node.
func (r *run) createPod(ctx context.Context, req *request) (runtime.Object, error) {
	var p corev1.Pod
	if err := req.decode(&p); err != nil {
		return nil, err
	}
	ns, name, err := req.key(p.Namespace, p.Name)
	if err != nil {
		return nil, err
	}
	p.Namespace, p.Name = ns, name
	if err := r.authz.MirrorPod(req.res.NodeID, &p); err != nil {
		return nil, err
	}
	clearServerFields(&p.ObjectMeta)
	out, err := r.opts.Kube.CoreV1().Pods(ns).Create(ctx, &p, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// ---- leases, configmaps, secrets, tokens, events ----

func (r *run) leaseRequest(req *request) error {
	if req.res.Namespace != corev1.NamespaceNodeLease {
		return fmt.Errorf("%w: node leases live in %s, not in %s", errBadInput, corev1.NamespaceNodeLease, req.msg.Router.Resource)
	}
	return r.authz.OwnNode(req.res.NodeID, req.res.Name)
}

func (r *run) writeLease(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.leaseRequest(req); err != nil {
		return nil, err
	}
	var l coordv1.Lease
	if err := req.decode(&l); err != nil {
		return nil, err
	}
	if _, _, err := req.key(l.Namespace, l.Name); err != nil {
		return nil, err
	}
	l.Namespace, l.Name = req.res.Namespace, req.res.Name
	leases := r.opts.Kube.CoordinationV1().Leases(l.Namespace)
	var out *coordv1.Lease
	var err error
	if req.msg.Router.Operation == model.InsertOperation {
		clearServerFields(&l.ObjectMeta)
		out, err = leases.Create(ctx, &l, metav1.CreateOptions{})
	} else {
		out, err = leases.Update(ctx, &l, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("writing lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	return out, nil
}

func (r *run) queryLease(ctx context.Context, req *request) (runtime.Object, error) {
	if err := r.leaseRequest(req); err != nil {
		return nil, err
	}
	l, err := r.opts.Kube.CoordinationV1().Leases(req.res.Namespace).Get(ctx, req.res.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting lease %s/%s: %w", req.res.Namespace, req.res.Name, err)
	}
	return l, nil
}

func (r *run) queryConfigMap(ctx context.Context, req *request) (runtime.Object, error) {
	ns, name, err := req.key("", "")
	if err != nil {
		return nil, err
	}
	if err := r.authz.MayRead(req.res.NodeID, nodeauthz.KindConfigMap, ns, name); err != nil {
		return nil, err
	}
	if cm, err := r.configMaps.ConfigMaps(ns).Get(name); err == nil {
		return cm, nil
	}
	// The cache may not have seen a ConfigMap created a moment ago.
	cm, err := r.opts.Kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting configmap %s/%s: %w", ns, name, err)
	}
	return cm, nil
}

func (r *run) querySecret(ctx context.Context, req *request) (runtime.Object, error) {
	ns, name, err := req.key("", "")
	if err != nil {
		return nil, err
	}
	if err := r.authz.MayRead(req.res.NodeID, nodeauthz.KindSecret, ns, name); err != nil {
		return nil, err
	}
	if s, err := r.secrets.Secrets(ns).Get(name); err == nil {
		return s, nil
	}
	s, err := r.opts.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting secret %s/%s: %w", ns, name, err)
	}
	return s, nil
}

// queryPVC answers a claim one of the node's pods uses.
func (r *run) queryPVC(ctx context.Context, req *request) (runtime.Object, error) {
	ns, name, err := req.key("", "")
	if err != nil {
		return nil, err
	}
	if err := r.authz.MayRead(req.res.NodeID, nodeauthz.KindPVC, ns, name); err != nil {
		return nil, err
	}
	pvc, err := r.opts.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting persistentvolumeclaim %s/%s: %w", ns, name, err)
	}
	return pvc, nil
}

// queryPV answers a volume bound to a claim one of the node's pods uses.
func (r *run) queryPV(ctx context.Context, req *request) (runtime.Object, error) {
	name, err := req.name("")
	if err != nil {
		return nil, err
	}
	claim := func(ns, name string) (*corev1.PersistentVolumeClaim, error) {
		return r.opts.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err := r.authz.MayReadPV(req.res.NodeID, name, claim); err != nil {
		return nil, err
	}
	pv, err := r.opts.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting persistentvolume %s: %w", name, err)
	}
	return pv, nil
}

// createToken issues a service account token; the resource names the service account.
func (r *run) createToken(ctx context.Context, req *request) (runtime.Object, error) {
	var tr authv1.TokenRequest
	if err := req.decode(&tr); err != nil {
		return nil, err
	}
	ns, name, err := req.key(tr.Namespace, "")
	if err != nil {
		return nil, err
	}
	var pod *corev1.Pod
	if ref := tr.Spec.BoundObjectRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
		p, err := r.livePod(ctx, ns, ref.Name)
		switch {
		case err == nil:
			pod = p
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	if err := r.authz.TokenRequest(req.res.NodeID, ns, name, &tr, pod); err != nil {
		return nil, err
	}
	tr.Namespace = ns
	out, err := r.opts.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating token for service account %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// writeEvent records kubelet events; they are best effort, like kubelet's own event sink.
func (r *run) writeEvent(ctx context.Context, req *request) (runtime.Object, error) {
	var ev *corev1.Event
	var patch []byte
	if req.msg.Router.Operation == model.PatchOperation {
		var ep EventPatch
		if err := req.decode(&ep); err != nil {
			return nil, err
		}
		data, err := patchData(ep.PatchData)
		if err != nil {
			return nil, fmt.Errorf("%w: event patch %s: %w", errBadInput, req.msg.Router.Resource, err)
		}
		ev, patch = &ep.Event, data
	} else {
		ev = &corev1.Event{}
		if err := req.decode(ev); err != nil {
			return nil, err
		}
	}
	ns, name, err := req.key(ev.Namespace, ev.Name)
	if err != nil {
		return nil, err
	}
	ev.Namespace, ev.Name = ns, name
	events := r.opts.Kube.CoreV1().Events(ns)
	node := req.res.NodeID
	if req.msg.Router.Operation != model.PatchOperation {
		if err := r.authorizeEvent(ctx, node, ev); err != nil {
			return nil, err
		}
	}
	if req.msg.Router.Operation != model.InsertOperation {
		// The event being changed must be the node's too, and a patch may not move it onto another object.
		live, err := events.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("getting event %s/%s: %w", ns, name, err)
		}
		if err := r.authorizeEvent(ctx, node, live); err != nil {
			return nil, err
		}
		if patch != nil && patchTouches(patch, "involvedObject", "metadata") {
			return nil, fmt.Errorf("%w: event patch %s may not change involvedObject or metadata", errBadInput, req.msg.Router.Resource)
		}
	}
	switch req.msg.Router.Operation {
	case model.InsertOperation:
		clearServerFields(&ev.ObjectMeta)
		_, err = events.Create(ctx, ev, metav1.CreateOptions{})
	case model.UpdateOperation:
		_, err = events.Update(ctx, ev, metav1.UpdateOptions{})
	default:
		_, err = events.Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("%s event %s/%s: %w", req.msg.Router.Operation, ns, name, err)
	}
	return nil, nil
}

// authorizeEvent puts ev to the event rule, with the live pod it is about.
func (r *run) authorizeEvent(ctx context.Context, node string, ev *corev1.Event) error {
	var pod *corev1.Pod
	if obj := ev.InvolvedObject; obj.Kind == "Pod" && obj.Namespace != "" && obj.Name != "" {
		p, err := r.livePod(ctx, obj.Namespace, obj.Name)
		switch {
		case err == nil:
			pod = p
		case !apierrors.IsNotFound(err):
			return err
		}
	}
	return r.authz.Event(node, ev, pod)
}

// patchTouches reports whether a JSON merge patch sets any of the top-level keys (an unreadable patch counts).
func patchTouches(patch []byte, keys ...string) bool {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(patch, &doc); err != nil {
		return true
	}
	for _, k := range keys {
		if _, ok := doc[k]; ok {
			return true
		}
	}
	return false
}

// patchData reads patchData: a JSON string holding the patch, base64 of it (Go []byte), or the patch itself.
func patchData(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, errors.New("no patchData")
	}
	if raw[0] != '"' {
		return raw, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("decoding patchData: %w", err)
	}
	if json.Valid([]byte(s)) {
		return []byte(s), nil
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil || !json.Valid(data) {
		return nil, errors.New("patchData is neither JSON nor base64 of JSON")
	}
	return data, nil
}
