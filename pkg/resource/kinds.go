package resource

import "k8s.io/apimachinery/pkg/runtime/schema"

// syncedKinds maps the resource types that cloudcore delivers reliably (ACKed, recorded in ObjectSync) to their
// Kubernetes kinds. Typed objects from informers carry no apiVersion/kind, so the resource type is the source of
// truth for the kind, as in KubeEdge.
var syncedKinds = map[string]schema.GroupVersionKind{
	TypePod:                   {Version: "v1", Kind: "Pod"},
	TypeConfigMap:             {Version: "v1", Kind: "ConfigMap"},
	TypeSecret:                {Version: "v1", Kind: "Secret"},
	TypeNode:                  {Version: "v1", Kind: "Node"},
	TypeService:               {Version: "v1", Kind: "Service"},
	TypeEndpoints:             {Version: "v1", Kind: "Endpoints"},
	TypePersistentVolume:      {Version: "v1", Kind: "PersistentVolume"},
	TypePersistentVolumeClaim: {Version: "v1", Kind: "PersistentVolumeClaim"},
	TypeVolumeAttachment:      {Group: "storage.k8s.io", Version: "v1", Kind: "VolumeAttachment"},
	TypeDevice:                {Group: "devices.kubeedge.io", Version: "v1alpha2", Kind: "Device"},
	TypeDeviceModel:           {Group: "devices.kubeedge.io", Version: "v1alpha2", Kind: "DeviceModel"},
}

// KindForType returns the kind of objects of a resource type ("pod" -> v1 Pod).
func KindForType(resourceType string) (schema.GroupVersionKind, bool) {
	gvk, ok := syncedKinds[resourceType]
	return gvk, ok
}

// TypeForKind is the inverse of KindForType; the group and version are ignored, as ObjectSync records
// "apiVersion" and "kind" separately and kinds are unique among synced types.
func TypeForKind(kind string) (string, bool) {
	for t, gvk := range syncedKinds {
		if gvk.Kind == kind {
			return t, true
		}
	}
	return "", false
}
