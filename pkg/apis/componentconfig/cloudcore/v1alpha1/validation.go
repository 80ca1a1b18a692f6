package v1alpha1

import (
	"fmt"
	"maps"
	"net"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/internal/cfgutil"
)

// Validate checks the whole config and returns every problem found.
func (c *CloudCore) Validate() field.ErrorList {
	errs := validateTypeMeta(c)
	errs = append(errs, cfgutil.Required(field.NewPath("commonConfig"), c.CommonConfig)...)
	if c.CommonConfig != nil {
		errs = append(errs, c.CommonConfig.validate(field.NewPath("commonConfig"))...)
	}
	errs = append(errs, cfgutil.Required(field.NewPath("kubeAPIConfig"), c.KubeAPIConfig)...)
	if c.KubeAPIConfig != nil {
		errs = append(errs, c.KubeAPIConfig.validate(field.NewPath("kubeAPIConfig"))...)
	}
	p := field.NewPath("modules")
	errs = append(errs, cfgutil.Required(p, c.Modules)...)
	if c.Modules != nil {
		errs = append(errs, c.Modules.validate(p)...)
	}
	return errs
}

func validateTypeMeta(c *CloudCore) field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	return errs
}

func (c *CommonConfig) validate(p *field.Path) field.ErrorList {
	errs := cfgutil.Port(p.Child("tunnelPort"), c.TunnelPort)
	if addr := c.MonitorServer.BindAddress; addr != "" {
		errs = append(errs, cfgutil.ListenAddress(p.Child("monitorServer", "bindAddress"), addr)...)
	}
	return errs
}

func (c *KubeAPIConfig) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Master != "" {
		errs = append(errs, cfgutil.URL(p.Child("master"), c.Master, "https", "http")...)
	}
	if c.KubeConfig != "" {
		errs = append(errs, cfgutil.File(p.Child("kubeConfig"), c.KubeConfig)...)
	}
	if c.ContentType != ContentTypeProtobuf && c.ContentType != ContentTypeJSON {
		errs = append(errs, field.NotSupported(p.Child("contentType"), c.ContentType, []string{ContentTypeProtobuf, ContentTypeJSON}))
	}
	errs = append(errs, cfgutil.Positive(p.Child("qps"), c.QPS)...)
	errs = append(errs, cfgutil.Positive(p.Child("burst"), c.Burst)...)
	return errs
}

func (m *Modules) validate(p *field.Path) field.ErrorList {
	errs := cfgutil.Required(p.Child("cloudHub"), m.CloudHub)
	if m.CloudHub != nil {
		errs = append(errs, m.CloudHub.validate(p.Child("cloudHub"))...)
	}
	errs = append(errs, cfgutil.Required(p.Child("edgeController"), m.EdgeController)...)
	if ec := m.EdgeController; ec != nil && ec.Enable {
		ep := p.Child("edgeController")
		errs = append(errs, cfgutil.Positive(ep.Child("nodeUpdateFrequency"), ec.NodeUpdateFrequency)...)
		errs = append(errs, positiveValues(ep.Child("buffer"), ec.Buffer)...)
		errs = append(errs, positiveValues(ep.Child("load"), ec.Load)...)
	}
	errs = append(errs, cfgutil.Required(p.Child("deviceController"), m.DeviceController)...)
	if dc := m.DeviceController; dc != nil && dc.Enable {
		dp := p.Child("deviceController")
		errs = append(errs, positiveValues(dp.Child("buffer"), dc.Buffer)...)
		errs = append(errs, positiveValues(dp.Child("load"), dc.Load)...)
	}
	errs = append(errs, cfgutil.Required(p.Child("syncController"), m.SyncController)...)
	return errs
}

func positiveValues(p *field.Path, m map[string]int32) field.ErrorList {
	var errs field.ErrorList
	for _, k := range slices.Sorted(maps.Keys(m)) {
		errs = append(errs, cfgutil.Positive(p.Key(k), m[k])...)
	}
	return errs
}

