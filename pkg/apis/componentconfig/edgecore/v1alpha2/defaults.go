package v1alpha2

import (
	"net"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/internal/cfgutil"
)

// Defaults shared with other packages (keadm, tests) that build configs.
const (
	DefaultConfigFile      = "/etc/kubeedge/config/edgecore.yaml"
	DefaultDataSource      = "/var/lib/kubeedge/edgecore.db"
	DefaultCAFile          = "/etc/kubeedge/ca/rootCA.crt"
	DefaultCertFile        = "/etc/kubeedge/certs/server.crt"
	DefaultKeyFile         = "/etc/kubeedge/certs/server.key"
	DefaultRootDirectory   = "/var/lib/kubelet"
	DefaultPodSandboxImage = "tether/pause:3.10"
	DefaultCRIEndpoint     = "unix:///run/containerd/containerd.sock"
	DefaultWebSocketPort   = 10000
	DefaultHTTPSPort       = 10002
	DefaultKubeletPort     = 10350
	// DefaultMetricsAddress is next to the kubelet port, on loopback only.
	DefaultMetricsAddress = "127.0.0.1:10356"

	DriverSQLite3 = "sqlite3"

	CgroupDriverCgroupfs = "cgroupfs"
	CgroupDriverSystemd  = "systemd"
)

// NewDefaultEdgeCore returns the full default config, as printed by
// --defaultconfig. The node name is the lower-cased hostname; cloudcore is
// assumed to run on this host's primary IP, which suits an all-in-one setup
// and is what `keadm join` rewrites.
func NewDefaultEdgeCore() *EdgeCore {
	cloud := cfgutil.HostIP()
	return &EdgeCore{
		TypeMeta: metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind},
		Database: &Database{
			DriverName: DriverSQLite3,
			AliasName:  "default",
			DataSource: DefaultDataSource,
		},
		FeatureGates:  map[string]bool{},
		MetricsServer: &MetricsServer{BindAddress: DefaultMetricsAddress},
		Modules: &Modules{
			Edged: &Edged{
				Enable:                true,
				HostnameOverride:      cfgutil.Hostname(),
				NodeLabels:            map[string]string{},
				RootDirectory:         DefaultRootDirectory,
				PodSandboxImage:       DefaultPodSandboxImage,
				RegisterNodeNamespace: "default",
				MaxContainerCount:     -1,
				TailoredKubeletConfig: &TailoredKubeletConfig{
					Address:                   "127.0.0.1",
					ReadOnlyPort:              DefaultKubeletPort,
					ContainerRuntimeEndpoint:  DefaultCRIEndpoint,
					ImageServiceEndpoint:      DefaultCRIEndpoint,
					CgroupDriver:              CgroupDriverCgroupfs,
					ClusterDomain:             "cluster.local",
					ClusterDNS:                []string{},
					NodeStatusUpdateFrequency: metav1.Duration{Duration: 10 * time.Second},
					MaxPods:                   110,
					RegisterNode:              true,
					PodLogsDir:                "/var/log/pods",
					CgroupRoot:                "/tether-pods",
				},
			},
			EdgeHub: &EdgeHub{
				Enable:             true,
				Heartbeat:          15,
				MessageQPS:         30,
				MessageBurst:       60,
				ProjectID:          "e632aba927ea4ac2b575ec1603d56f10",
				TLSCAFile:          DefaultCAFile,
				TLSCertFile:        DefaultCertFile,
				TLSPrivateKeyFile:  DefaultKeyFile,
				HTTPServer:         "https://" + net.JoinHostPort(cloud, strconv.Itoa(DefaultHTTPSPort)),
				RotateCertificates: true,
				WebSocket: &EdgeHubWebSocket{
					Enable:           true,
					Server:           net.JoinHostPort(cloud, strconv.Itoa(DefaultWebSocketPort)),
					HandshakeTimeout: 30,
					ReadDeadline:     15,
					WriteDeadline:    15,
				},
			},
			EventBus: &EventBus{
				Enable:               true,
				MQTTMode:             MQTTModeExternal,
				MQTTSessionQueueSize: 100,
				MQTTServerExternal:   "tcp://127.0.0.1:1883",
				MQTTServerInternal:   "tcp://127.0.0.1:1884",
				TLS: &EventBusTLS{
					TLSMQTTCAFile:         DefaultCAFile,
					TLSMQTTCertFile:       DefaultCertFile,
					TLSMQTTPrivateKeyFile: DefaultKeyFile,
				},
			},
			MetaManager: &MetaManager{
				Enable:             true,
				ContextSendGroup:   "hub",
				ContextSendModule:  "websocket",
				RemoteQueryTimeout: 60,
			},
			DeviceTwin: &DeviceTwin{Enable: true},
			ServiceBus: &ServiceBus{Server: "127.0.0.1", Port: 9060, Timeout: 60},
		},
	}
}

