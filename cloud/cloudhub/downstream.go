package cloudhub

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// Sources and contents §5.3 singles out.
const (
	sourceEdgeManager              = "edgemgr"
	sourceNodeUpgradeJobController = "nodeupgradejobcontroller"
	contentOK                      = "OK"
)

// downstream queues one controller message for its node (§5.3).
func (h *CloudHub) downstream(msg model.Message) {
	nodeID, wire, err := resource.StripNodePrefix(msg.Router.Resource)
	if err != nil {
		h.metrics.dropped.WithLabelValues(reasonNoNode).Inc()
		klog.InfoS("Dropping downstream message without a node in its resource", "msg", msg.String(), "err", err)
		return
	}
	if !isToEdge(&msg) {
		h.metrics.dropped.WithLabelValues(reasonFiltered).Inc()
		klog.V(4).InfoS("Not forwarding edge-manager message", "node", nodeID, "msg", msg.String())
		return
	}
	if cloudResourceType(msg.Router.Resource) == resource.TypeNode && msg.Router.Operation == model.DeleteOperation {
		klog.InfoS("Node deleted, closing its session and dropping its queues", "node", nodeID)
		h.nodeDeleted(nodeID)
		return
	}
	if err := h.authorizeDownstream(nodeID, &msg); err != nil {
		h.metrics.dropped.WithLabelValues(reasonUnauthorized).Inc()
		klog.InfoS("Not delivering object the node may not hold", "node", nodeID, "msg", msg.String(), "err", err)
		return
	}
	out := msg.Clone()
	out.Router.Resource = wire
	// Writes are asynchronous on the wire; correlation is by parent id.
	out.Header.Sync = false
	if out.Header.ID == "" {
		// Without an id the edge's ACK could not name the message.
		out.Header.ID = uuid.NewString()
	}

	// A SendSync request is answered by the edge's response, which is all
	// the caller waits for: ACK bookkeeping would only resend a query.
	if msg.Header.Sync {
		h.trackSync(msg.Header.ID, nodeID)
		h.enqueueNoAck(nodeID, out)
		return
	}
	if !needsAck(&msg) {
		h.enqueueNoAck(nodeID, out)
		return
	}
	qm, err := newQueuedMsg(&msg, out, h.opts.Client != nil)
	if err != nil {
		h.metrics.dropped.WithLabelValues(reasonInvalid).Inc()
		klog.ErrorS(err, "Dropping downstream message", "node", nodeID, "msg", msg.String())
		return
	}
	h.enqueueAck(nodeID, qm)
}

// authorizeDownstream puts an object message to the node authorizer. Deletes
// always pass (dropping an object from a node is always allowed), and so do
// responses: the request they answer was authorized.
func (h *CloudHub) authorizeDownstream(node string, msg *model.Message) error {
	op := msg.Router.Operation
	if h.opts.Authorizer == nil || msg.Router.Group != model.GroupResource ||
		op == model.DeleteOperation || op == model.ResponseOperation || op == model.ResponseErrorOperation {
		return nil
	}
	c, err := resource.ParseCloud(msg.Router.Resource)
	if err != nil {
		return nil // not an object message
	}
	return h.opts.Authorizer.MayHold(node, c.Type, c.Namespace, c.Name)
}

// needsAck classifies a downstream message (cloud-internal resource) as in
// KubeEdge's noAckRequired: false means fire-and-forget.
func needsAck(msg *model.Message) bool {
	res, op := msg.Router.Resource, msg.Router.Operation
	for _, s := range []string{resource.TypePodList, resource.TypeMembership, resource.TypeTwinCloudUpdated,
		resource.TypeServiceAccountToken, resource.TypeK8sCA} {
		if strings.Contains(res, s) {
			return false
		}
	}
	switch op {
	case model.CreateVolumeOperation, model.DeleteVolumeOperation, model.ControllerPublishVolumeOperation,
		model.ControllerUnpublishVolumeOperation, model.ApplicationResponseOperation:
		return false
	}
	if msg.Router.Group == model.GroupUser {
		return false
	}
	switch msg.Router.Source {
	case modules.TaskManager, sourceNodeUpgradeJobController:
		return false
	}
	if op == model.ResponseOperation {
		if s, ok := msg.Content.(string); ok && s == contentOK {
			return false
		}
		if _, ok := msg.Content.(error); ok {
			return false
		}
	}
	if msg.Router.Source == modules.EdgeController {
		switch cloudResourceType(res) {
		case resource.TypeNode:
			return op == model.UpdateOperation
		case resource.TypeLease, resource.TypeNodePatch, resource.TypePodPatch, resource.TypePodStatus,
			resource.TypeCertificateSigningRequest:
			return false
		case resource.TypePod:
			return op != model.ResponseOperation
		}
	}
	return true
}

