// Package v1alpha1 is cloudcore's configuration file format,
// cloudcore.config.kubeedge.io/v1alpha1 kind CloudCore (spec §16.2). The
// field names follow KubeEdge so an existing cloudcore.yaml loads; only the
// settings Tether implements are typed (see acceptedKubeEdgeFields for the
// rest).
//
// Sections are pointers, as in KubeEdge, so that a partial document such as
// the --minconfig output omits what it does not set. Load always returns
// every section populated.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// GroupName is the API group of cloudcore's config.
	GroupName = "cloudcore.config.kubeedge.io"
	// Version is the only version of cloudcore's config, in KubeEdge too.
	Version = "v1alpha1"
	// APIVersion is the document's apiVersion.
	APIVersion = GroupName + "/" + Version
	// Kind is the document's kind.
	Kind = "CloudCore"
)

// CloudCore is cloudcore's configuration.
type CloudCore struct {
	metav1.TypeMeta `json:",inline"`
	CommonConfig    *CommonConfig  `json:"commonConfig,omitempty"`
	KubeAPIConfig   *KubeAPIConfig `json:"kubeAPIConfig,omitempty"`
	// FeatureGates is carried for KubeEdge compatibility; Tether defines no
	// gates yet, so the values are not acted upon.
	FeatureGates map[string]bool `json:"featureGates,omitempty"`
	Modules      *Modules        `json:"modules,omitempty"`
}

// CommonConfig holds settings shared by all modules.
type CommonConfig struct {
	// TunnelPort is the edge's kubelet-stream port that cloudcore proxies
	// apiserver requests to.
	TunnelPort    int32         `json:"tunnelPort"`
	MonitorServer MonitorServer `json:"monitorServer"`
}

// MonitorServer serves Prometheus metrics and, optionally, pprof.
type MonitorServer struct {
	// BindAddress is host:port; empty disables the server.
	BindAddress     string `json:"bindAddress"`
	EnableProfiling bool   `json:"enableProfiling"`
}

// KubeAPIConfig says how to reach kube-apiserver. With Master and KubeConfig
// both empty the in-cluster config is used, which is how the Helm chart runs.
type KubeAPIConfig struct {
	Master      string `json:"master"`
	KubeConfig  string `json:"kubeConfig"`
	ContentType string `json:"contentType"`
	QPS         int32  `json:"qps"`
	Burst       int32  `json:"burst"`
}

// Modules configures cloudcore's modules.
type Modules struct {
	CloudHub         *CloudHub         `json:"cloudHub,omitempty"`
	EdgeController   *EdgeController   `json:"edgeController,omitempty"`
	DeviceController *DeviceController `json:"deviceController,omitempty"`
	SyncController   *SyncController   `json:"syncController,omitempty"`
}

// CloudHub terminates edge connections and issues edge certificates.
type CloudHub struct {
	Enable bool `json:"enable"`
	// KeepaliveInterval is in seconds.
	KeepaliveInterval int32 `json:"keepaliveInterval"`
	// NodeLimit caps the edge nodes one cloudcore serves.
	NodeLimit         int32  `json:"nodeLimit"`
	TLSCAFile         string `json:"tlsCAFile"`
	TLSCAKeyFile      string `json:"tlsCAKeyFile"`
	TLSCertFile       string `json:"tlsCertFile"`
	TLSPrivateKeyFile string `json:"tlsPrivateKeyFile"`
	// WriteTimeout is in seconds.
	WriteTimeout int32 `json:"writeTimeout"`
	// AdvertiseAddress lists the IPs edge nodes reach cloudcore at; they
	// become IP SANs of the server certificate.
	AdvertiseAddress []string `json:"advertiseAddress"`
	// DNSNames become DNS SANs of the server certificate. Empty entries are
	// ignored (KubeEdge's default is [""]).
	DNSNames []string `json:"dnsNames"`
	// EdgeCertSigningDuration is the validity of issued edge certs, in days.
	EdgeCertSigningDuration int32 `json:"edgeCertSigningDuration"`
	// TokenRefreshDuration is how often the join token rotates, in hours.
	TokenRefreshDuration int32               `json:"tokenRefreshDuration"`
	WebSocket            *CloudHubWebSocket  `json:"websocket,omitempty"`
	Quic                 *CloudHubQUIC       `json:"quic,omitempty"`
	HTTPS                *CloudHubHTTPS      `json:"https,omitempty"`
	UnixSocket           *CloudHubUnixSocket `json:"unixsocket,omitempty"`
	// Authorization is KubeEdge's switch for checking what edge nodes ask for. Tether always runs its node
	// authorizer (docs/security.md), so enable: false does not turn it off; the node mode is the only one it
	// implements, and any other mode refuses to start rather than be silently ignored.
	Authorization *CloudHubAuthorization `json:"authorization,omitempty"`
}

