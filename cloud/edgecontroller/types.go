package edgecontroller

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Protocol constants shared with KubeEdge.
const (
	// EdgeRoleLabel marks a Node as an edge node; any value counts.
	EdgeRoleLabel = "node-role.kubernetes.io/edge"
	// gpuResource's extended-resource list is mirrored into gpuStatusAnnotation, as KubeEdge does.
	gpuResource         = corev1.ResourceName("nvidia.com/gpu")
	gpuStatusAnnotation = "huawei.com/gpu-status"
)

// NodeStatusRequest is the [v1.7] nodestatus update body. KubeEdge's type has no JSON tags, so the keys are the Go
// field names (encoding/json matches them case-insensitively).
type NodeStatusRequest struct {
	UID             types.UID
	Status          corev1.NodeStatus
	ExtendResources map[corev1.ResourceName][]ExtendResource
}

// ExtendResource describes one device behind an extended resource.
type ExtendResource struct {
	Name     string               `json:"name,omitempty"`
	Type     string               `json:"type,omitempty"`
	Capacity apiresource.Quantity `json:"capacity,omitempty"`
}

// PodStatusRequest is the [v1.7] podstatus update body; a list of them when the resource has no name.
type PodStatusRequest struct {
	UID    types.UID
	Name   string
	Status corev1.PodStatus
}

// ObjectResp answers the writes of KubeEdge's kubelet bridge. Err is null on success, otherwise a StatusError, so
// the edge can hand kubelet the same error a real API server would have returned (NotFound, Conflict...).
type ObjectResp struct {
	Object runtime.Object         `json:"Object"`
	Err    *apierrors.StatusError `json:"Err"`
}

// EventPatch is the body of an event patch.
type EventPatch struct {
	Event corev1.Event `json:"event"`
	// PatchData is a JSON string holding the strategic-merge patch; base64 (a Go []byte) is accepted too.
	PatchData json.RawMessage `json:"patchData"`
}
