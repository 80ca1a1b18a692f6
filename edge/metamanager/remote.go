package metamanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/resource"
)

// remote sends req to the cloud and answers the requester with the reply.
// Offline it fails at once: kubelet retries on its own schedule, and a 60 s
// wait would only hold up its sync loop.
func (m *MetaManager) remote(ctx context.Context, req model.Message, e resource.Edge) {
	if !m.connected.Load() {
		klog.V(2).InfoS("Cloud not connected; refusing remote request", "message", req.String())
		m.replyError(ctx, req, ErrNotConnected.Error())
		return
	}
	m.goRemote(ctx, func() { m.processRemote(ctx, req, e) })
}

// processRemote is KubeEdge's processRemote: the request goes to EdgeHub
// under a new id (the requester's id may already be waited on), an object
// in the reply is stored, and the reply goes back with the original id as
// parent.
func (m *MetaManager) processRemote(ctx context.Context, req model.Message, e resource.Edge) {
	out := *req.Clone()
	out.Header.ID = uuid.NewString()
	out.Header.ParentID = ""
	resp, err := m.bus.SendSync(ctx, m.sendModule, out, m.remoteTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if req.Router.Operation == model.QueryOperation && m.answerQueryFromDB(ctx, req, e, err) {
			return
		}
		err = fmt.Errorf("remote %s of %s: %w", req.Router.Operation, req.Router.Resource, err)
		klog.ErrorS(err, "Remote request failed", "message", req.String())
		m.replyError(ctx, req, err.Error())
		return
	}
	if row, ok := replyRow(e, resp); ok {
		res, err := m.store.Upsert(ctx, row)
		if err != nil {
			klog.ErrorS(err, "Cannot store reply from the cloud", "message", resp.String())
		} else {
			klog.V(4).InfoS("Stored reply from the cloud", "key", row.Key, "result", res)
			// The cloud queues object replies for an ACK like any downstream
			// object, and resends them until it gets one.
			m.ack(ctx, resp)
		}
	}
	relay := *resp.Clone()
	relay.Header.ParentID = req.Header.ID
	m.answer(ctx, req, relay)
}

// answerQueryFromDB falls back to the database when the link failed under a
// query, as it would have had the disconnect been noticed. It reports false,
// leaving the error to the caller, if there is nothing stored.
func (m *MetaManager) answerQueryFromDB(ctx context.Context, req model.Message, e resource.Edge, cause error) bool {
	objs, err := m.lookup(ctx, e)
	if err != nil || len(objs) == 0 {
		return false
	}
	klog.InfoS("Remote query failed; answering from the local database", "message", req.String(), "err", cause)
	m.answerFromDB(ctx, req, objs)
	return true
}

// replyRow is what a reply to a request on e should leave in the database:
// the Object of an {"Object","Err"} reply without Err, or any other object
// content. "OK", errors and non-object text (error strings) store nothing,
// except the CA certificate, which is PEM text.
func replyRow(e resource.Edge, resp model.Message) (store.Meta, bool) {
	if resp.Router.Operation == model.ResponseErrorOperation {
		return store.Meta{}, false
	}
	data, err := resp.GetContentData()
	if err != nil || len(data) == 0 || string(data) == ackContent {
		return store.Meta{}, false
	}
	if obj, isObjResp := objectResp(data); isObjResp {
		if obj == nil {
			return store.Meta{}, false
		}
		data = obj
	} else if !isJSONObject(data) && e.Type != resource.TypeK8sCA {
		return store.Meta{}, false
	}

	row := store.Meta{Key: e.String(), Type: e.Type, Value: string(data)}
	switch {
	case e.Type == resource.TypeNodePatch:
		// Kubelet reads its Node back by name; the reply to a status patch is
		// the current Node.
		row.Key = resource.Edge{Namespace: e.Namespace, Type: resource.TypeNode, Name: e.Name}.String()
		row.Type = resource.TypeNode
	case e.Name == "" && e.Type != resource.TypeK8sCA:
		// A list reply has no key of its own; a row under {ns}/{type} would
		// show up as a bogus element of every later list of that type.
		return store.Meta{}, false
	}
	return row, true
}

// objectResp recognises KubeEdge's ObjectResp {"Object": ..., "Err": ...}
// and returns Object, or nil if Err reports a failure or Object is absent.
func objectResp(data []byte) (obj []byte, ok bool) {
	if !isJSONObject(data) {
		return nil, false
	}
	var r map[string]json.RawMessage
	if json.Unmarshal(data, &r) != nil {
		return nil, false
	}
	o, hasObj := r["Object"]
	e, hasErr := r["Err"]
	want := 0
	if hasObj {
		want++
	}
	if hasErr {
		want++
	}
	if want == 0 || len(r) != want {
		return nil, false
	}
	if hasErr && failed(e) {
		return nil, true
	}
	if !hasObj || !isJSONObject(o) {
		return nil, true
	}
	return o, true
}

// failed reports whether an ObjectResp Err is a failure. KubeEdge's cloud
// encodes "no error" as null, and sometimes as an empty StatusError
// ({"ErrStatus":{"metadata":{}}}); edged's client reads it the same way,
// so what is stored here is what edged accepted.
func failed(raw json.RawMessage) bool {
	if isNull(raw) {
		return false
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text != ""
	}
	type status struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
		Code    int32  `json:"code"`
	}
	var wrapped struct {
		ErrStatus *status `json:"ErrStatus"`
	}
	st := &status{}
	if json.Unmarshal(raw, &wrapped) == nil && wrapped.ErrStatus != nil {
		st = wrapped.ErrStatus
	} else if json.Unmarshal(raw, st) != nil {
		return true
	}
	return st.Status != "Success" && *st != status{}
}

func isJSONObject(data []byte) bool {
	d := bytes.TrimSpace(data)
	return len(d) > 0 && d[0] == '{' && json.Valid(d)
}

func isNull(raw json.RawMessage) bool {
	d := bytes.TrimSpace(raw)
	return len(d) == 0 || bytes.Equal(d, []byte("null"))
}
