package edged

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/resource"
)

// errUnreachable marks failures that say nothing about the request: MetaManager answered "error" (not
// connected, connection lost, remote timeout) or did not answer at all. Retrying later may succeed.
var errUnreachable = errors.New("cloud unreachable")

// okContent is the success reply of KubeEdge's cloud and MetaManager.
const okContent = "OK"

// rejectedError is the cloud's refusal of a request: the link works, the request does not.
type rejectedError struct {
	reason metav1.StatusReason
	code   int32
	msg    string
}

func (e *rejectedError) Error() string {
	if e.reason != "" {
		return fmt.Sprintf("rejected by the cloud (%s): %s", e.reason, e.msg)
	}
	return "rejected by the cloud: " + e.msg
}

func rejectedWith(err error, reason metav1.StatusReason, code int32, text string) bool {
	var r *rejectedError
	if !errors.As(err, &r) {
		return false
	}
	return r.reason == reason || (code != 0 && r.code == code) || strings.Contains(strings.ToLower(r.msg), text)
}

func isNotFound(err error) bool {
	return rejectedWith(err, metav1.StatusReasonNotFound, 404, "not found")
}

func isAlreadyExists(err error) bool {
	return rejectedWith(err, metav1.StatusReasonAlreadyExists, 0, "already exists")
}

// metaClient sends edged's requests to MetaManager and decodes the many reply shapes of §6.2 and §11.2.
type metaClient struct {
	bus     *beehive.Bus
	timeout time.Duration
}

// request sends op on res and returns the payload of a successful reply: nil for "OK", the Object of an
// ObjectResp, or the content as is.
func (c *metaClient) request(ctx context.Context, res, op string, content any) (json.RawMessage, error) {
	msg := model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, res, op).FillBody(content)
	resp, err := c.bus.SendSync(ctx, modules.MetaManager, *msg, c.timeout)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %w", op, res, errUnreachable, err)
	}
	data, err := decodeReply(resp)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, res, err)
	}
	return data, nil
}

func decodeReply(resp model.Message) (json.RawMessage, error) {
	data, err := resp.GetContentData()
	if err != nil {
		return nil, fmt.Errorf("reply %s: %w", resp.Header.ID, err)
	}
	data = bytes.TrimSpace(data)
	if resp.Router.Operation == model.ResponseErrorOperation {
		return nil, fmt.Errorf("%w: %s", errUnreachable, textOf(data))
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err == nil {
			data = []byte(s)
		}
	}
	switch {
	case len(data) == 0 || string(data) == "null" || string(data) == okContent:
		return nil, nil
	case !json.Valid(data):
		// The cloud answers some requests with a bare error string.
		return nil, &rejectedError{msg: string(data)}
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return data, nil
	}
	if _, ok := fields["ErrStatus"]; ok {
		// A bare apierrors.StatusError: how the cloud fails requests answered "OK" on success.
		if err := statusErr(data); err != nil {
			return nil, err
		}
		return nil, nil
	}
	if isObjectResp(fields) {
		if err := statusErr(fields["Err"]); err != nil {
			return nil, err
		}
		obj := fields["Object"]
		if string(obj) == "null" {
			obj = nil
		}
		return obj, nil
	}
	return data, nil
}

// isObjectResp tells KubeEdge's {"Object":..., "Err":...} from a Kubernetes object, which has neither key.
func isObjectResp(f map[string]json.RawMessage) bool {
	_, obj := f["Object"]
	_, e := f["Err"]
	return obj || e
}

// statusErr decodes ObjectResp.Err: null, an empty apierrors.StatusError ({"ErrStatus":{"metadata":{}}} —
// KubeEdge's "no error"), a StatusError, a bare Status or a string.
func statusErr(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil
		}
		return &rejectedError{msg: s}
	}
	var wrapped struct {
		ErrStatus *metav1.Status `json:"ErrStatus"`
	}
	st := &metav1.Status{}
	if json.Unmarshal(raw, &wrapped) == nil && wrapped.ErrStatus != nil {
		st = wrapped.ErrStatus
	} else if err := json.Unmarshal(raw, st); err != nil {
		return &rejectedError{msg: string(raw)}
	}
	if st.Status == metav1.StatusSuccess || (st.Reason == "" && st.Message == "" && st.Code == 0 && st.Status == "") {
		return nil
	}
	return &rejectedError{reason: st.Reason, code: st.Code, msg: st.Message}
}

