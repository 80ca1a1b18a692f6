package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the reliable-sync records.
const GroupName = "reliablesyncs.kubeedge.io"

// SchemeGroupVersion is the group and version of every type in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers ObjectSync and ClusterObjectSync with a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

// Resource returns a GroupResource of this group, for API errors.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&ObjectSync{}, &ObjectSyncList{}, &ClusterObjectSync{}, &ClusterObjectSyncList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