// isToEdge is KubeEdge's legacy filter for messages the old edge manager
// produced for the cloud itself.
func isToEdge(msg *model.Message) bool {
	if msg.Router.Source != sourceEdgeManager {
		return true
	}
	res := msg.Router.Resource
	if _, wire, err := resource.StripNodePrefix(res); err == nil {
		res = wire
	}
	op := msg.Router.Operation
	switch {
	case op == model.GetOperation && (strings.Contains(res, resource.TypeMembership) ||
		strings.Contains(res, resource.TypeTwin) || strings.Contains(res, "auth_info")):
		return false
	case (op == model.DeltaOperation || op == model.DocumentOperation) && strings.Contains(res, resource.TypeTwin):
		return false
	case op == model.DeleteOperation && strings.Contains(res, resource.TypeNode):
		return false
	}
	return true
}

// cloudResourceType is token 3 of node/{node}/{namespace}/{type}/..., the
// fixed index KubeEdge reads; "" if there is none.
func cloudResourceType(res string) string {
	tok := strings.SplitN(res, resource.Sep, 5)
	if len(tok) < 4 {
		return ""
	}
	return tok[3]
}

// queuedMsg is a message in a node's ACK queue, with what dedup and
// ObjectSync bookkeeping need to know about its object.
type queuedMsg struct {
	msg *model.Message // wire form
	key string         // object UID, or "msg/{id}" for messages that cannot be merged
	uid types.UID
	// namespace is the resource's namespace token; "null" means the sync
	// record is a ClusterObjectSync.
	namespace string
	name      string
	gvk       schema.GroupVersionKind
	rv        uint64
	rvText    string
	del       bool // operation delete
	// terminating: the content has a deletionTimestamp; delivered always,
	// like a delete, but recorded like an update.
	terminating bool
	resp        bool
	// record: the ACK is recorded in a (Cluster)ObjectSync.
	record bool
}

// needsCheck says whether the ObjectSync must be consulted (and created)
// before the first delivery.
func (q *queuedMsg) needsCheck() bool { return q.record && !q.del && !q.terminating && !q.resp }

// supersedes reports whether q replaces cur, a queued or in-flight message
// for the same object: a pending delete wins, otherwise the newer RV.
func (q *queuedMsg) supersedes(cur *queuedMsg) bool {
	switch {
	case cur.del:
		return false
	case q.del:
		return true
	}
	return q.rv > cur.rv
}

// newQueuedMsg builds the ACK-queue entry for msg (cloud form) delivered as
// out (wire form). Object messages of group resource are keyed by UID and
// must carry a numeric resourceversion unless they delete.
func newQueuedMsg(msg, out *model.Message, recording bool) (*queuedMsg, error) {
	q := &queuedMsg{
		msg:    out,
		key:    "msg/" + out.Header.ID,
		del:    msg.Router.Operation == model.DeleteOperation,
		resp:   msg.Router.Operation == model.ResponseOperation,
		rvText: msg.Header.ResourceVersion,
	}
	if msg.Router.Group == model.GroupResource {
		if m, ok := contentMeta(msg); ok {
			q.uid, q.name, q.terminating = m.uid, m.name, m.deleting
		}
	}
	if q.uid == "" || q.resp {
		// Not an object, or an answer to an edge query: delivered once each,
		// never merged. Responses keep their UID so the ACK is recorded.
		return q, q.withRecord(msg, recording)
	}
	q.key = string(q.uid)
	if q.rvText == "" && !q.del && !q.terminating {
		return nil, fmt.Errorf("message %s for object %s: no resourceversion", msg.Header.ID, q.uid)
	}
	return q, q.withRecord(msg, recording)
}

