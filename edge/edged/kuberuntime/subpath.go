package kuberuntime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// subPathsDir holds the per-container bind mounts of subPaths, where the kubelet keeps them:
// {pod dir}/volume-subpaths/{volume}/{container}/{volumeMount index}.
const subPathsDir = "volume-subpaths"

// validSubPath applies the kubelet's rules, with its messages: relative, and no ".." anywhere.
func validSubPath(subPath string) error {
	if filepath.IsAbs(subPath) {
		return fmt.Errorf("error SubPath `%s` must not be an absolute path", subPath)
	}
	if slices.Contains(strings.Split(filepath.ToSlash(subPath), "/"), "..") {
		return fmt.Errorf("unable to provision SubPath `%s`: must not contain '..'", subPath)
	}
	return nil
}

// expandSubPathExpr expands a volumeMount's subPathExpr with the container's environment, as the kubelet does:
// every variable it names must be set and not empty, or the container does not start.
func expandSubPathExpr(expr string, env []*runtimeapi.KeyValue) (string, error) {
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		vars[kv.GetKey()] = string(kv.GetValue())
	}
	var missing []string
	out := expandWith(expr, func(name string) (string, bool) {
		v, ok := vars[name]
		if !ok || v == "" {
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
			return "", true
		}
		return v, true
	})
	if len(missing) > 0 {
		slices.Sort(missing)
		return "", fmt.Errorf("subPathExpr %q: missing value for %s", expr, strings.Join(missing, ", "))
	}
	return out, nil
}

// subPathSource gives the runtime a host path for the subPath of a volumeMount that is guaranteed to be inside
// the volume. Handing the runtime volPath/subPath would let a container that can write the volume redirect the
// mount anywhere on the host with a symlink, even one swapped in after any check (CVE-2017-1002101). Instead the
// subPath is opened below the volume (openBeneath), created first if missing as the kubelet does, and that
// open file is bind-mounted through /proc/self/fd onto a target only Edged can write; the runtime mounts the
// target. Targets stay until the pod is removed (unmountUnder in KillPod).
func (m *Manager) subPathSource(pod *corev1.Pod, c *corev1.Container, index int, volName, subPath, volPath string) (string, error) {
	if err := validSubPath(subPath); err != nil {
		return "", err
	}
	root, err := os.OpenFile(volPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("subPath %q: open volume: %w", subPath, err)
	}
	defer func() { _ = root.Close() }()
	src, err := openBeneath(root, subPath)
	if errors.Is(err, fs.ErrNotExist) {
		// Created with the volume's own mode, as the kubelet does, so e.g. an emptyDir's subdirectory is as
		// writable as the emptyDir.
		var fi os.FileInfo
		if fi, err = root.Stat(); err != nil {
			return "", fmt.Errorf("subPath %q: %w", subPath, err)
		}
		if err = mkdirAllBeneath(root, subPath, fi.Mode().Perm()); err == nil {
			src, err = openBeneath(root, subPath)
		}
	}
	if err != nil {
		if errors.Is(err, errEscapes) {
			return "", fmt.Errorf("subPath %q %w", subPath, err)
		}
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	defer func() { _ = src.Close() }()
	target := filepath.Join(m.podDir(string(pod.UID)), subPathsDir, volName, c.Name, strconv.Itoa(index))
	if err := bindFD(src, target); err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	return target, nil
}

// bindHook runs between resolving a subPath and bind-mounting it; tests use it to race the bind.
var bindHook func()

// bindFD bind-mounts the file open as src onto target. A target already holding a bind of the same file is
// kept (a restarted container gets the mount its predecessor had); one holding anything else is replaced.
func bindFD(src *os.File, target string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("stat the resolved subPath: %w", err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	mounted, err := isMountPoint(target)
	if err != nil {
		return err
	}
	if mounted {
		var tst unix.Stat_t
		if err := unix.Lstat(target, &tst); err == nil && tst.Dev == st.Dev && tst.Ino == st.Ino {
			return nil
		}
		// Lazily: a container started from the old mount keeps its own copy of it anyway.
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount stale subPath bind %s: %w", target, err)
		}
	}
	if err := prepareBindTarget(target, isDir); err != nil {
		return err
	}
	if bindHook != nil {
		bindHook()
	}
	// The kernel resolves the magic link to the open file itself, whatever its path has become since.
	source := "/proc/self/fd/" + strconv.Itoa(int(src.Fd()))
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount the resolved subPath on %s: %w", target, err)
	}
	klog.V(3).InfoS("Bound subPath", "target", target)
	return nil
}

// prepareBindTarget makes target an empty directory (for a directory) or empty file (for anything else: a file
// target takes any non-directory), replacing an unmounted leftover of the other kind.
func prepareBindTarget(target string, isDir bool) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return fmt.Errorf("create subPath bind target directory: %w", err)
	}
	if fi, err := os.Lstat(target); err == nil && fi.IsDir() != isDir {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("replace subPath bind target %s: %w", target, err)
		}
	}
	if isDir {
		if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create subPath bind target %s: %w", target, err)
		}
		return nil
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create subPath bind target %s: %w", target, err)
	}
	return f.Close()
}
