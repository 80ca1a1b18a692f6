package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// ackContent is the content of an ACK and of a plain success answer.
const ackContent = "OK"

// sourcePolicyController is KubeEdge's policy controller; Tether has none,
// but a KubeEdge cloudcore may send its objects.
const sourcePolicyController = "policycontroller"

// remoteQueryTypes are fetched from the cloud while connected, because the
// API server's copy may be newer than ours (spec §11.2).
var remoteQueryTypes = map[string]bool{
	resource.TypeConfigMap:                 true,
	resource.TypeSecret:                    true,
	resource.TypePersistentVolume:          true,
	resource.TypePersistentVolumeClaim:     true,
	resource.TypeVolumeAttachment:          true,
	resource.TypeServiceAccountToken:       true,
	resource.TypeLease:                     true,
	resource.TypeCertificateSigningRequest: true,
	resource.TypeK8sCA:                     true,
}

// isLocalSource reports whether src is an edgecore module, which gets
// answers on the bus; anything else came through EdgeHub from the cloud.
func isLocalSource(src string) bool {
	switch src {
	case modules.Edged, modules.MetaManager, modules.DeviceTwin, modules.EventBus, modules.ServiceBus,
		modules.EdgeHub, model.SourceEdgeHub, "metaserver":
		return true
	}
	return false
}

func (m *MetaManager) processInsert(ctx context.Context, msg model.Message) {
	e, ok := m.parse(ctx, msg)
	if !ok {
		return
	}
	switch {
	case e.Type == resource.TypeEvent:
		m.forwardEvent(ctx, msg)
	case msg.Router.Source == modules.Edged:
		m.remote(ctx, msg, e)
	default:
		m.storeFromCloud(ctx, msg, e, true)
	}
}

func (m *MetaManager) processUpdate(ctx context.Context, msg model.Message) {
	e, ok := m.parse(ctx, msg)
	if !ok {
		return
	}
	if e.Type == resource.TypeEvent {
		m.forwardEvent(ctx, msg)
		return
	}
	switch src := msg.Router.Source; src {
	case modules.Edged:
		if e.Type == resource.TypeLease {
			m.remote(ctx, msg, e)
			return
		}
		if _, err := m.persist(ctx, msg, e); err != nil {
			m.feedbackError(ctx, msg, err)
			return
		}
		m.toCloud(ctx, unsynced(msg))
		m.answer(ctx, msg, *model.NewRespByMessage(&msg, ackContent))
	case modules.EdgeController, modules.DynamicController:
		// Edged learns about its own node through kubelet's registration
		// and status patches, not from cloud node updates.
		m.storeFromCloud(ctx, msg, e, e.Type != resource.TypeNode)
	case modules.DeviceController, sourcePolicyController:
		m.storeFromCloud(ctx, msg, e, true)
	case modules.MetaManager:
		if _, err := m.persist(ctx, msg, e); err != nil {
			m.feedbackError(ctx, msg, err)
			return
		}
		m.toTwin(ctx, msg)
		if msg.IsSync() {
			m.answer(ctx, msg, *model.NewRespByMessage(&msg, ackContent))
		}
	default:
		m.feedbackError(ctx, msg, fmt.Errorf("update of %s from unsupported source %q", msg.Router.Resource, src))
	}
}

func (m *MetaManager) processPatch(ctx context.Context, msg model.Message) {
	e, ok := m.parse(ctx, msg)
	if !ok {
		return
	}
	if e.Type == resource.TypeEvent {
		m.forwardEvent(ctx, msg)
		return
	}
	if _, err := m.persist(ctx, msg, e); err != nil {
		m.feedbackError(ctx, msg, err)
		return
	}
	m.remote(ctx, msg, e)
}

func (m *MetaManager) processDelete(ctx context.Context, msg model.Message) {
	e, ok := m.parse(ctx, msg)
	if !ok {
		return
	}
	key := e.String()
	if msg.Router.Source == modules.Edged {
		if e.Type == resource.TypePod {
			// A pod deletion request for the API server; the row goes when
			// the cloud's delete comes back down.
			m.remote(ctx, msg, e)
			return
		}
		if _, err := m.store.Delete(ctx, key); err != nil {
			m.feedbackError(ctx, msg, err)
			return
		}
		m.answer(ctx, msg, *model.NewRespByMessage(&msg, ackContent))
		return
	}

	if e.Type == resource.TypePod {
		uid, err := podUID(msg)
		if err != nil {
			m.feedbackError(ctx, msg, fmt.Errorf("delete %s: %w", key, err))
			return
		}
		patchKey := resource.Edge{Namespace: e.Namespace, Type: resource.TypePodPatch, Name: e.Name}.String()
		deleted, err := m.store.DeleteIfUID(ctx, key, uid, patchKey)
		if err != nil {
			m.feedbackError(ctx, msg, err)
			return
		}
		if !deleted {
			klog.V(2).InfoS("Kept pod row: it is absent or another incarnation", "key", key, "uid", uid)
		}
	} else if _, err := m.store.Delete(ctx, key); err != nil {
		m.feedbackError(ctx, msg, err)
		return
	}
	m.ack(ctx, msg)
	// Edged gets the delete even when the row belonged to a newer pod: it
	// removes pods by UID, so the old incarnation still has to go.
	m.route(ctx, msg)
}