func (h *CloudHub) validate(p *field.Path) field.ErrorList {
	if !h.Enable {
		return nil
	}
	var errs field.ErrorList
	errs = append(errs, cfgutil.Positive(p.Child("keepaliveInterval"), h.KeepaliveInterval)...)
	errs = append(errs, cfgutil.Positive(p.Child("nodeLimit"), h.NodeLimit)...)
	errs = append(errs, cfgutil.Positive(p.Child("writeTimeout"), h.WriteTimeout)...)
	errs = append(errs, cfgutil.Positive(p.Child("edgeCertSigningDuration"), h.EdgeCertSigningDuration)...)
	errs = append(errs, cfgutil.Positive(p.Child("tokenRefreshDuration"), h.TokenRefreshDuration)...)
	errs = append(errs, cfgutil.File(p.Child("tlsCAFile"), h.TLSCAFile)...)
	errs = append(errs, cfgutil.File(p.Child("tlsCAKeyFile"), h.TLSCAKeyFile)...)
	errs = append(errs, cfgutil.File(p.Child("tlsCertFile"), h.TLSCertFile)...)
	errs = append(errs, cfgutil.File(p.Child("tlsPrivateKeyFile"), h.TLSPrivateKeyFile)...)

	ap := p.Child("advertiseAddress")
	if len(h.AdvertiseAddress) == 0 {
		errs = append(errs, field.Required(ap, "must list at least one IP address edge nodes can reach cloudcore at"))
	}
	for i, a := range h.AdvertiseAddress {
		if errs2 := cfgutil.IP(ap.Index(i), a); len(errs2) > 0 {
			errs = append(errs, errs2...)
		} else if net.ParseIP(a).IsUnspecified() {
			errs = append(errs, field.Invalid(ap.Index(i), a, "must be an address edge nodes can reach, not a wildcard"))
		}
	}
	for i, n := range h.DNSNames {
		if n != "" {
			errs = append(errs, cfgutil.DNSSubdomain(p.Child("dnsNames").Index(i), n)...)
		}
	}

	errs = append(errs, h.Authorization.validate(p.Child("authorization"))...)

	if h.WebSocket == nil || h.Quic == nil || h.HTTPS == nil || h.UnixSocket == nil {
		errs = append(errs, cfgutil.Required(p.Child("websocket"), h.WebSocket)...)
		errs = append(errs, cfgutil.Required(p.Child("quic"), h.Quic)...)
		errs = append(errs, cfgutil.Required(p.Child("https"), h.HTTPS)...)
		return append(errs, cfgutil.Required(p.Child("unixsocket"), h.UnixSocket)...)
	}

	if !h.WebSocket.Enable && !h.Quic.Enable {
		errs = append(errs, field.Invalid(p.Child("websocket", "enable"), false, "websocket or quic must be enabled, or edge nodes cannot connect"))
	}
	if ws := h.WebSocket; ws.Enable {
		errs = append(errs, cfgutil.IP(p.Child("websocket", "address"), ws.Address)...)
		errs = append(errs, cfgutil.Port(p.Child("websocket", "port"), ws.Port)...)
	}
	if q := h.Quic; q.Enable {
		errs = append(errs, cfgutil.IP(p.Child("quic", "address"), q.Address)...)
		errs = append(errs, cfgutil.Port(p.Child("quic", "port"), q.Port)...)
		errs = append(errs, cfgutil.Positive(p.Child("quic", "maxIncomingStreams"), q.MaxIncomingStreams)...)
	}
	if s := h.HTTPS; s.Enable {
		errs = append(errs, cfgutil.IP(p.Child("https", "address"), s.Address)...)
		errs = append(errs, cfgutil.Port(p.Child("https", "port"), s.Port)...)
		// websocket and https are both TCP; QUIC is UDP and may share a port.
		if ws := h.WebSocket; ws.Enable && ws.Port == s.Port {
			errs = append(errs, field.Invalid(p.Child("https", "port"), s.Port,
				fmt.Sprintf("already used by %s", p.Child("websocket", "port"))))
		}
	}
	if u := h.UnixSocket; u.Enable {
		errs = append(errs, cfgutil.UnixSocket(p.Child("unixsocket", "address"), u.Address)...)
	}
	return errs
}

// validate fails closed: a mode Tether does not implement must not be mistaken for protection.
func (a *CloudHubAuthorization) validate(p *field.Path) field.ErrorList {
	if a == nil {
		return nil
	}
	var errs field.ErrorList
	for i, m := range a.Modes {
		if m.Node == nil {
			errs = append(errs, field.Invalid(p.Child("modes").Index(i), "{}",
				"only the node mode is implemented (Tether's node authorizer, always on); remove this entry"))
		}
	}
	return errs
}
