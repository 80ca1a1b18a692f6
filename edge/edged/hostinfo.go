package edged

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/klog/v2"
)

// hostInfo holds the facts about the host that do not change while edgecore runs. Unreadable files leave
// fields empty: node status reports what it can rather than failing.
type hostInfo struct {
	memoryBytes int64
	kernel      string
	osImage     string
	machineID   string
	systemUUID  string
	bootID      string
}

func readHostInfo(root string) hostInfo {
	read := func(path string) string {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			klog.V(4).InfoS("Host fact unavailable", "file", path, "err", err)
			return ""
		}
		return string(bytes.TrimSpace(b))
	}
	h := hostInfo{
		kernel:     read("proc/sys/kernel/osrelease"),
		machineID:  read("etc/machine-id"),
		systemUUID: strings.ToLower(read("sys/class/dmi/id/product_uuid")),
		bootID:     read("proc/sys/kernel/random/boot_id"),
	}
	h.memoryBytes = memTotal(read("proc/meminfo"))
	h.osImage = prettyName(read("etc/os-release"))
	return h
}

// memTotal parses "MemTotal:  16318480 kB" from /proc/meminfo.
func memTotal(meminfo string) int64 {
	sc := bufio.NewScanner(strings.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "MemTotal:" {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 2 && strings.EqualFold(f[2], "kB") {
			n *= 1024
		}
		return n
	}
	return 0
}

func prettyName(osRelease string) string {
	for line := range strings.Lines(osRelease) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// detectNodeIP picks the address of the default-route interface, as kubelet does without --node-ip.
func detectNodeIP() string {
	ip, err := utilnet.ChooseHostInterface()
	if err != nil || ip == nil {
		return ""
	}
	return ip.String()
}

// NodeIP is the configured node IP, or the detected one; pods report it as status.hostIP.
func NodeIP(configured string) string {
	if configured != "" {
		return configured
	}
	return detectNodeIP()
}
