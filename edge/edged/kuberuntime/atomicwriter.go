package kuberuntime

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fileData is one file of a ConfigMap, Secret, downward API or projected volume.
type fileData struct {
	data []byte
	mode os.FileMode
}

const (
	dataLink    = "..data"
	dataTmpLink = "..data_tmp"
	revPrefix   = "..rev-"
)

// writeAtomic makes dir hold exactly the payload, the way the kubelet's atomic writer does: the files live in a
// hidden revision directory, "..data" points at the current one, and each visible name is a symlink through
// "..data". Swapping "..data" is one rename, so a process in the container sees the old set or the new one,
// never a mix; the bind mount of dir sees updates because only entries inside it change. Returns whether
// anything changed.
func writeAtomic(dir string, payload map[string]fileData) (bool, error) {
	top := map[string]bool{}
	for p := range payload {
		if err := validPayloadPath(p); err != nil {
			return false, err
		}
		first, _, _ := strings.Cut(p, "/")
		top[first] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	current, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil && !os.IsNotExist(err) {
		return false, err
	}
	if current != "" && sameContent(filepath.Join(dir, current), payload) && linksCurrent(dir, top) {
		return false, nil
	}

	rev, err := os.MkdirTemp(dir, revPrefix)
	if err != nil {
		return false, err
	}
	// MkdirTemp makes 0700; containers running as another user must be able to read.
	if err := os.Chmod(rev, 0o755); err != nil {
		return false, err
	}
	for p, f := range payload {
		full := filepath.Join(rev, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return false, err
		}
		// WriteFile's mode is filtered by the umask; the volume's mode is not.
		if err := os.Chmod(full, f.mode); err != nil {
			return false, err
		}
	}
	if err := replaceSymlink(filepath.Base(rev), filepath.Join(dir, dataLink), filepath.Join(dir, dataTmpLink)); err != nil {
		return false, err
	}
	for name := range top {
		if err := replaceSymlink(filepath.Join(dataLink, name), filepath.Join(dir, name), filepath.Join(dir, dataTmpLink)); err != nil {
			return false, err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == dataLink || name == filepath.Base(rev):
		case strings.HasPrefix(name, ".."), !top[name]:
			// Old revisions and keys that left the payload.
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// replaceSymlink points link at target atomically (create aside, then rename over).
func replaceSymlink(target, link, tmp string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if fi, err := os.Lstat(link); err == nil && fi.IsDir() {
		// A real directory (not ours) cannot be renamed over; clear it first.
		if err := os.RemoveAll(link); err != nil {
			return err
		}
	}
	return os.Rename(tmp, link)
}

func validPayloadPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty file path")
	case filepath.IsAbs(p):
		return fmt.Errorf("file path %q must be relative", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("file path %q must not start with '..'", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("file path %q is not clean", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("file path %q must not contain '..'", p)
		}
	}
	return nil
}

// sameContent reports whether rev holds exactly the payload, bytes and modes.
func sameContent(rev string, payload map[string]fileData) bool {
	seen := 0
	err := filepath.WalkDir(rev, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(rev, p)
		if err != nil {
			return err
		}
		want, ok := payload[rel]
		if !ok {
			return fs.ErrExist
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() != want.mode.Perm() {
			return fs.ErrExist
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want.data) {
			return fs.ErrExist
		}
		seen++
		return nil
	})
	return err == nil && seen == len(payload)
}

func linksCurrent(dir string, top map[string]bool) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	visible := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if !top[e.Name()] {
			return false
		}
		if cur, err := os.Readlink(filepath.Join(dir, e.Name())); err != nil || cur != filepath.Join(dataLink, e.Name()) {
			return false
		}
		visible++
	}
	return visible == len(top)
}