// NewMinEdgeCore returns the settings a user is expected to review — node
// identity, container runtime, how to reach cloudcore and the MQTT broker —
// as printed by --minconfig. It is a subset of the defaults with the same
// values, so loading it yields exactly NewDefaultEdgeCore.
func NewMinEdgeCore() *EdgeCore {
	d := NewDefaultEdgeCore()
	bus := *d.Modules.EventBus
	bus.TLS = nil
	return &EdgeCore{
		TypeMeta: d.TypeMeta,
		Database: d.Database,
		Modules: &Modules{
			Edged:    d.Modules.Edged,
			EdgeHub:  d.Modules.EdgeHub,
			EventBus: &bus,
		},
	}
}

// failClosedKubeEdgeFields are KubeEdge security settings Tether does not implement: turned on, they refuse the file
// instead of being ignored with the rest.
func failClosedKubeEdgeFields() []string {
	return []string{
		// The kubelet refuses to start when kernel tunables differ from its defaults; Edged does not check them.
		"modules.edged.tailoredKubeletConfig.protectKernelDefaults",
	}
}

// acceptedKubeEdgeFields are KubeEdge settings Tether does not implement.
// Files containing them load (so KubeEdge configs work unchanged); the keys
// are logged and otherwise ignored.
func acceptedKubeEdgeFields() []string {
	fields := []string{
		"edgecoreVersion",
		"modules.dbTest",
		"modules.deviceTwin.dmiSockPath",
		"modules.edgeHub.quic",
		"modules.edgeStream",
		"modules.metaManager.metaServer",
		"modules.taskManager",
	}
	for _, f := range []string{
		"customInterfaceName", "experimentalMounterPath",
		"experimentalNodeAllocatableIgnoreEvictionThreshold", "keepTerminatedPodVolumes",
		"maxPerPodContainerCount", "minimumGCAge", "registerSchedulable", "reportEvent",
		"runtimeCgroups", "windowsPriorityClass", "windowsService",
	} {
		fields = append(fields, "modules.edged."+f)
	}
	// The rest of KubeEdge's TailoredKubeletConfiguration.
	for _, f := range []string{
		"allowedUnsafeSysctls", "cgroupsPerQOS", "configMapAndSecretChangeDetectionStrategy",
		"containerLogMaxFiles", "containerLogMaxSize", "containerLogMaxWorkers", "containerLogMonitorInterval",
		"contentType", "cpuCFSQuota", "cpuCFSQuotaPeriod", "cpuManagerPolicy", "cpuManagerPolicyOptions",
		"cpuManagerReconcilePeriod", "enableContentionProfiling", "enableControllerAttachDetach",
		"enableDebugFlagsHandler", "enableDebuggingHandlers", "enableProfilingHandler", "enableSystemLogHandler",
		"enableSystemLogQuery", "enforceNodeAllocatable", "eventBurst", "eventRecordQPS", "evictionHard",
		"evictionMaxPodGracePeriod", "evictionMinimumReclaim", "evictionPressureTransitionPeriod", "evictionSoft",
		"evictionSoftGracePeriod", "failSwapOn", "featureGates", "fileCheckFrequency", "hairpinMode",
		"imageGCHighThresholdPercent", "imageGCLowThresholdPercent", "imageMaximumGCAge", "imageMinimumGCAge",
		"iptablesDropBit", "iptablesMasqueradeBit", "kernelMemcgNotification", "kubeReserved",
		"kubeReservedCgroup", "kubeletCgroups", "localStorageCapacityIsolation", "logging",
		"makeIPTablesUtilChains", "maxOpenFiles", "maxParallelImagePulls", "memoryManagerPolicy", "memorySwap",
		"memoryThrottlingFactor", "nodeLeaseDurationSeconds", "nodeStatusMaxImages", "nodeStatusReportFrequency",
		"oomScoreAdj", "podCIDR", "podPidsLimit", "podsPerCore", "protectKernelDefaults",
		"qosReserved", "registerWithTaints", "registryBurst", "registryPullQPS", "reservedMemory",
		"reservedSystemCPUs", "resolvConf", "runtimeRequestTimeout", "serializeImagePulls",
		"showHiddenMetricsForVersion", "shutdownGracePeriod", "shutdownGracePeriodByPodPriority",
		"shutdownGracePeriodCriticalPods", "staticPodPath", "streamingConnectionIdleTimeout", "syncFrequency",
		"systemCgroups", "systemReserved", "systemReservedCgroup", "topologyManagerPolicy",
		"topologyManagerPolicyOptions", "topologyManagerScope", "volumePluginDir", "volumeStatsAggPeriod",
	} {
		fields = append(fields, "modules.edged.tailoredKubeletConfig."+f)
	}
	return fields
}
