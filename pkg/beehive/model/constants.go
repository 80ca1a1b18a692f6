package model

// Operations (route.operation) seen on the bus and on the wire.
const (
	// CRUD and meta.
	InsertOperation        = "insert"
	UpdateOperation        = "update"
	PatchOperation         = "patch"
	DeleteOperation        = "delete"
	QueryOperation         = "query"
	ResponseOperation      = "response"
	ResponseErrorOperation = "error"
	UploadOperation        = "upload"
	KeepaliveOperation     = "keepalive"
	UnholdUpgradeOperation = "unhold-upgrade"

	// Bus (eventbus / servicebus).
	SubscribeOperation   = "subscribe"
	UnsubscribeOperation = "unsubscribe"
	MessageOperation     = "message"
	PublishOperation     = "publish"
	GetResultOperation   = "get_result"
	StartOperation       = "start"
	StopOperation        = "stop"

	// Connection events: cloudhub emits connected/disconnected with resource
	// node/{nodeID}; edgehub emits connect with resource node/connection.
	ConnectedOperation    = "connected"
	DisconnectedOperation = "disconnected"
	ConnectOperation      = "connect"

	// Connection-level control messages, answered by the transport itself.
	ConfigOperation = "config"
	PingOperation   = "ping"
	PongOperation   = "pong"

	// Legacy device/twin operations.
	GetOperation      = "get"
	ListOperation     = "list"
	DetailOperation   = "detail"
	DeltaOperation    = "delta"
	DocumentOperation = "document"
	UpdatedOperation  = "updated"
	DeletedOperation  = "deleted"

	// CSI.
	CreateVolumeOperation              = "createvolume"
	DeleteVolumeOperation              = "deletevolume"
	ControllerPublishVolumeOperation   = "controllerpublishvolume"
	ControllerUnpublishVolumeOperation = "controllerunpublishvolume"

	// Node tasks.
	PrepullOperation                = "prepull"
	UpgradeOperation                = "upgrade"
	UpdateNodeActionStatusOperation = "UpdateNodeActionStatus"

	// MetaServer.
	ApplicationResponseOperation = "applicationResponse"
)

// Groups (route.group) used on the cloud-edge link. They are routing keys,
// not necessarily beehive module groups.
const (
	GroupResource    = "resource"
	GroupTwin        = "twin"
	GroupUser        = "user"
	GroupFunc        = "func"
	GroupMeta        = "meta"
	GroupTaskManager = "taskmanager"
)

// Edge connection event values (source edgehub, resource node/connection).
const (
	SourceEdgeHub            = "edgehub"
	ResourceNodeConnection   = "node/connection"
	ContentCloudConnected    = "cloud_connected"
	ContentCloudDisconnected = "cloud_disconnected"
)