func textOf(data []byte) string {
	var s string
	if json.Unmarshal(data, &s) == nil {
		return s
	}
	return string(data)
}

// unwrapStored turns an element of MetaManager's database answer (a JSON string holding an object) into the
// object's JSON; relayed answers are the object already.
func unwrapStored(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return json.RawMessage(s)
		}
	}
	return raw
}

// listPods asks for every pod in the database. MetaManager answers a query without a name by resource type
// (§11.2), so {registerNodeNamespace}/pod returns the pods of all namespaces, as in KubeEdge.
func (c *metaClient) listPods(ctx context.Context, namespace string) ([]json.RawMessage, error) {
	res, err := resource.BuildEdge(namespace, resource.TypePod, "")
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	data, err := c.request(ctx, res, model.QueryOperation, nil)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if len(data) == 0 {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("list pods: reply is not a JSON array: %w", err)
	}
	for i := range items {
		items[i] = unwrapStored(items[i])
	}
	return items, nil
}

// getObject queries one object; a missing object (empty database answer, or the cloud's NotFound) is
// reported as apierrors NotFound for the runtime to tell optional references from broken ones.
func (c *metaClient) getObject(ctx context.Context, typ, plural, namespace, name string, into any) error {
	res, err := resource.BuildEdge(namespace, typ, name)
	if err != nil {
		return fmt.Errorf("get %s: %w", plural, err)
	}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: plural}, name)
	data, err := c.request(ctx, res, model.QueryOperation, nil)
	switch {
	case isNotFound(err):
		return notFound
	case err != nil:
		return fmt.Errorf("get %s %s/%s: %w", plural, namespace, name, err)
	}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return fmt.Errorf("get %s %s/%s: %w", plural, namespace, name, err)
		}
		if len(items) == 0 {
			return notFound
		}
		data = items[0]
	}
	data = unwrapStored(data)
	if len(data) == 0 || string(data) == "null" {
		return notFound
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("get %s %s/%s: decode: %w", plural, namespace, name, err)
	}
	return nil
}

// objectGetter serves the runtime's ConfigMap and Secret lookups through MetaManager: from the cloud when
// online, from the database when not.
type objectGetter struct{ c *metaClient }

var _ kuberuntime.ObjectGetter = objectGetter{}

func (g objectGetter) GetConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	if err := g.c.getObject(ctx, resource.TypeConfigMap, "configmaps", namespace, name, cm); err != nil {
		return nil, err
	}
	return cm, nil
}

func (g objectGetter) GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := g.c.getObject(ctx, resource.TypeSecret, "secrets", namespace, name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// patchPodStatus sends a strategic-merge patch of the pod's status.
// The reply's object, when the cloud sends one, carries the new resourceVersion.
func (c *metaClient) patchPodStatus(ctx context.Context, namespace, name string, patch []byte) (json.RawMessage, error) {
	res, err := resource.BuildEdge(namespace, resource.TypePodPatch, name)
	if err != nil {
		return nil, fmt.Errorf("patch pod status: %w", err)
	}
	return c.request(ctx, res, model.PatchOperation, string(patch))
}

// deletePod asks the cloud to delete the pod object now that its containers are gone; the UID precondition
// keeps a recreated pod of the same name safe.
func (c *metaClient) deletePod(ctx context.Context, namespace, name string, uid types.UID) error {
	res, err := resource.BuildEdge(namespace, resource.TypePod, name)
	if err != nil {
		return fmt.Errorf("delete pod: %w", err)
	}
	opts := metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	}
	_, err = c.request(ctx, res, model.DeleteOperation, opts)
	return err
}
