package daemon

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// WriteFileAtomic replaces path in one rename, so that a crash never leaves half a config, unit or PID file
// and readers see the old file or the new one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return replaceFile(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// InstallBinary copies src to the daemon's binary, by write and rename: writing over a running binary in
// place fails with ETXTBSY. It copies nothing when src is the installed binary already, since reinstalling
// from the install location would otherwise read a file it is replacing.
func (d Daemon) InstallBinary(src string) (copied bool, err error) {
	dst := d.Binary()
	if SameFile(src, dst) {
		return false, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	err = replaceFile(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
	return err == nil, err
}

// SameFile reports whether a and b both exist and are one file (the same path, or links to one inode).
func SameFile(a, b string) bool {
	ai, err := os.Stat(a)
	if err != nil {
		return false
	}
	bi, err := os.Stat(b)
	return err == nil && os.SameFile(ai, bi)
}

// replaceFile writes a temporary file next to path, created exclusively and private until the mode is set, so
// that a secret (edgecore.yaml holds the join token) is never readable half-written, then renames it over
// path.
func replaceFile(path string, mode os.FileMode, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	err = fill(tmp)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// leftovers lists replaceFile's temporary files for path: "." + name + "." + the digits CreateTemp adds.
func leftovers(path string) []string {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil
	}
	prefix := "." + filepath.Base(path) + "."
	var out []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			out = append(out, filepath.Join(filepath.Dir(path), e.Name()))
		}
	}
	return out
}

// Tail returns up to n last lines of the file at path, without trailing blank lines; nil when it cannot be
// read or is empty. Only the end of the file is read, since a daemon's log grows without bound.
func Tail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		_, _ = f.Seek(st.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" || n <= 0 {
		return nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
