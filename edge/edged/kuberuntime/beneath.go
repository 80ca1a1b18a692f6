package kuberuntime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Resolving a path inside a directory a container can write to (a subPath inside a volume) must neither follow
// a symlink the container planted to somewhere outside, nor be fooled by a container swapping a directory for
// such a symlink between our check and our use (CVE-2017-1002101, CVE-2021-25741). So nothing here returns a
// path to check and use later: it returns an open file descriptor of the very file resolved, which a later swap
// cannot redirect, and that descriptor is what gets bind-mounted (subpath.go).

// errEscapes means a path resolves outside the directory it must stay in.
var errEscapes = errors.New("resolves outside its volume")

// errChanged means the path changed while it was being resolved: a component became a symlink.
var errChanged = errors.New("changed while it was being resolved (a directory was replaced by a symlink)")

// haveOpenat2 probes once whether the kernel has openat2 (Linux 5.6); a seccomp filter may deny it too.
var haveOpenat2 = sync.OnceValue(func() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC})
	if err != nil {
		return false
	}
	_ = unix.Close(fd)
	return true
})

// openBeneath opens rel, relative to the directory root, as an O_PATH descriptor. Symlinks are followed only
// while they stay below root; anything reaching outside fails with errEscapes. A missing component fails with
// an error matching fs.ErrNotExist.
func openBeneath(root *os.File, rel string) (*os.File, error) {
	if haveOpenat2() {
		return openBeneath2(root, rel)
	}
	return openBeneathWalk(root, rel)
}

// openBeneath2 lets the kernel resolve rel atomically: RESOLVE_BENEATH refuses absolute symlinks and ".." above
// root, RESOLVE_NO_MAGICLINKS refuses /proc/*/fd-style links that could jump anywhere.
func openBeneath2(root *os.File, rel string) (*os.File, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(int(root.Fd()), rel, how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), filepath.Join(root.Name(), rel)), nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			// The kernel saw a concurrent rename and could not prove the result safe: try again.
			continue
		case errors.Is(err, unix.EXDEV):
			return nil, errEscapes
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%s: %w", rel, fs.ErrNotExist)
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("%s: too many levels of symlinks, or a magic link: %w", rel, err)
		default:
			return nil, fmt.Errorf("open %s: %w", rel, err)
		}
	}
	return nil, fmt.Errorf("open %s: kept changing while being resolved", rel)
}

// openBeneathWalk is the kubelet's method for kernels without openat2: resolve the symlinks by path, check the
// result stays below root, then open it component by component with O_NOFOLLOW from root's descriptor. A
// component swapped for a symlink after the check makes the walk fail (errChanged); it never leads outside.
func openBeneathWalk(root *os.File, rel string) (*os.File, error) {
	// The real path of what root's descriptor holds, not of the name it was opened by.
	realRoot, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(root.Fd())))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", root.Name(), err)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(realRoot, rel))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Either truly missing, or a symlink to a missing target: outside targets still fail below on retry.
			return nil, fmt.Errorf("%s: %w", rel, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("resolve %s: %w", rel, err)
	}
	inside, err := filepath.Rel(realRoot, resolved)
	if err != nil || inside == ".." || strings.HasPrefix(inside, "../") {
		return nil, errEscapes
	}
	if walkHook != nil {
		walkHook()
	}
	fd, err := unix.Dup(int(root.Fd()))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", rel, err)
	}
	if inside != "." {
		for _, comp := range strings.Split(inside, "/") {
			next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			_ = unix.Close(fd)
			if err != nil {
				if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
					return nil, fmt.Errorf("%s: %w", rel, errChanged)
				}
				if errors.Is(err, unix.ENOENT) {
					return nil, fmt.Errorf("%s: %w", rel, fs.ErrNotExist)
				}
				return nil, fmt.Errorf("open %s: %w", rel, err)
			}
			fd = next
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				_ = unix.Close(fd)
				return nil, fmt.Errorf("stat %s: %w", rel, err)
			}
			// O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing: refuse it here.
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				_ = unix.Close(fd)
				return nil, fmt.Errorf("%s: %w", rel, errChanged)
			}
		}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root.Name(), rel)), nil
}

// walkHook runs between openBeneathWalk's check and its walk; tests use it to race the resolution.
var walkHook func()

// mkdirAllBeneath creates the missing directories of rel below root with mode (not filtered by the umask), each
// parent reached through openBeneath, so a racing container cannot make us create directories elsewhere.
func mkdirAllBeneath(root *os.File, rel string, mode os.FileMode) error {
	comps := strings.Split(filepath.Clean(rel), "/")
	for i, comp := range comps {
		parent, err := openBeneath(root, filepath.Join(append([]string{"."}, comps[:i]...)...))
		if err != nil {
			return fmt.Errorf("create %s: %w", rel, err)
		}
		err = unix.Mkdirat(int(parent.Fd()), comp, uint32(mode.Perm()))
		if err == nil {
			// Fix the mode the umask took off, on the directory just made: opened without following, so a
			// symlink swapped in meanwhile fails instead of having its target's mode changed.
			dfd, oerr := unix.Openat(int(parent.Fd()), comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if oerr == nil {
				err = unix.Fchmod(dfd, uint32(mode.Perm()))
				_ = unix.Close(dfd)
			} else {
				err = oerr
			}
		} else if errors.Is(err, unix.EEXIST) {
			err = nil
		}
		_ = parent.Close()
		if err != nil {
			return fmt.Errorf("create %s: %w", filepath.Join(comps[:i+1]...), err)
		}
	}
	return nil
}
