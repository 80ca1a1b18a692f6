package v1alpha2

import (
	"net/url"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/internal/cfgutil"
)

// Validate checks the whole config and returns every problem found.
func (c *EdgeCore) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	errs = append(errs, cfgutil.Required(field.NewPath("database"), c.Database)...)
	if c.Database != nil {
		errs = append(errs, c.Database.validate(field.NewPath("database"))...)
	}
	if c.MetricsServer != nil && c.MetricsServer.BindAddress != "" {
		errs = append(errs, cfgutil.ListenAddress(field.NewPath("metricsServer", "bindAddress"), c.MetricsServer.BindAddress)...)
	}
	p := field.NewPath("modules")
	errs = append(errs, cfgutil.Required(p, c.Modules)...)
	if c.Modules == nil {
		return errs
	}
	m := c.Modules
	errs = append(errs, cfgutil.Required(p.Child("edged"), m.Edged)...)
	if m.Edged != nil {
		errs = append(errs, m.Edged.validate(p.Child("edged"))...)
	}
	errs = append(errs, cfgutil.Required(p.Child("edgeHub"), m.EdgeHub)...)
	if m.EdgeHub != nil {
		errs = append(errs, m.EdgeHub.validate(p.Child("edgeHub"))...)
	}
	errs = append(errs, cfgutil.Required(p.Child("eventBus"), m.EventBus)...)
	if m.EventBus != nil {
		errs = append(errs, m.EventBus.validate(p.Child("eventBus"))...)
	}
	errs = append(errs, cfgutil.Required(p.Child("metaManager"), m.MetaManager)...)
	if mm := m.MetaManager; mm != nil && mm.Enable {
		mp := p.Child("metaManager")
		if mm.ContextSendGroup == "" {
			errs = append(errs, field.Required(mp.Child("contextSendGroup"), "must name the group upstream messages go to"))
		}
		if mm.ContextSendModule == "" {
			errs = append(errs, field.Required(mp.Child("contextSendModule"), "must name the module upstream messages go to"))
		}
		errs = append(errs, cfgutil.Positive(mp.Child("remoteQueryTimeout"), mm.RemoteQueryTimeout)...)
	}
	errs = append(errs, cfgutil.Required(p.Child("deviceTwin"), m.DeviceTwin)...)
	errs = append(errs, cfgutil.Required(p.Child("serviceBus"), m.ServiceBus)...)
	if sb := m.ServiceBus; sb != nil && sb.Enable {
		sp := p.Child("serviceBus")
		errs = append(errs, cfgutil.IP(sp.Child("server"), sb.Server)...)
		errs = append(errs, cfgutil.Port(sp.Child("port"), sb.Port)...)
		errs = append(errs, cfgutil.Positive(sp.Child("timeout"), sb.Timeout)...)
	}
	return errs
}

func (d *Database) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if d.DriverName != DriverSQLite3 {
		errs = append(errs, field.NotSupported(p.Child("driverName"), d.DriverName, []string{DriverSQLite3}))
	}
	if d.AliasName == "" {
		errs = append(errs, field.Required(p.Child("aliasName"), ""))
	}
	return append(errs, cfgutil.File(p.Child("dataSource"), d.DataSource)...)
}

func (e *Edged) validate(p *field.Path) field.ErrorList {
	if !e.Enable {
		return nil
	}
	errs := cfgutil.DNSSubdomain(p.Child("hostnameOverride"), e.HostnameOverride)
	if e.NodeIP != "" {
		errs = append(errs, cfgutil.IP(p.Child("nodeIP"), e.NodeIP)...)
	}
	errs = append(errs, cfgutil.Labels(p.Child("nodeLabels"), e.NodeLabels)...)
	errs = append(errs, cfgutil.Dir(p.Child("rootDirectory"), e.RootDirectory)...)
	if e.PodSandboxImage == "" {
		errs = append(errs, field.Required(p.Child("podSandboxImage"), "must name the pause image"))
	}
	errs = append(errs, cfgutil.DNSLabel(p.Child("registerNodeNamespace"), e.RegisterNodeNamespace)...)

	kp := p.Child("tailoredKubeletConfig")
	k := e.TailoredKubeletConfig
	if k == nil {
		return append(errs, cfgutil.Required(kp, k)...)
	}
	errs = append(errs, cfgutil.IP(kp.Child("address"), k.Address)...)
	if k.ReadOnlyPort != 0 { // 0 disables the server
		errs = append(errs, cfgutil.Port(kp.Child("readOnlyPort"), k.ReadOnlyPort)...)
	}
	errs = append(errs, cfgutil.UnixSocket(kp.Child("containerRuntimeEndpoint"), k.ContainerRuntimeEndpoint)...)
	if k.ImageServiceEndpoint != "" {
		errs = append(errs, cfgutil.UnixSocket(kp.Child("imageServiceEndpoint"), k.ImageServiceEndpoint)...)
	}
	if k.CgroupDriver != CgroupDriverCgroupfs && k.CgroupDriver != CgroupDriverSystemd {
		errs = append(errs, field.NotSupported(kp.Child("cgroupDriver"), k.CgroupDriver, []string{CgroupDriverCgroupfs, CgroupDriverSystemd}))
	}
	errs = append(errs, cfgutil.DNSSubdomain(kp.Child("clusterDomain"), k.ClusterDomain)...)
	for i, ip := range k.ClusterDNS {
		errs = append(errs, cfgutil.IP(kp.Child("clusterDNS").Index(i), ip)...)
	}
	if d := k.NodeStatusUpdateFrequency.Duration; d <= 0 {
		errs = append(errs, field.Invalid(kp.Child("nodeStatusUpdateFrequency"), d.String(), "must be greater than 0"))
	}
	return append(errs, cfgutil.Positive(kp.Child("maxPods"), k.MaxPods)...)
}

