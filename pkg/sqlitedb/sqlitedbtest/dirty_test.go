package sqlitedbtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The detector itself: a write leaves dirty pages, fsync cleans them.
func TestDirtyPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	dirty, total, err := DirtyPages(path)
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil || total == 0 || dirty == 0 {
		t.Fatalf("after a write: %d of %d pages dirty, %v; want some dirty", dirty, total, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if dirty, total, err = DirtyPages(path); err != nil || total == 0 || dirty != 0 {
		t.Fatalf("after fsync: %d of %d pages dirty, %v; want none", dirty, total, err)
	}
}

func TestCopyFiles(t *testing.T) {
	src := filepath.Join(t.TempDir(), "x.db")
	if err := os.WriteFile(src, []byte("db"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst, err := CopyFiles(src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "db" {
		t.Fatalf("copy = %q, %v", b, err)
	}
	if _, err := os.Stat(dst + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a -wal appeared in the copy: %v", err)
	}
}
