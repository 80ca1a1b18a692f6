// Package resource builds and parses the route.resource strings of the
// KubeEdge protocol. One object is addressed differently depending on where
// the message is:
//
//	cloud-internal  node/{node}/{namespace}/{type}[/{name}]
//	on the wire     {namespace}/{type}[/{name}]   (node prefix stripped/added by cloudhub)
//	edge meta DB    {namespace}/{type}/{name}, or {namespace}/{type} for query/response
//	device          node/{node}/device/{namespace}/{name}/twin/edge_updated
//	                node/{node}/device/{name}/twin/...   ([v1.7], no namespace)
//	node-scoped     node/{node}/membership, node/{node}/twin, node/{node}
//
// Cluster-scoped objects use the literal namespace "null". Parsing mirrors
// KubeEdge's fixed token indices, so these functions stay compatible with
// what real peers send.
package resource

// Resource types (the {type} token, or a whole resource where noted).
const (
	TypePod                       = "pod"
	TypePodList                   = "podlist"
	TypePodStatus                 = "podstatus"
	TypePodPatch                  = "podpatch"
	TypeNode                      = "node"
	TypeNodeStatus                = "nodestatus"
	TypeNodePatch                 = "nodepatch"
	TypeConfigMap                 = "configmap"
	TypeSecret                    = "secret"
	TypeServiceAccountToken       = "serviceaccounttoken"
	TypeEvent                     = "event"
	TypeLease                     = "lease"
	TypeRule                      = "rule"
	TypeRuleEndpoint              = "ruleendpoint"
	TypeRuleStatus                = "rulestatus"
	TypeServiceAccountAccess      = "serviceaccountaccess"
	TypeCertificateSigningRequest = "certificatesigningrequest"
	TypePersistentVolume          = "persistentvolume"
	TypePersistentVolumeClaim     = "persistentvolumeclaim"
	TypeVolumeAttachment          = "volumeattachment"
	TypeVolume                    = "volume"
	TypeDevice                    = "device"
	TypeDeviceModel               = "devicemodel"
	TypeDeviceMapper              = "devicemapper"
	TypeService                   = "service"
	TypeEndpoints                 = "endpoints"
	TypeApplication               = "Application"

	// Whole resources: the entire wire resource string, not a {type} token.
	TypeK8sCA            = "k8s/ca.crt"
	TypeMembership       = "membership"
	TypeMembershipDetail = "membership/detail"
	TypeTwin             = "twin"

	// Device sub-resources, following node/{node}/device/{id}/.
	TypeTwinEdgeUpdated  = "twin/edge_updated"
	TypeTwinCloudUpdated = "twin/cloud_updated"
	TypeStateUpdate      = "state/update"

	// [v1.7] only.
	TypeServiceList   = "servicelist"
	TypeEndpointsList = "endpointslist"
	TypeListener      = "listener"
)

// Fixed tokens.
const (
	Sep = "/"
	// NodePrefix is the first token of every cloud-internal resource.
	NodePrefix = "node"
	// NullNamespace stands in for the namespace of cluster-scoped objects.
	NullNamespace = "null"
	// NodeConnection is the resource of edgehub's connect events.
	NodeConnection = "node/connection"
)
