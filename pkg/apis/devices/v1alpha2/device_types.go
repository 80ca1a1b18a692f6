package v1alpha2

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// DeviceSpec binds a device to its model and to the edge node that serves it.
type DeviceSpec struct {
	// DeviceModelRef names the DeviceModel, in the device's namespace.
	DeviceModelRef *corev1.LocalObjectReference `json:"deviceModelRef"`
	// Protocol says how the mapper reaches the device.
	// +optional
	Protocol ProtocolConfig `json:"protocol,omitempty"`
	// PropertyVisitors tell the mapper how to read each property.
	// +optional
	PropertyVisitors []DevicePropertyVisitor `json:"propertyVisitors,omitempty"`
	// Data lists extra values the mapper reports on a data topic.
	// +optional
	Data DeviceData `json:"data,omitempty"`
	// NodeSelector picks the edge node: the first term's first match expression's first value names it.
	NodeSelector *corev1.NodeSelector `json:"nodeSelector"`
}

// ProtocolConfig is the protocol block of a device. The protocol-specific parts are kept as given, since
// only mappers interpret them.
type ProtocolConfig struct {
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	OpcUA *runtime.RawExtension `json:"opcua,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Modbus *runtime.RawExtension `json:"modbus,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Bluetooth *runtime.RawExtension `json:"bluetooth,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Common *runtime.RawExtension `json:"common,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	CustomizedProtocol *runtime.RawExtension `json:"customizedProtocol,omitempty"`
}

// DevicePropertyVisitor tells the mapper how to read one property.
type DevicePropertyVisitor struct {
	PropertyName string `json:"propertyName"`
	// ReportCycle is how often the mapper reports, in milliseconds.
	// +optional
	ReportCycle int64 `json:"reportCycle,omitempty"`
	// CollectCycle is how often the mapper samples, in milliseconds.
	// +optional
	CollectCycle int64 `json:"collectCycle,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	CustomizedValues *runtime.RawExtension `json:"customizedValues,omitempty"`
	// The protocol-specific visitor: one of modbus, opcua, bluetooth, customizedProtocol, kept as given.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Modbus *runtime.RawExtension `json:"modbus,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	OpcUA *runtime.RawExtension `json:"opcua,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Bluetooth *runtime.RawExtension `json:"bluetooth,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	CustomizedProtocol *runtime.RawExtension `json:"customizedProtocol,omitempty"`
}

// DeviceData lists values a mapper publishes on its data topic.
type DeviceData struct {
	// +optional
	DataProperties []DataProperty `json:"dataProperties,omitempty"`
	// +optional
	DataTopic string `json:"dataTopic,omitempty"`
}

// DataProperty is one value on the data topic.
type DataProperty struct {
	PropertyName string `json:"propertyName"`
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
}

// DeviceStatus holds the twins: what the cloud wants (desired) and what the device says (reported).
type DeviceStatus struct {
	// +optional
	Twins []Twin `json:"twins,omitempty"`
}

// Twin pairs the desired and reported value of one property.
type Twin struct {
	// PropertyName names a property of the device's model.
	PropertyName string `json:"propertyName"`
	// Desired is owned by the cloud (users, web apps).
	// +optional
	Desired TwinProperty `json:"desired,omitempty"`
	// Reported is owned by the edge (mappers through edgecore).
	// +optional
	Reported TwinProperty `json:"reported,omitempty"`
}

// TwinProperty is one side of a twin.
type TwinProperty struct {
	// Value is always a string on the wire, whatever the property type.
	Value string `json:"value"`
	// Metadata holds at least "type"; "timestamp" is set by the edge.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
}

// There is deliberately no status subresource: the tutorial's YAML sets status.twins at create time and the
// original web app writes desired values through the main endpoint, and both must keep working.

// Device is one physical device served by an edge node.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=dev
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.deviceModelRef.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Device struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DeviceSpec `json:"spec"`
	// +optional
	Status DeviceStatus `json:"status,omitempty"`
}

// DeviceList is a list of Devices.
// +kubebuilder:object:root=true
type DeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Device `json:"items"`
}
