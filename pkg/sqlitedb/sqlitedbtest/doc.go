// Package sqlitedbtest helps tests check that what a module answered for is on stable storage.
//
// Copying a database after a commit does not simulate a power loss: the copy reads the page cache, which
// still holds what was written but not synced. What a power loss loses is exactly the dirty part of the page
// cache, so DirtyPages asks the kernel which pages of a file are dirty; zero dirty pages in the database and its
// -wal right after a commit means that commit survives a power loss.
package sqlitedbtest

import (
	"errors"
	"io"
	"os"
	"path/filepath"
)

// ErrUnsupported means this machine cannot tell dirty pages apart (not Linux, not root, a tmpfs file).
var ErrUnsupported = errors.New("cannot read page cache state here")

// CopyFiles copies the database at path and its -wal (if any) into dir, as a snapshot of what is on disk, and
// returns the copy's path. The -shm is left behind: SQLite rebuilds it from the WAL.
func CopyFiles(path, dir string) (string, error) {
	dst := filepath.Join(dir, filepath.Base(path))
	for _, suffix := range []string{"", "-wal"} {
		if err := copyFile(path+suffix, dst+suffix); err != nil {
			if suffix != "" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return "", err
		}
	}
	return dst, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