// withRecord parses the RV and decides whether the ACK is recorded.
func (q *queuedMsg) withRecord(msg *model.Message, recording bool) error {
	if q.rvText != "" {
		rv, err := strconv.ParseUint(q.rvText, 10, 64)
		if err != nil {
			if !q.del && !q.terminating && !q.resp && q.uid != "" {
				return fmt.Errorf("message %s: resourceversion %q is not an unsigned integer: %w", msg.Header.ID, q.rvText, err)
			}
			// Deletes and responses do not need their RV; deliver them.
			klog.InfoS("Ignoring non-numeric resourceversion", "msg", msg.String(), "resourceVersion", q.rvText)
			q.rvText = ""
		}
		q.rv = rv
	}
	if !recording || q.uid == "" {
		return nil
	}
	c, err := resource.ParseCloud(msg.Router.Resource)
	if err != nil {
		return nil
	}
	gvk, ok := resource.KindForType(c.Type)
	if !ok {
		return nil
	}
	if q.name == "" {
		q.name = c.Name
	}
	q.namespace, q.gvk = c.Namespace, gvk
	q.record = q.del || q.rvText != ""
	return nil
}

type objectMeta struct {
	uid       types.UID
	name      string
	deleting  bool
	namespace string
}

// contentMeta reads metadata from typed objects as sent on the bus, or from
// JSON content as received from other processes.
func contentMeta(msg *model.Message) (objectMeta, bool) {
	if msg.Content == nil {
		return objectMeta{}, false
	}
	if obj, err := meta.Accessor(msg.Content); err == nil {
		return objectMeta{uid: obj.GetUID(), name: obj.GetName(), namespace: obj.GetNamespace(),
			deleting: obj.GetDeletionTimestamp() != nil}, obj.GetUID() != ""
	}
	var v struct {
		Metadata struct {
			UID               types.UID       `json:"uid"`
			Name              string          `json:"name"`
			Namespace         string          `json:"namespace"`
			DeletionTimestamp json.RawMessage `json:"deletionTimestamp"`
		} `json:"metadata"`
	}
	if err := msg.UnmarshalContent(&v); err != nil {
		return objectMeta{}, false
	}
	m := v.Metadata
	deleting := len(m.DeletionTimestamp) > 0 && string(m.DeletionTimestamp) != "null"
	return objectMeta{uid: m.UID, name: m.Name, namespace: m.Namespace, deleting: deleting}, m.UID != ""
}

// enqueueNoAck appends to the node's fire-and-forget queue, dropping the
// oldest message when a node that does not connect lets it fill up.
func (h *CloudHub) enqueueNoAck(nodeID string, msg *model.Message) {
	n := h.lockNode(nodeID)
	n.noack = append(n.noack, msg)
	dropped := n.trimNoAck(h.opts.MaxNoAckPerNode)
	online := n.sess != nil
	n.mu.Unlock()
	if dropped > 0 {
		h.metrics.dropped.WithLabelValues(reasonOverflow).Add(float64(dropped))
		klog.V(2).InfoS("Node queue full, dropped oldest fire-and-forget messages", "node", nodeID, "dropped", dropped, "limit", h.opts.MaxNoAckPerNode)
	}
	if online {
		h.queue.Add(nodeID)
	}
}

// enqueueAck merges q into the node's ACK queue.
func (h *CloudHub) enqueueAck(nodeID string, q *queuedMsg) {
	n := h.lockNode(nodeID)
	accepted := n.enqueueAck(q)
	online := n.sess != nil
	n.mu.Unlock()
	if !accepted {
		h.metrics.dropped.WithLabelValues(reasonStale).Inc()
		klog.V(2).InfoS("Dropping downstream message: a newer one or a delete is already queued",
			"node", nodeID, "msg", q.msg.String(), "resourceVersion", q.rvText)
		return
	}
	// Offline nodes still need the worker for the ObjectSync check.
	if online || q.needsCheck() {
		h.queue.Add(nodeID)
	}
}
