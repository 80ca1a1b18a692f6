// Package v1alpha2 is edgecore's configuration file format,
// edgecore.config.kubeedge.io/v1alpha2 kind EdgeCore (spec §16.3). The field
// names follow KubeEdge so an existing edgecore.yaml loads; only the settings
// Tether implements are typed (see acceptedKubeEdgeFields for the rest).
//
// Sections are pointers, as in KubeEdge, so that a partial document such as
// the --minconfig output omits what it does not set. Load always returns
// every section populated.
package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// GroupName is the API group of edgecore's config.
	GroupName = "edgecore.config.kubeedge.io"
	// Version is the config version; KubeEdge v1.7-era v1alpha1 files are
	// not accepted.
	Version = "v1alpha2"
	// APIVersion is the document's apiVersion.
	APIVersion = GroupName + "/" + Version
	// Kind is the document's kind.
	Kind = "EdgeCore"
)

// EdgeCore is edgecore's configuration.
type EdgeCore struct {
	metav1.TypeMeta `json:",inline"`
	Database        *Database `json:"database,omitempty"`
	Modules         *Modules  `json:"modules,omitempty"`
	// FeatureGates is carried for KubeEdge compatibility; Tether defines no
	// gates yet, so the values are not acted upon.
	FeatureGates map[string]bool `json:"featureGates,omitempty"`
	// MetricsServer is a Tether addition: Prometheus metrics (connection
	// state, queues) on a loopback port.
	MetricsServer *MetricsServer `json:"metricsServer,omitempty"`
}

// MetricsServer serves /metrics and /healthz.
type MetricsServer struct {
	// BindAddress is host:port; empty disables the server.
	BindAddress string `json:"bindAddress"`
}

// Database is edgecore's local metadata store.
type Database struct {
	// DriverName is the database/sql driver; only sqlite3 is supported.
	DriverName string `json:"driverName"`
	AliasName  string `json:"aliasName"`
	// DataSource is the database file.
	DataSource string `json:"dataSource"`
}

// Modules configures edgecore's modules.
type Modules struct {
	Edged       *Edged       `json:"edged,omitempty"`
	EdgeHub     *EdgeHub     `json:"edgeHub,omitempty"`
	EventBus    *EventBus    `json:"eventBus,omitempty"`
	MetaManager *MetaManager `json:"metaManager,omitempty"`
	DeviceTwin  *DeviceTwin  `json:"deviceTwin,omitempty"`
	ServiceBus  *ServiceBus  `json:"serviceBus,omitempty"`
}

// Edged is the embedded kubelet.
type Edged struct {
	Enable bool `json:"enable"`
	// HostnameOverride is the node name used everywhere, cloud side included.
	HostnameOverride string `json:"hostnameOverride"`
	// NodeIP is reported as the node's InternalIP; empty means detect it.
	NodeIP                string            `json:"nodeIP"`
	NodeLabels            map[string]string `json:"nodeLabels"`
	RootDirectory         string            `json:"rootDirectory"`
	PodSandboxImage       string            `json:"podSandboxImage"`
	RegisterNodeNamespace string            `json:"registerNodeNamespace"`
	// MaxContainerCount is how many dead containers to keep; negative means
	// no limit.
	MaxContainerCount int32 `json:"maxContainerCount"`
	// SeccompDefault is KubeEdge's edged flag of the same name: true has the same effect as
	// tailoredKubeletConfig.seccompDefault.
	SeccompDefault        bool                   `json:"seccompDefault,omitempty"`
	TailoredKubeletConfig *TailoredKubeletConfig `json:"tailoredKubeletConfig,omitempty"`
}

// TailoredKubeletConfig is the subset of KubeletConfiguration edged uses.
type TailoredKubeletConfig struct {
	// Address is the IP the kubelet server listens on.
	Address string `json:"address"`
	// ReadOnlyPort is the kubelet server port; 0 disables it.
	ReadOnlyPort             int32  `json:"readOnlyPort"`
	ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
	// ImageServiceEndpoint empty means ContainerRuntimeEndpoint.
	ImageServiceEndpoint      string          `json:"imageServiceEndpoint"`
	CgroupDriver              string          `json:"cgroupDriver"`
	ClusterDomain             string          `json:"clusterDomain"`
	ClusterDNS                []string        `json:"clusterDNS"`
	NodeStatusUpdateFrequency metav1.Duration `json:"nodeStatusUpdateFrequency"`
	MaxPods                   int32           `json:"maxPods"`
	RegisterNode              bool            `json:"registerNode"`
	// PodLogsDir holds container logs, {dir}/{namespace}_{name}_{uid}/{container}/{restart}.log.
	PodLogsDir string `json:"podLogsDir"`
	// CgroupRoot is the cgroupfs parent of all pods; each pod lives in {root}/pod{uid}.
	CgroupRoot string `json:"cgroupRoot"`
	// SeccompDefault runs containers whose pod and container set no seccompProfile under the runtime's default
	// profile (RuntimeDefault) rather than unconfined, as the kubelet's seccompDefault. Default false, as there.
	SeccompDefault bool `json:"seccompDefault"`
}