func (m *MetaManager) processQuery(ctx context.Context, msg model.Message) {
	e, ok := m.parse(ctx, msg)
	if !ok {
		return
	}
	if remoteQueryTypes[e.Type] && m.connected.Load() {
		m.remote(ctx, msg, e)
		return
	}
	objs, err := m.lookup(ctx, e)
	if err != nil {
		m.feedbackError(ctx, msg, err)
		return
	}
	m.answerFromDB(ctx, msg, objs)
}

// processResponse handles a response that reached the mailbox instead of a
// waiting caller, typically a cloud reply that arrived after its request
// timed out. The object is still worth keeping.
func (m *MetaManager) processResponse(ctx context.Context, msg model.Message) {
	e, err := resource.ParseEdge(msg.Router.Resource, msg.Router.Operation)
	if err != nil {
		klog.ErrorS(err, "Dropping response with a malformed resource", "message", msg.String())
		return
	}
	fromCloud := msg.Router.Source == modules.EdgeController
	if row, ok := replyRow(e, msg); ok {
		if _, err := m.store.Upsert(ctx, row); err != nil {
			klog.ErrorS(err, "Cannot store response", "message", msg.String())
		} else if fromCloud {
			// The cloud queues object responses for an ACK like any
			// downstream object and resends them until it gets one.
			m.ack(ctx, msg)
		}
	}
	if fromCloud {
		m.toModule(ctx, modules.Edged, msg)
		return
	}
	m.toCloud(ctx, unsynced(msg))
}

// processVolume relays a CSI call from the cloud to edged and edged's
// answer back, off the main loop because edged may take a while.
func (m *MetaManager) processVolume(ctx context.Context, msg model.Message) {
	m.goRemote(ctx, func() {
		resp, err := m.bus.SendSync(ctx, modules.Edged, msg, m.remoteTimeout)
		if err != nil {
			if ctx.Err() == nil {
				m.feedbackError(ctx, msg, fmt.Errorf("volume operation %s on %s: %w", msg.Router.Operation, msg.Router.Resource, err))
			}
			return
		}
		m.toCloud(ctx, resp)
	})
}

// storeFromCloud persists a cloud write, ACKs it, and hands it on. The ACK
// goes first because the cloud sends the next object for this node only
// after it; the row is already committed, so nothing is lost if edgecore
// dies before edged sees the message.
func (m *MetaManager) storeFromCloud(ctx context.Context, msg model.Message, e resource.Edge, notify bool) {
	res, err := m.persist(ctx, msg, e)
	if err != nil {
		m.feedbackError(ctx, msg, err)
		return
	}
	m.ack(ctx, msg)
	if res == store.Stale {
		// Edged already has the newer version; an older one would undo it.
		klog.V(2).InfoS("Ignored stale object", "message", msg.String(), "resourceVersion", msg.Header.ResourceVersion)
		return
	}
	if notify {
		m.route(ctx, msg)
	}
}

// persist upserts the message content under its resource.
func (m *MetaManager) persist(ctx context.Context, msg model.Message, e resource.Edge) (store.Result, error) {
	data, err := msg.GetContentData()
	if err != nil {
		return 0, fmt.Errorf("store %s: %w", e, err)
	}
	if !json.Valid(data) {
		return 0, fmt.Errorf("store %s: content is not JSON", e)
	}
	res, err := m.store.Upsert(ctx, store.Meta{Key: e.String(), Type: e.Type, Value: string(data)})
	if err != nil {
		return 0, err
	}
	klog.V(4).InfoS("Stored object", "key", e.String(), "result", res)
	return res, nil
}

// lookup answers a query from the database: one object by key, or every
// object of the type for {namespace}/{type}. The namespace of a list query
// does not filter: edged asks {registerNodeNamespace}/pod for all of its
// pods, as in KubeEdge.
func (m *MetaManager) lookup(ctx context.Context, e resource.Edge) ([]string, error) {
	out := []string{}
	if e.Name != "" || e.Type == resource.TypeK8sCA {
		row, err := m.store.Get(ctx, e.String())
		switch {
		case errors.Is(err, store.ErrNotFound):
			return out, nil
		case err != nil:
			return nil, err
		}
		return append(out, row.Value), nil
	}
	rows, err := m.store.ListByType(ctx, e.Type)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		out = append(out, r.Value)
	}
	return out, nil
}

// answerFromDB sends objs as a JSON array of JSON strings, the shape
// KubeEdge's edged expects from the database.
func (m *MetaManager) answerFromDB(ctx context.Context, req model.Message, objs []string) {
	resp := model.NewRespByMessage(&req, objs)
	resp.Router.Source = modules.MetaManager
	m.answer(ctx, req, *resp)
}

