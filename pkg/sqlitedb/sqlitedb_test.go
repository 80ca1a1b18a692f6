package sqlitedb

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestStringSetPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "edgecore.db")
	s, err := OpenStringSet(ctx, path, "sub_topics", "topic", "subscription")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"b", "a", "b"} {
		if err := s.Add(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "missing"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStringSet(ctx, path, "sub_topics", "topic", "subscription")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List(ctx)
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("List after reopen = %v, %v; want [a b]", got, err)
	}
	var journal string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal); err != nil || journal != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", journal, err)
	}
}

func TestNilStringSetKeepsNothing(t *testing.T) {
	s, err := OpenStringSet(context.Background(), "", "t", "c", "thing")
	if err != nil || s != nil {
		t.Fatalf("OpenStringSet with no path = %v, %v; want nil, nil", s, err)
	}
	ctx := context.Background()
	if err := s.Add(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(ctx); err != nil || got != nil {
		t.Fatalf("List = %v, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// The database and its WAL files hold Secrets: 0600 whatever the umask, and repaired when an older version left
// them readable.
func TestFileModes(t *testing.T) {
	tests := []struct {
		name  string
		umask int
		// existing, if set, is the mode of a database and -wal file already there.
		existing os.FileMode
	}{
		{name: "umask-0", umask: 0},
		{name: "umask-022", umask: 0o022},
		{name: "umask-077", umask: 0o077},
		{name: "world-readable-leftovers", umask: 0o022, existing: 0o644},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The umask is per process: this test must not run in parallel with others that create files.
			old := syscall.Umask(tc.umask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "db")
			if err := os.MkdirAll(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "edgecore.db")
			if tc.existing != 0 {
				s, err := OpenStringSet(context.Background(), path, "t", "c", "thing")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				for _, f := range []string{path, path + "-wal"} {
					fh, err := os.OpenFile(f, os.O_CREATE|os.O_WRONLY, 0o644) // no O_TRUNC: keep the database
					if err != nil {
						t.Fatal(err)
					}
					_ = fh.Close()
					if err := os.Chmod(f, tc.existing); err != nil {
						t.Fatal(err)
					}
				}
			}
			s, err := OpenStringSet(context.Background(), path, "sub_topics", "topic", "subscription")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Add(context.Background(), "secret/topic"); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatalf("%s: %v", filepath.Base(f), err)
				}
				if got := fi.Mode().Perm(); got != Mode {
					t.Errorf("%s mode = %v, want %v", filepath.Base(f), got, os.FileMode(Mode))
				}
			}
		})
	}
}

func TestSymlinkedDatabaseIsRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "edgecore.db")
	if err := os.Symlink(target, path+"-wal"); err != nil {
		t.Fatal(err)
	}
	if err := MakePrivate(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("MakePrivate with a symlinked -wal = %v, want a refusal", err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("symlink target mode changed to %v", fi.Mode().Perm())
	}
}
