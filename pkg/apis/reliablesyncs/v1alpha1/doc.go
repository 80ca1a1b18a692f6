// Package v1alpha1 holds reliablesyncs.kubeedge.io/v1alpha1 ObjectSync and ClusterObjectSync: for each
// (edge node, object) pair, the newest resourceVersion the node has confirmed.
// +kubebuilder:object:generate=true
// +groupName=reliablesyncs.kubeedge.io
package v1alpha1
