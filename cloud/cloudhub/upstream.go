package cloudhub

import (
	"context"
	"errors"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// cloudSources are route.source values only cloud modules may use; an edge
// message claiming one would be trusted by the controllers as their own.
var cloudSources = map[string]bool{
	modules.CloudHub:         true,
	modules.CloudStream:      true,
	modules.DeviceController: true,
	modules.EdgeController:   true,
	modules.SyncController:   true,
}

const maxLoggedContent = 256

// upstream handles one message from an edge node (§5.2).
func (h *CloudHub) upstream(ctx context.Context, s *session, msg *model.Message) {
	switch msg.Router.Operation {
	case model.KeepaliveOperation:
		s.extendKeepalive()
	case model.PingOperation, model.ConfigOperation, model.PongOperation:
		// Answered by the link itself, as KubeEdge's viaduct does.
		if err := s.write(model.NewRespByMessage(msg, "ack")); err != nil {
			klog.V(2).InfoS("Cannot answer control message", "node", s.nodeID, "err", err)
			s.close("write failed", websocket.CloseAbnormalClosure)
		}
	case model.ResponseOperation, model.ResponseErrorOperation:
		h.upstreamResponse(s, msg)
	default:
		h.forward(ctx, s, msg)
	}
}

// upstreamResponse treats a response as the ACK of the node's in-flight
// message, or as the answer to a controller's SendSync. Responses are never
// forwarded otherwise: the edge answers most downstream messages with "OK".
func (h *CloudHub) upstreamResponse(s *session, msg *model.Message) {
	parent := msg.Header.ParentID
	if parent == "" {
		klog.V(2).InfoS("Ignoring response without parent id from edge node", "node", s.nodeID, "msg", msg.String())
		return
	}
	if msg.Router.Operation == model.ResponseOperation && s.node.ackReceived(parent) {
		h.metrics.acked.Inc()
		h.queue.Add(s.nodeID)
		return
	}
	// Only the node a caller is waiting on may answer it: KubeEdge hands CSI
	// volume answers to whichever caller has the parent id, which would let
	// one node answer for another.
	if h.takeSync(parent, s.nodeID) {
		if res, err := resource.AddNodePrefix(s.nodeID, msg.Router.Resource); err == nil {
			msg.Router.Resource = res
		}
		if err := h.opts.Bus.SendResp(*msg); err != nil {
			klog.V(2).InfoS("Response from edge node came too late", "node", s.nodeID, "parent", parent, "err", err)
		}
		return
	}
	if msg.Router.Operation == model.ResponseErrorOperation {
		klog.InfoS("Edge node reported an error", "node", s.nodeID, "parent", parent,
			"resource", msg.Router.Resource, "source", msg.Router.Source, "content", contentForLog(msg))
		return
	}
	klog.V(4).InfoS("Ignoring response that matches no pending message", "node", s.nodeID, "parent", parent)
}

// forward prefixes the node and routes the message to its controller.
func (h *CloudHub) forward(ctx context.Context, s *session, msg *model.Message) {
	src := msg.Router.Source
	if cloudSources[src] {
		h.metrics.dropped.WithLabelValues(reasonImpersonation).Inc()
		klog.InfoS("Dropping message from edge node claiming a cloud module as source",
			"node", s.nodeID, "source", src, "msg", msg.String())
		return
	}
	res, err := resource.AddNodePrefix(s.nodeID, msg.Router.Resource)
	if err != nil {
		h.metrics.dropped.WithLabelValues(reasonBadResource).Inc()
		klog.InfoS("Dropping message from edge node with a malformed resource", "node", s.nodeID, "msg", msg.String(), "err", err)
		return
	}
	msg.Router.Resource = res
	var dest string
	switch {
	case src == modules.DeviceTwin:
		dest = modules.DeviceController
		err = h.opts.Bus.SendToGroup(ctx, dest, *msg)
	case msg.Router.Group == model.GroupUser && msg.Router.Operation == model.UploadOperation:
		dest = modules.Router
		err = h.opts.Bus.Send(ctx, dest, *msg)
	default:
		dest = modules.EdgeController
		err = h.opts.Bus.SendToGroup(ctx, dest, *msg)
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
	case errors.Is(err, beehive.ErrUnknownModule), errors.Is(err, beehive.ErrUnknownGroup):
		h.metrics.dropped.WithLabelValues(reasonNoRoute).Inc()
		klog.InfoS("Dropping message from edge node: its destination is not running", "node", s.nodeID, "destination", dest, "msg", msg.String())
	default:
		h.metrics.dropped.WithLabelValues(reasonNoRoute).Inc()
		klog.ErrorS(err, "Cannot forward message from edge node", "node", s.nodeID, "destination", dest, "msg", msg.String())
	}
}

// trackSync remembers that the message id was sent with SendSync, so that
// the node's answer goes back to the waiting caller.
func (h *CloudHub) trackSync(id, nodeID string) {
	now := time.Now()
	h.syncMu.Lock()
	defer h.syncMu.Unlock()
	h.syncWaiting[id] = syncWait{nodeID: nodeID, deadline: now.Add(h.opts.SyncResponseTTL)}
	// Callers that time out never see an answer; sweep their entries at
	// most once per TTL.
	if now.Sub(h.lastSweep) > h.opts.SyncResponseTTL {
		for k, w := range h.syncWaiting {
			if now.After(w.deadline) {
				delete(h.syncWaiting, k)
			}
		}
		h.lastSweep = now
	}
}

// takeSync reports whether nodeID's response to id is awaited, and forgets it.
func (h *CloudHub) takeSync(id, nodeID string) bool {
	h.syncMu.Lock()
	defer h.syncMu.Unlock()
	w, ok := h.syncWaiting[id]
	if !ok || w.nodeID != nodeID {
		return false
	}
	delete(h.syncWaiting, id)
	return time.Now().Before(w.deadline)
}

func contentForLog(msg *model.Message) string {
	data, err := msg.GetContentData()
	if err != nil {
		return err.Error()
	}
	if len(data) > maxLoggedContent {
		return string(data[:maxLoggedContent]) + "..."
	}
	return string(data)
}
