package v1alpha1

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ObjectSyncSpec names the object a sync record is about.
type ObjectSyncSpec struct {
	// ObjectAPIVersion is the apiVersion of the object, e.g. "v1".
	ObjectAPIVersion string `json:"objectAPIVersion,omitempty"`
	// ObjectKind is the kind of the object, e.g. "Pod".
	ObjectKind string `json:"objectKind,omitempty"`
	// ObjectName is the name of the object.
	ObjectName string `json:"objectName,omitempty"`
}

// ObjectSyncStatus records what the edge node has confirmed.
type ObjectSyncStatus struct {
	// ObjectResourceVersion is the newest resourceVersion the node acknowledged; "0" means not yet delivered.
	ObjectResourceVersion string `json:"objectResourceVersion,omitempty"`
}

// ObjectSync records the delivery of a namespaced object to one edge node. Its name is "{node}.{object UID}" and
// it lives in the object's namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=os
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.objectKind`
// +kubebuilder:printcolumn:name="Object",type=string,JSONPath=`.spec.objectName`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.objectResourceVersion`
type ObjectSync struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ObjectSyncSpec   `json:"spec,omitempty"`
	Status ObjectSyncStatus `json:"status,omitempty"`
}

// ObjectSyncList is a list of ObjectSyncs.
// +kubebuilder:object:root=true
type ObjectSyncList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ObjectSync `json:"items"`
}

// ClusterObjectSync is ObjectSync for cluster-scoped objects.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cos
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.objectKind`
// +kubebuilder:printcolumn:name="Object",type=string,JSONPath=`.spec.objectName`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.objectResourceVersion`
type ClusterObjectSync struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ObjectSyncSpec   `json:"spec,omitempty"`
	Status ObjectSyncStatus `json:"status,omitempty"`
}

// ClusterObjectSyncList is a list of ClusterObjectSyncs.
// +kubebuilder:object:root=true
type ClusterObjectSyncList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterObjectSync `json:"items"`
}

// SyncName is the name of the sync record of object uid on node.
func SyncName(node string, uid types.UID) string { return node + "." + string(uid) }

// ParseSyncName splits a sync record name into node and object UID. Node names may contain dots, UIDs do not,
// so the split is at the last dot.
func ParseSyncName(name string) (node string, uid types.UID, err error) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "", "", fmt.Errorf("object sync name %q: want {node}.{uid}", name)
	}
	return name[:i], types.UID(name[i+1:]), nil
}
