package kuberuntime

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// defaultMaskedPaths are hidden from containers (runc mounts /dev/null or an empty read-only tmpfs over them):
// they leak host kernel memory (/proc/kcore), keys, timing side channels and firmware. The list is the
// kubelet's (k8s.io/kubernetes pkg/securitycontext, v1.37), itself kept in step with moby's, including the
// per-CPU thermal_throttle directories that exist on this host. Computed once: CPUs do not come and go.
var defaultMaskedPaths = sync.OnceValue(func() []string {
	paths := []string{
		"/proc/asound",
		"/proc/acpi",
		"/proc/interrupts",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	for _, cpu := range possibleCPUs() {
		p := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/thermal_throttle", cpu)
		if _, err := os.Stat(p); err == nil {
			paths = append(paths, p)
		}
	}
	return paths
})

// defaultReadonlyPaths stay readable but not writable: writing them reconfigures the host kernel
// (/proc/sys, /proc/sysrq-trigger). The kubelet's list.
var defaultReadonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// maskedPaths is the CRI MaskedPaths for a container: none for procMount Unmasked (an empty, non-nil list, as
// the kubelet sends it), the defaults otherwise. The list is copied: the CRI request must not alias it.
func maskedPaths(pm *corev1.ProcMountType) []string {
	if pm != nil && *pm == corev1.UnmaskedProcMount {
		return []string{}
	}
	return append([]string(nil), defaultMaskedPaths()...)
}

// readonlyPaths is the CRI ReadonlyPaths for a container, with the same rule as maskedPaths.
func readonlyPaths(pm *corev1.ProcMountType) []string {
	if pm != nil && *pm == corev1.UnmaskedProcMount {
		return []string{}
	}
	return append([]string(nil), defaultReadonlyPaths...)
}

// possibleCPUs lists the CPUs the kernel may ever bring online (/sys/devices/system/cpu/possible, e.g.
// "0-3,8"), falling back to the ones Go sees.
func possibleCPUs() []int {
	if cpus := parseCPUList(readTrimmed("/sys/devices/system/cpu/possible")); cpus != nil {
		return cpus
	}
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseCPUList parses the kernel's CPU list format; nil when s is empty or malformed.
func parseCPUList(s string) []int {
	if s == "" {
		return nil
	}
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return nil
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil
			}
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