// parse parses the resource, answering an error if it is malformed.
func (m *MetaManager) parse(ctx context.Context, msg model.Message) (resource.Edge, bool) {
	e, err := resource.ParseEdge(msg.Router.Resource, msg.Router.Operation)
	if err != nil {
		m.feedbackError(ctx, msg, err)
		return resource.Edge{}, false
	}
	return e, true
}

func (m *MetaManager) forwardEvent(ctx context.Context, msg model.Message) {
	m.toCloud(ctx, unsynced(msg))
	if msg.IsSync() {
		m.answer(ctx, msg, *model.NewRespByMessage(&msg, ackContent))
	}
}

// route hands a cloud write to the module that acts on it.
func (m *MetaManager) route(ctx context.Context, msg model.Message) {
	switch msg.Router.Source {
	case modules.DeviceController:
		m.toTwin(ctx, msg)
	case sourcePolicyController:
	default:
		m.toModule(ctx, modules.Edged, unsynced(msg))
	}
}

// toTwin re-routes msg as KubeEdge does, so DeviceTwin sees it as coming
// from the meta group.
func (m *MetaManager) toTwin(ctx context.Context, msg model.Message) {
	c := unsynced(msg)
	c.Router.Source = modules.MetaGroup
	c.Router.Group = modules.TwinGroup
	m.toModule(ctx, modules.DeviceTwin, c)
}

// ack tells the cloud msg is persisted: "OK" with parent = msg's id.
func (m *MetaManager) ack(ctx context.Context, msg model.Message) {
	m.toCloud(ctx, *model.NewRespByMessage(&msg, ackContent))
}

func (m *MetaManager) toCloud(ctx context.Context, msg model.Message) {
	var err error
	if m.sendGroup != "" {
		err = m.bus.SendToGroup(ctx, m.sendGroup, msg)
	} else {
		err = m.bus.Send(ctx, m.sendModule, msg)
	}
	if err != nil && ctx.Err() == nil {
		klog.ErrorS(err, "Cannot send message to the cloud", "message", msg.String())
	}
}

// toModule sends to a local module; a module this edgecore runs without is
// not an error.
func (m *MetaManager) toModule(ctx context.Context, module string, msg model.Message) {
	err := m.bus.Send(ctx, module, msg)
	switch {
	case err == nil:
	case errors.Is(err, beehive.ErrUnknownModule):
		klog.V(4).InfoS("Module not running; message not delivered", "module", module, "message", msg.String())
	case ctx.Err() == nil:
		klog.ErrorS(err, "Cannot deliver message", "module", module, "message", msg.String())
	}
}

// answer replies to a local requester: through SendResp if it is blocked
// in SendSync, else into its mailbox.
func (m *MetaManager) answer(ctx context.Context, req, resp model.Message) {
	if req.IsSync() {
		if err := m.bus.SendResp(resp); err != nil {
			klog.V(2).InfoS("Requester stopped waiting", "request", req.String(), "err", err)
		}
		return
	}
	target := req.Router.Source
	if target == "" {
		target = modules.Edged
	}
	m.toModule(ctx, target, resp)
}

// feedbackError logs err and sends it as an "error" message to whoever
// sent req: the cloud logs it, a local module gets it as its answer.
func (m *MetaManager) feedbackError(ctx context.Context, req model.Message, err error) {
	if ctx.Err() != nil {
		// Shutting down: the store call was cut short, and nothing is ACKed, so the cloud sends it again.
		klog.V(2).InfoS("Message not processed: shutting down", "message", req.String(), "err", err)
		return
	}
	klog.ErrorS(err, "Cannot process message", "message", req.String())
	m.replyError(ctx, req, err.Error())
}

func (m *MetaManager) replyError(ctx context.Context, req model.Message, text string) {
	resp := model.NewErrorMessage(&req, text)
	resp.Router.Source = modules.MetaManager
	if !req.IsSync() && !isLocalSource(req.Router.Source) {
		m.toCloud(ctx, *resp)
		return
	}
	m.answer(ctx, req, *resp)
}

// podUID is the UID of the pod a delete is for: the content is the Pod, or
// a bare UID string as [v1.7] peers send.
func podUID(msg model.Message) (string, error) {
	data, err := msg.GetContentData()
	if err != nil {
		return "", err
	}
	var pod struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &pod); err == nil {
		if pod.Metadata.UID == "" {
			return "", errors.New("content has no metadata.uid")
		}
		return pod.Metadata.UID, nil
	}
	if s, ok := msg.Content.(string); ok && s != "" && !json.Valid(data) {
		return s, nil
	}
	return "", errors.New("content is neither a pod nor a UID")
}

// contentText is the content as text, with a JSON string unquoted.
func contentText(msg model.Message) string {
	data, err := msg.GetContentData()
	if err != nil {
		return ""
	}
	var s string
	if json.Unmarshal(data, &s) == nil {
		return s
	}
	return string(data)
}

// unsynced is a copy of msg that nobody will treat as a pending SendSync.
func unsynced(msg model.Message) model.Message {
	c := *msg.Clone()
	c.Header.Sync = false
	return c
}
