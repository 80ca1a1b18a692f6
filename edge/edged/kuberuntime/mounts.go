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
	"k8s.io/klog/v2"
)

// Edged mounts into pod directories (tmpfs for secrets and memory emptyDirs, subPath binds), so a pod directory
// must never be removed while something is mounted in it: removing through a bind mount deletes the files of
// whatever it shows, which may be a hostPath.

const mountInfoPath = "/proc/self/mountinfo"

// mountPoints lists the mount points of Edged's mount namespace, as the kernel shows them (real paths).
func mountPoints() ([]string, error) {
	b, err := os.ReadFile(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", mountInfoPath, err)
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the fifth field is the mount point.
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMountInfo(fields[4]))
	}
	return out, nil
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for space, \011, \012, \134).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// realPath resolves symlinks in path (the kernel lists mount points by real path); "" if it does not exist.
func realPath(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", path, err)
	}
	return real, nil
}

// isMountPoint reports whether something is mounted on path.
func isMountPoint(path string) (bool, error) {
	real, err := realPath(path)
	if err != nil || real == "" {
		return false, err
	}
	mps, err := mountPoints()
	if err != nil {
		return false, err
	}
	return slices.Contains(mps, real), nil
}

// mountsUnder lists the mount points strictly below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	real, err := realPath(dir)
	if err != nil || real == "" {
		return nil, err
	}
	mps, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mp := range mps {
		if strings.HasPrefix(mp, real+"/") && !slices.Contains(out, mp) {
			out = append(out, mp)
		}
	}
	// Deeper first, so a mount inside another mount goes before it.
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

// unmountUnder unmounts everything mounted below dir and checks nothing is left. Stacked mounts on one point
// are unmounted one after the other.
func unmountUnder(dir string) error {
	for range 8 {
		mps, err := mountsUnder(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps {
			err := unix.Unmount(mp, 0)
			if errors.Is(err, unix.EBUSY) {
				// Something still holds it (a process cwd, a late container teardown): detach it from the tree
				// now; the kernel frees it once unused.
				err = unix.Unmount(mp, unix.MNT_DETACH)
			}
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
			klog.V(3).InfoS("Unmounted", "path", mp)
		}
	}
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		return fmt.Errorf("still mounted under %s: %s", dir, strings.Join(mps, ", "))
	}
	return nil
}

// removePodDir removes a pod directory once nothing is mounted in it, without ever crossing into another
// file system: if a mount appeared anyway, removal stops there rather than deleting its content.
func removePodDir(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return removeAllOneFS(dir)
}

// removeAllOneFS is os.RemoveAll that refuses to descend into a directory of another file system.
func removeAllOneFS(dir string) error {
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return removeOneFS(dir, root.Dev)
}

func removeOneFS(path string, dev uint64) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	if st.Dev != dev {
		return fmt.Errorf("remove %s: it is a mount point (another file system); not removing through it", path)
	}
	entries, err := os.ReadDir(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	for _, e := range entries {
		if err := removeOneFS(filepath.Join(path, e.Name()), dev); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// UnmountAll unmounts whatever Edged mounted for pods under rootDir (its rootDirectory), for tools and tests that
// remove a node's files without going through KillPod. Running containers keep their own copies of the mounts.
func UnmountAll(rootDir string) error {
	return unmountUnder(filepath.Join(rootDir, "pods"))
}
