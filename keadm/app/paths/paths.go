// Package paths is where keadm puts things on a host. Everything defaults to KubeEdge's locations and moves
// under a root directory (--root), so tests and several nodes can share one machine.
package paths

import "path/filepath"

// Layout resolves KubeEdge's well-known paths under Root ("/" on a real host).
type Layout struct {
	Root string
}

func (l Layout) join(p string) string {
	if l.Root == "" {
		return p
	}
	return filepath.Join(l.Root, p)
}

// ConfigDir holds cloudcore.yaml / edgecore.yaml.
func (l Layout) ConfigDir() string { return l.join("/etc/kubeedge/config") }

// CloudCoreConfig is cloudcore's config file.
func (l Layout) CloudCoreConfig() string { return l.join("/etc/kubeedge/config/cloudcore.yaml") }

// EdgeCoreConfig is edgecore's config file.
func (l Layout) EdgeCoreConfig() string { return l.join("/etc/kubeedge/config/edgecore.yaml") }

// CADir holds rootCA.crt (and the CA key on the cloud).
func (l Layout) CADir() string { return l.join("/etc/kubeedge/ca") }

// CertsDir holds server.crt/server.key.
func (l Layout) CertsDir() string { return l.join("/etc/kubeedge/certs") }

// StateDir is /var/lib/kubeedge: edgecore.db and other state.
func (l Layout) StateDir() string { return l.join("/var/lib/kubeedge") }

// KubeletDir is edged's root directory (pod volumes).
func (l Layout) KubeletDir() string { return l.join("/var/lib/kubelet") }

// LogDir holds daemon logs when there is no systemd.
func (l Layout) LogDir() string { return l.join("/var/log/kubeedge") }

// PodLogsDir holds container logs.
func (l Layout) PodLogsDir() string { return l.join("/var/log/pods") }

// BinDir receives the cloudcore/edgecore/keadm binaries.
func (l Layout) BinDir() string { return l.join("/usr/local/bin") }

// SystemdDir receives the unit files.
func (l Layout) SystemdDir() string { return l.join("/etc/systemd/system") }

// RunDir holds PID files of daemons supervised without systemd.
func (l Layout) RunDir() string { return l.join("/var/run/kubeedge") }
