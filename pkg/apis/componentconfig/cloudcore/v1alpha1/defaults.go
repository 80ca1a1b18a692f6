package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/internal/cfgutil"
)

// Defaults shared with other packages (keadm, tests) that build configs.
const (
	DefaultConfigFile        = "/etc/kubeedge/config/cloudcore.yaml"
	DefaultCAFile            = "/etc/kubeedge/ca/rootCA.crt"
	DefaultCAKeyFile         = "/etc/kubeedge/ca/rootCA.key"
	DefaultCertFile          = "/etc/kubeedge/certs/server.crt"
	DefaultKeyFile           = "/etc/kubeedge/certs/server.key"
	DefaultUnixSocketAddress = "unix:///var/lib/kubeedge/kubeedge.sock"
	DefaultNodeLimit         = 500
	DefaultWebSocketPort     = 10000
	DefaultQUICPort          = 10001
	DefaultHTTPSPort         = 10002
	DefaultTunnelPort        = 10350

	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/vnd.kubernetes.protobuf"
)

// NewDefaultCloudCore returns the full default config, as printed by
// --defaultconfig. cloudHub.advertiseAddress is this host's primary IP.
func NewDefaultCloudCore() *CloudCore {
	return &CloudCore{
		TypeMeta: metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind},
		CommonConfig: &CommonConfig{
			TunnelPort:    DefaultTunnelPort,
			MonitorServer: MonitorServer{BindAddress: "127.0.0.1:9091"},
		},
		KubeAPIConfig: &KubeAPIConfig{
			ContentType: ContentTypeProtobuf,
			// KubeEdge sizes the client to the node limit: 5x and 10x.
			QPS:   5 * DefaultNodeLimit,
			Burst: 10 * DefaultNodeLimit,
		},
		FeatureGates: map[string]bool{},
		Modules: &Modules{
			CloudHub: &CloudHub{
				Enable:                  true,
				KeepaliveInterval:       30,
				NodeLimit:               DefaultNodeLimit,
				TLSCAFile:               DefaultCAFile,
				TLSCAKeyFile:            DefaultCAKeyFile,
				TLSCertFile:             DefaultCertFile,
				TLSPrivateKeyFile:       DefaultKeyFile,
				WriteTimeout:            30,
				AdvertiseAddress:        []string{cfgutil.HostIP()},
				DNSNames:                []string{},
				EdgeCertSigningDuration: 30,
				TokenRefreshDuration:    12,
				WebSocket:               &CloudHubWebSocket{Enable: true, Address: "0.0.0.0", Port: DefaultWebSocketPort},
				Quic:                    &CloudHubQUIC{Enable: false, Address: "0.0.0.0", Port: DefaultQUICPort, MaxIncomingStreams: 10000},
				HTTPS:                   &CloudHubHTTPS{Enable: true, Address: "0.0.0.0", Port: DefaultHTTPSPort},
				UnixSocket:              &CloudHubUnixSocket{Enable: true, Address: DefaultUnixSocketAddress},
			},
			EdgeController: &EdgeController{
				Enable:              true,
				NodeUpdateFrequency: 10,
				Buffer:              defaultEdgeControllerBuffer(DefaultNodeLimit),
				Load:                defaultEdgeControllerLoad(DefaultNodeLimit),
			},
			DeviceController: &DeviceController{
				Enable: true,
				Buffer: map[string]int32{
					"updateDeviceTwins":  1024,
					"updateDeviceStatus": 1024,
					"deviceEvent":        1,
					"deviceModelEvent":   1,
				},
				Load: map[string]int32{"updateDeviceStatusWorkers": 1},
			},
			SyncController: &SyncController{Enable: true},
		},
	}
}

// The node-related entries grow with nodeLimit the way KubeEdge sizes them.
func defaultEdgeControllerBuffer(nodeLimit int32) map[string]int32 {
	return map[string]int32{
		"updatePodStatus":    1024,
		"updateNodeStatus":   1024,
		"queryConfigMap":     1024,
		"querySecret":        1024,
		"podEvent":           1,
		"configMapEvent":     1,
		"secretEvent":        1,
		"rulesEvent":         1,
		"ruleEndpointsEvent": 1,
		"patchNode":          1024 + nodeLimit/2,
		"queryNode":          1024 + nodeLimit,
		"createLease":        1024 + nodeLimit,
	}
}

func defaultEdgeControllerLoad(nodeLimit int32) map[string]int32 {
	return map[string]int32{
		"updatePodStatusWorkers":  1,
		"updateNodeStatusWorkers": 1,
		"processEventWorkers":     4,
		"queryConfigMapWorkers":   100,
		"querySecretWorkers":      100,
		"createNodeWorkers":       100,
		"patchNodeWorkers":        100 + nodeLimit/50,
		"queryNodeWorkers":        nodeLimit,
		"updateNodeWorkers":       4,
		"patchPodWorkers":         100,
		"deletePodWorkers":        100,
		"createLeaseWorkers":      nodeLimit,
		"queryLeaseWorkers":       100,
	}
}

// NewMinCloudCore returns the settings a user is expected to review — how
// to reach the apiserver, what to advertise to edge nodes, where the
// certificates live and which ports to listen on — as printed by
// --minconfig. It is a subset of the defaults with the same values, so
// loading it yields exactly NewDefaultCloudCore.
func NewMinCloudCore() *CloudCore {
	d := NewDefaultCloudCore()
	hub := *d.Modules.CloudHub
	hub.Quic, hub.UnixSocket = nil, nil
	return &CloudCore{
		TypeMeta:      d.TypeMeta,
		KubeAPIConfig: d.KubeAPIConfig,
		Modules:       &Modules{CloudHub: &hub},
	}
}

// acceptedKubeEdgeFields are KubeEdge settings Tether does not implement.
// Files containing them load (so KubeEdge configs work unchanged); the keys
// are logged and otherwise ignored.
func acceptedKubeEdgeFields() []string {
	return []string{
		"modules.cloudStream",
		"modules.dynamicController",
		"modules.imagePrePullController",
		"modules.iptablesManager",
		"modules.router",
		"modules.taskManager",
	}
}
