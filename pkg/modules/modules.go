// Package modules names the beehive modules and groups of cloudcore and edgecore. The names are KubeEdge's:
// they appear in route.source on the wire, so peers route by them.
package modules

// Cloud modules; each is its own group.
const (
	CloudHub         = "cloudhub"
	EdgeController   = "edgecontroller"
	DeviceController = "devicecontroller"
	SyncController   = "synccontroller"
	// Router and DynamicController are KubeEdge modules Tether does not have; cloudhub still recognises them.
	Router            = "router"
	DynamicController = "dynamiccontroller"
	TaskManager       = "taskmanager"
	CloudStream       = "cloudStream"
)

// Edge modules and groups.
const (
	// EdgeHub's module name is "websocket" for historical reasons, whatever the transport.
	EdgeHub      = "websocket"
	EdgeHubGroup = "hub"

	MetaManager      = "metamanager"
	MetaGroup        = "meta"
	Edged            = "edged"
	EdgedGroup       = "edged"
	DeviceTwin       = "twin"
	TwinGroup        = "twin"
	EventBus         = "eventbus"
	ServiceBus       = "servicebus"
	BusGroup         = "bus"
	TaskManagerGroup = "taskmanager"
)