func (h *EdgeHub) validate(p *field.Path) field.ErrorList {
	if !h.Enable {
		return nil
	}
	var errs field.ErrorList
	errs = append(errs, cfgutil.Positive(p.Child("heartbeat"), h.Heartbeat)...)
	errs = append(errs, cfgutil.Positive(p.Child("messageQPS"), h.MessageQPS)...)
	errs = append(errs, cfgutil.Positive(p.Child("messageBurst"), h.MessageBurst)...)
	if h.ProjectID == "" {
		errs = append(errs, field.Required(p.Child("projectID"), ""))
	}
	errs = append(errs, cfgutil.File(p.Child("tlsCaFile"), h.TLSCAFile)...)
	errs = append(errs, cfgutil.File(p.Child("tlsCertFile"), h.TLSCertFile)...)
	errs = append(errs, cfgutil.File(p.Child("tlsPrivateKeyFile"), h.TLSPrivateKeyFile)...)
	errs = append(errs, cfgutil.URL(p.Child("httpServer"), h.HTTPServer, "https")...)

	wp := p.Child("websocket")
	ws := h.WebSocket
	switch {
	case ws == nil:
		errs = append(errs, cfgutil.Required(wp, ws)...)
	case !ws.Enable:
		errs = append(errs, field.Invalid(wp.Child("enable"), false, "edgeHub connects to cloudcore over websocket only (quic is not supported)"))
	default:
		errs = append(errs, cfgutil.HostPort(wp.Child("server"), ws.Server)...)
		errs = append(errs, cfgutil.Positive(wp.Child("handshakeTimeout"), ws.HandshakeTimeout)...)
		errs = append(errs, cfgutil.Positive(wp.Child("readDeadline"), ws.ReadDeadline)...)
		errs = append(errs, cfgutil.Positive(wp.Child("writeDeadline"), ws.WriteDeadline)...)
	}
	return errs
}

func (b *EventBus) validate(p *field.Path) field.ErrorList {
	if !b.Enable {
		return nil
	}
	var errs field.ErrorList
	if b.MQTTMode < MQTTModeInternal || b.MQTTMode > MQTTModeExternal {
		errs = append(errs, field.Invalid(p.Child("mqttMode"), int32(b.MQTTMode), "must be 0 (internal broker), 1 (both) or 2 (external broker)"))
	}
	if b.MQTTQOS < 0 || b.MQTTQOS > 2 {
		errs = append(errs, field.Invalid(p.Child("mqttQOS"), b.MQTTQOS, "must be 0, 1 or 2"))
	}
	errs = append(errs, cfgutil.Positive(p.Child("mqttSessionQueueSize"), b.MQTTSessionQueueSize)...)
	// Only the broker(s) the mode uses must be reachable.
	if b.MQTTMode != MQTTModeInternal {
		errs = append(errs, mqttURL(p.Child("mqttServerExternal"), b.MQTTServerExternal)...)
	}
	if b.MQTTMode != MQTTModeExternal {
		errs = append(errs, mqttURL(p.Child("mqttServerInternal"), b.MQTTServerInternal)...)
	}
	if t := b.TLS; t != nil && t.Enable {
		tp := p.Child("eventBusTLS")
		errs = append(errs, cfgutil.File(tp.Child("tlsMqttCAFile"), t.TLSMQTTCAFile)...)
		errs = append(errs, cfgutil.File(tp.Child("tlsMqttCertFile"), t.TLSMQTTCertFile)...)
		errs = append(errs, cfgutil.File(tp.Child("tlsMqttPrivateKeyFile"), t.TLSMQTTPrivateKeyFile)...)
	}
	return errs
}

// mqttURL requires scheme://host:port: MQTT clients have no default port to
// fall back on that holds across schemes.
func mqttURL(p *field.Path, s string) field.ErrorList {
	if errs := cfgutil.URL(p, s, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); len(errs) > 0 {
		return errs
	}
	if u, err := url.Parse(s); err != nil || u.Port() == "" {
		return field.ErrorList{field.Invalid(p, s, "must include a port, e.g. tcp://127.0.0.1:1883")}
	}
	return nil
}
