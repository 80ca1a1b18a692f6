package v1alpha2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// DeviceModelSpec lists the properties every device of this model has.
type DeviceModelSpec struct {
	// Properties are the device properties; each becomes a twin on devices of this model.
	// +optional
	Properties []DeviceProperty `json:"properties,omitempty"`
}

// DeviceProperty describes one property of a device model.
type DeviceProperty struct {
	// Name of the property; twins refer to it as propertyName.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	Description string `json:"description,omitempty"`
	// Type is a one-of: exactly one of its blocks is set.
	Type PropertyType `json:"type"`
}

// PropertyType is a one-of block naming the value type of a property.
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:MaxProperties=1
type PropertyType struct {
	// +optional
	Int *PropertyTypeInt64 `json:"int,omitempty"`
	// +optional
	String *PropertyTypeString `json:"string,omitempty"`
	// +optional
	Double *PropertyTypeDouble `json:"double,omitempty"`
	// +optional
	Float *PropertyTypeFloat `json:"float,omitempty"`
	// +optional
	Boolean *PropertyTypeBoolean `json:"boolean,omitempty"`
	// +optional
	Bytes *PropertyTypeBytes `json:"bytes,omitempty"`
}

// PropertyAccessMode says whether the cloud may set a property.
// +kubebuilder:validation:Enum=ReadWrite;ReadOnly
type PropertyAccessMode string

// Access modes.
const (
	ReadWrite PropertyAccessMode = "ReadWrite"
	ReadOnly  PropertyAccessMode = "ReadOnly"
)

// PropertyTypeInt64 is an integer property.
type PropertyTypeInt64 struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
	// +optional
	DefaultValue int64 `json:"defaultValue,omitempty"`
	// +optional
	Minimum int64 `json:"minimum,omitempty"`
	// +optional
	Maximum int64 `json:"maximum,omitempty"`
	// +optional
	Unit string `json:"unit,omitempty"`
}

// PropertyTypeString is a string property.
type PropertyTypeString struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
	// +optional
	DefaultValue string `json:"defaultValue,omitempty"`
}

// PropertyTypeDouble is a float64 property.
type PropertyTypeDouble struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
	// +optional
	DefaultValue float64 `json:"defaultValue,omitempty"`
	// +optional
	Minimum float64 `json:"minimum,omitempty"`
	// +optional
	Maximum float64 `json:"maximum,omitempty"`
	// +optional
	Unit string `json:"unit,omitempty"`
}

// PropertyTypeFloat is a float32 property.
type PropertyTypeFloat struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
	// +optional
	DefaultValue float32 `json:"defaultValue,omitempty"`
	// +optional
	Minimum float32 `json:"minimum,omitempty"`
	// +optional
	Maximum float32 `json:"maximum,omitempty"`
	// +optional
	Unit string `json:"unit,omitempty"`
}

// PropertyTypeBoolean is a boolean property.
type PropertyTypeBoolean struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
	// +optional
	DefaultValue bool `json:"defaultValue,omitempty"`
}

// PropertyTypeBytes is a raw bytes property.
type PropertyTypeBytes struct {
	AccessMode PropertyAccessMode `json:"accessMode"`
}

// DeviceModel is the template of a kind of device.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=dm
type DeviceModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec DeviceModelSpec `json:"spec,omitempty"`
}

// DeviceModelList is a list of DeviceModels.
// +kubebuilder:object:root=true
type DeviceModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeviceModel `json:"items"`
}
