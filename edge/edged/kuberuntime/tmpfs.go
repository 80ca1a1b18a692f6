package kuberuntime

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
)

// Secrets (and projected volumes, which carry service account tokens) and emptyDirs with medium Memory live on
// a tmpfs of their own under the pod's volume directory, as with the kubelet: a secret never reaches the disk,
// where it would outlive the pod in free blocks and backups, and a memory emptyDir really is memory.
// ConfigMap and downward API volumes stay on disk. The tmpfs is mounted before anything is written, and
// unmounted when the pod is removed (KillPod).

// Root directory modes of the memory-backed volumes: every container user may read a secret volume (its files
// carry their own modes) but only Edged writes it; an emptyDir is writable by any container user, as on disk.
const (
	secretTmpfsMode   = 0o755
	emptyDirTmpfsMode = 0o777
)

// memoryVolumeSize is the kubelet's size for a memory-backed volume (emptydir calculateEmptyDirMemorySize):
// node allocatable memory, lowered to the pod's memory limit when every container has one, lowered again to
// the volume's sizeLimit. Without a size, tmpfs would take half the host's memory.
func (m *Manager) memoryVolumeSize(pod *corev1.Pod, sizeLimit *resource.Quantity) int64 {
	size := m.nodeMemory()
	if lim := podMemoryLimit(pod); lim > 0 && (size == 0 || lim < size) {
		size = lim
	}
	if sizeLimit != nil {
		if v := sizeLimit.Value(); v > 0 && (size == 0 || v < size) {
			size = v
		}
	}
	return size
}

// nodeMemory is the memory pods may use: NodeAllocatable's when configured, else the host's total.
func (m *Manager) nodeMemory() int64 {
	if q, ok := m.opts.NodeAllocatable[corev1.ResourceMemory]; ok && q.Value() > 0 {
		return q.Value()
	}
	return hostMemory()
}

// hostMemory is MemTotal from /proc/meminfo, in bytes; 0 if unreadable.
var hostMemory = sync.OnceValue(func() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "MemTotal:       24683772 kB"
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			if fields := strings.Fields(rest); len(fields) > 0 {
				if kb, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
})

// podMemoryLimit is the pod's memory limit as its cgroup gets it: the larger of the regular containers' sum and
// the largest init container's, and 0 (none) when any container has no limit.
func podMemoryLimit(pod *corev1.Pod) int64 {
	var sum, maxInit int64
	for _, c := range pod.Spec.Containers {
		v := c.Resources.Limits.Memory().Value()
		if v == 0 {
			return 0
		}
		sum += v
	}
	for _, c := range pod.Spec.InitContainers {
		v := c.Resources.Limits.Memory().Value()
		if v == 0 {
			return 0
		}
		maxInit = max(maxInit, v)
	}
	return max(sum, maxInit)
}

// ensureTmpfs makes dir a tmpfs mount of the given size (bytes; 0 is the kernel default) and root mode. It is
// idempotent: a tmpfs already mounted there, e.g. before an edgecore restart, is kept with its content.
func ensureTmpfs(dir string, size int64, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	mounted, err := isTmpfsMount(dir)
	if err != nil || mounted {
		return err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		// Written to disk by an Edged from before memory-backed volumes. Running containers bind-mounted this
		// directory and keep seeing it, so it stays until the pod is removed; new containers get the tmpfs.
		klog.InfoS("Volume has content on disk from an earlier Edged; mounting tmpfs over it", "path", dir)
	}
	opts := "mode=" + strconv.FormatUint(uint64(mode.Perm()), 8)
	if size > 0 {
		opts += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs (%s) on %s: %w", opts, dir, err)
	}
	klog.V(2).InfoS("Mounted tmpfs", "path", dir, "options", opts)
	return nil
}

// isTmpfsMount reports whether dir is the root of a tmpfs mount: a tmpfs whose device differs from its
// parent's (every tmpfs mount is a file system of its own).
func isTmpfsMount(dir string) (bool, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		return false, nil
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(dir), err)
	}
	return st.Dev != parent.Dev, nil
}
