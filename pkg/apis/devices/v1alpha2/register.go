package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of devices and device models.
const GroupName = "devices.kubeedge.io"

// SchemeGroupVersion is the group and version of every type in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha2"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers Device and DeviceModel with a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

// Resource returns a GroupResource of this group, for API errors.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &Device{}, &DeviceList{}, &DeviceModel{}, &DeviceModelList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