// EdgeHub is the connection to cloudcore.
type EdgeHub struct {
	Enable bool `json:"enable"`
	// Heartbeat is the keepalive period in seconds.
	Heartbeat         int32  `json:"heartbeat"`
	MessageQPS        int32  `json:"messageQPS"`
	MessageBurst      int32  `json:"messageBurst"`
	ProjectID         string `json:"projectID"`
	TLSCAFile         string `json:"tlsCaFile"`
	TLSCertFile       string `json:"tlsCertFile"`
	TLSPrivateKeyFile string `json:"tlsPrivateKeyFile"`
	// Token is the join token used to obtain certificates; it is cleared from
	// the file once certificates exist.
	Token string `json:"token"`
	// HTTPServer is cloudcore's https endpoint for CA and certificate requests.
	HTTPServer         string            `json:"httpServer"`
	RotateCertificates bool              `json:"rotateCertificates"`
	WebSocket          *EdgeHubWebSocket `json:"websocket,omitempty"`
}

// EdgeHubWebSocket is the websocket client to cloudHub. Timeouts are seconds.
type EdgeHubWebSocket struct {
	Enable bool `json:"enable"`
	// Server is cloudHub's host:port.
	Server           string `json:"server"`
	HandshakeTimeout int32  `json:"handshakeTimeout"`
	ReadDeadline     int32  `json:"readDeadline"`
	WriteDeadline    int32  `json:"writeDeadline"`
}

// MQTTMode selects which MQTT broker(s) the event bus uses.
type MQTTMode int32

const (
	// MQTTModeInternal uses only the broker built into edgecore.
	MQTTModeInternal MQTTMode = 0
	// MQTTModeBoth uses the built-in and the external broker.
	MQTTModeBoth MQTTMode = 1
	// MQTTModeExternal uses only the external broker (the default).
	MQTTModeExternal MQTTMode = 2
)

// EventBus bridges MQTT (mappers, apps) and edgecore's modules.
type EventBus struct {
	Enable               bool         `json:"enable"`
	MQTTMode             MQTTMode     `json:"mqttMode"`
	MQTTQOS              int32        `json:"mqttQOS"`
	MQTTRetain           bool         `json:"mqttRetain"`
	MQTTSessionQueueSize int32        `json:"mqttSessionQueueSize"`
	MQTTServerExternal   string       `json:"mqttServerExternal"`
	MQTTServerInternal   string       `json:"mqttServerInternal"`
	MQTTSubClientID      string       `json:"mqttSubClientID"`
	MQTTPubClientID      string       `json:"mqttPubClientID"`
	MQTTUsername         string       `json:"mqttUsername"`
	MQTTPassword         string       `json:"mqttPassword"`
	TLS                  *EventBusTLS `json:"eventBusTLS,omitempty"`
}

// EventBusTLS is the TLS client config for the external broker.
type EventBusTLS struct {
	Enable                bool   `json:"enable"`
	TLSMQTTCAFile         string `json:"tlsMqttCAFile"`
	TLSMQTTCertFile       string `json:"tlsMqttCertFile"`
	TLSMQTTPrivateKeyFile string `json:"tlsMqttPrivateKeyFile"`
}

// MetaManager persists cloud metadata locally and answers edge queries.
type MetaManager struct {
	Enable bool `json:"enable"`
	// ContextSendGroup and ContextSendModule address upstream messages.
	ContextSendGroup  string `json:"contextSendGroup"`
	ContextSendModule string `json:"contextSendModule"`
	// RemoteQueryTimeout is in seconds.
	RemoteQueryTimeout int32 `json:"remoteQueryTimeout"`
}

// DeviceTwin keeps device state in sync between mappers and the cloud.
type DeviceTwin struct {
	Enable bool `json:"enable"`
}

// ServiceBus is the local HTTP endpoint for cloud-to-app REST calls.
type ServiceBus struct {
	Enable bool `json:"enable"`
	// Server is the IP to listen on.
	Server string `json:"server"`
	Port   int32  `json:"port"`
	// Timeout is in seconds.
	Timeout int32 `json:"timeout"`
}

// NodeName is the name this edge node registers under.
func (c *EdgeCore) NodeName() string {
	if c.Modules == nil || c.Modules.Edged == nil {
		return ""
	}
	return c.Modules.Edged.HostnameOverride
}

// EnabledModules names the enabled modules by their config keys, in a fixed
// order.
func (c *EdgeCore) EnabledModules() []string {
	m := c.Modules
	if m == nil {
		return nil
	}
	var names []string
	add := func(on bool, name string) {
		if on {
			names = append(names, name)
		}
	}
	add(m.Edged != nil && m.Edged.Enable, "edged")
	add(m.EdgeHub != nil && m.EdgeHub.Enable, "edgeHub")
	add(m.EventBus != nil && m.EventBus.Enable, "eventBus")
	add(m.MetaManager != nil && m.MetaManager.Enable, "metaManager")
	add(m.DeviceTwin != nil && m.DeviceTwin.Enable, "deviceTwin")
	add(m.ServiceBus != nil && m.ServiceBus.Enable, "serviceBus")
	return names
}
