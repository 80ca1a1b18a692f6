package cfgutil

import (
	"os"
	"strings"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// Hostname is the default node name: the OS hostname lower-cased, because
// Kubernetes node names must be lower-case DNS subdomains while hostnames
// often are not. It is "" when the hostname cannot be read, which validation
// then reports.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h))
}

// HostIP is the address of the interface carrying the default route — the
// best guess, without any configuration, for the address peers reach this
// host at. Loopback is the fallback so that defaults stay valid on isolated
// machines; users of real clusters set the address explicitly.
func HostIP() string {
	ip, err := utilnet.ChooseHostInterface()
	if err != nil || ip == nil {
		return "127.0.0.1"
	}
	return ip.String()
}
