// Package v1alpha2 holds the devices.kubeedge.io/v1alpha2 Device and DeviceModel types, in the shape the
// KubeEdge v1.x tutorials use, so their YAML applies unchanged.
// +kubebuilder:object:generate=true
// +groupName=devices.kubeedge.io
package v1alpha2