// CloudHubAuthorization is KubeEdge's cloudHub.authorization section.
type CloudHubAuthorization struct {
	Enable bool `json:"enable"`
	// Debug is KubeEdge's audit-only mode (log refusals, allow the request). Tether never lets a refused request
	// through, so it only keeps the value for round trips.
	Debug bool                `json:"debug"`
	Modes []AuthorizationMode `json:"modes,omitempty"`
}

// AuthorizationMode is one entry of authorization.modes; exactly one member is set.
type AuthorizationMode struct {
	Node *NodeAuthorization `json:"node,omitempty"`
}

// NodeAuthorization is the node mode: edge nodes act only on what is bound to them.
type NodeAuthorization struct {
	Enable bool `json:"enable"`
}

// CloudHubWebSocket is the wss listener edge nodes connect to.
type CloudHubWebSocket struct {
	Enable  bool   `json:"enable"`
	Address string `json:"address"`
	Port    int32  `json:"port"`
}

// CloudHubQUIC is the QUIC alternative to the websocket listener.
type CloudHubQUIC struct {
	Enable             bool   `json:"enable"`
	Address            string `json:"address"`
	Port               int32  `json:"port"`
	MaxIncomingStreams int32  `json:"maxIncomingStreams"`
}

// CloudHubHTTPS serves the CA, certificate signing and node endpoints.
type CloudHubHTTPS struct {
	Enable  bool   `json:"enable"`
	Address string `json:"address"`
	Port    int32  `json:"port"`
}

// CloudHubUnixSocket is the local listener the CSI driver uses.
type CloudHubUnixSocket struct {
	Enable bool `json:"enable"`
	// Address is unix:///absolute/path.
	Address string `json:"address"`
}

// EdgeController syncs nodes, pods and their dependencies with the edge.
type EdgeController struct {
	Enable bool `json:"enable"`
	// NodeUpdateFrequency is in seconds.
	NodeUpdateFrequency int32 `json:"nodeUpdateFrequency"`
	// Buffer sizes per message type, by KubeEdge's key names; keys given in a
	// file override the defaults one by one.
	Buffer map[string]int32 `json:"buffer"`
	// Load is worker counts per message type, by KubeEdge's key names.
	Load map[string]int32 `json:"load"`
}

// DeviceController syncs Device and DeviceModel objects with the edge.
type DeviceController struct {
	Enable bool             `json:"enable"`
	Buffer map[string]int32 `json:"buffer"`
	Load   map[string]int32 `json:"load"`
}

// SyncController reconciles what the edge acknowledged against the cluster.
type SyncController struct {
	Enable bool `json:"enable"`
}

// EnabledModules names the enabled modules by their config keys, in a fixed
// order.
func (c *CloudCore) EnabledModules() []string {
	var names []string
	m := c.Modules
	if m == nil {
		return nil
	}
	add := func(on bool, name string) {
		if on {
			names = append(names, name)
		}
	}
	add(m.CloudHub != nil && m.CloudHub.Enable, "cloudHub")
	add(m.EdgeController != nil && m.EdgeController.Enable, "edgeController")
	add(m.DeviceController != nil && m.DeviceController.Enable, "deviceController")
	add(m.SyncController != nil && m.SyncController.Enable, "syncController")
	return names
}
