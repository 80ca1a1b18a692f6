package store

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/tether-edge/tether/pkg/sqlitedb"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "edgecore.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func pod(uid, rv, name string) string {
	return fmt.Sprintf(`{"kind":"Pod","metadata":{"name":%q,"uid":%q,"resourceVersion":%q}}`, name, uid, rv)
}

func keys(ms []Meta) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Key)
	}
	return out
}

func TestCRUD(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	rows := []Meta{
		{Key: "default/pod/a", Type: "pod", Value: pod("u1", "1", "a")},
		{Key: "default/pod/b", Type: "pod", Value: pod("u2", "1", "b")},
		{Key: "kube-system/pod/c", Type: "pod", Value: pod("u3", "1", "c")},
		{Key: "default/configmap/a", Type: "configmap", Value: `{"data":{}}`},
		{Key: "default/podpatch/a", Type: "podpatch", Value: `{"status":{}}`},
		{Key: "default/pod_x/a", Type: "pod_x", Value: `{}`}, // '_' is a LIKE wildcard; must not match "default/pod/"
	}
	for _, r := range rows {
		if res, err := s.Upsert(ctx, r); err != nil || res != Inserted {
			t.Fatalf("Upsert(%s) = %v, %v; want inserted", r.Key, res, err)
		}
	}

	tests := []struct {
		name string
		list func() ([]Meta, error)
		want []string
	}{
		{"by type pod", func() ([]Meta, error) { return s.ListByType(ctx, "pod") },
			[]string{"default/pod/a", "default/pod/b", "kube-system/pod/c"}},
		{"by type none", func() ([]Meta, error) { return s.ListByType(ctx, "secret") }, nil},
		{"by prefix default pods", func() ([]Meta, error) { return s.ListByPrefix(ctx, "default/pod/") },
			[]string{"default/pod/a", "default/pod/b"}},
		{"by prefix default", func() ([]Meta, error) { return s.ListByPrefix(ctx, "default/") },
			[]string{"default/configmap/a", "default/pod/a", "default/pod/b", "default/pod_x/a", "default/podpatch/a"}},
		{"all", func() ([]Meta, error) { return s.ListByPrefix(ctx, "") }, keys(sortedRows(rows))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.list()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys(got), tc.want) {
				t.Errorf("keys = %q, want %q", keys(got), tc.want)
			}
		})
	}

	got, err := s.Get(ctx, "default/pod/a")
	if err != nil || got != rows[0] {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, rows[0])
	}
	upd := Meta{Key: "default/pod/a", Type: "pod", Value: pod("u1", "2", "a")}
	if res, err := s.Upsert(ctx, upd); err != nil || res != Updated {
		t.Fatalf("Upsert update = %v, %v; want updated", res, err)
	}
	if got, _ := s.Get(ctx, upd.Key); got != upd {
		t.Errorf("after update Get = %+v, want %+v", got, upd)
	}
	if n, err := s.Delete(ctx, "default/pod/a", "default/pod/missing"); err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1", n, err)
	}
	if _, err := s.Get(ctx, "default/pod/a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get deleted = %v, want ErrNotFound", err)
	}
}

func sortedRows(rows []Meta) []Meta {
	out := slices.Clone(rows)
	slices.SortFunc(out, func(a, b Meta) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out
}

func TestUpsertStaleGuard(t *testing.T) {
	tests := []struct {
		name      string
		stored    string
		incoming  string
		want      Result
		wantValue string // empty: incoming
	}{
		{"same uid older rv is stale", pod("u1", "10", "a"), pod("u1", "9", "a"), Stale, pod("u1", "10", "a")},
		{"same uid newer rv replaces", pod("u1", "10", "a"), pod("u1", "11", "a"), Updated, ""},
		{"same uid same rv replaces (duplicate delivery)", pod("u1", "10", "a"), pod("u1", "10", "a"), Updated, ""},
		{"numeric not lexical order", pod("u1", "9", "a"), pod("u1", "10", "a"), Updated, ""},
		{"different uid replaces (recreated)", pod("u1", "10", "a"), pod("u2", "3", "a"), Updated, ""},
		{"incoming without uid replaces", pod("u1", "10", "a"), `{"status":{"phase":"Running"}}`, Updated, ""},
		{"non-numeric incoming rv replaces", pod("u1", "10", "a"), pod("u1", "abc", "a"), Updated, ""},
		{"non-numeric stored rv replaces", pod("u1", "abc", "a"), pod("u1", "1", "a"), Updated, ""},
		{"stored not JSON replaces", "garbage", pod("u1", "1", "a"), Updated, ""},
		{"incoming not JSON replaces", pod("u1", "10", "a"), "plain text", Updated, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openTemp(t)
			const key = "default/pod/a"
			if _, err := s.Upsert(ctx, Meta{Key: key, Type: "pod", Value: tc.stored}); err != nil {
				t.Fatal(err)
			}
			res, err := s.Upsert(ctx, Meta{Key: key, Type: "pod", Value: tc.incoming})
			if err != nil || res != tc.want {
				t.Fatalf("Upsert = %v, %v; want %v", res, err, tc.want)
			}
			want := tc.wantValue
			if want == "" {
				want = tc.incoming
			}
			got, err := s.Get(ctx, key)
			if err != nil || got.Value != want {
				t.Errorf("stored = %q, %v; want %q", got.Value, err, want)
			}
			all, _ := s.ListByPrefix(ctx, "")
			if len(all) != 1 {
				t.Errorf("rows = %d, want 1 (no duplicates)", len(all))
			}
		})
	}
}

func TestDeleteIfUID(t *testing.T) {
	tests := []struct {
		name        string
		uid         string
		seed        bool
		wantDeleted bool
	}{
		{"same uid removes pod and patch", "u1", true, true},
		{"other uid keeps both", "u2", true, false},
		{"missing row", "u1", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openTemp(t)
			if tc.seed {
				for _, m := range []Meta{
					{Key: "default/pod/a", Type: "pod", Value: pod("u1", "5", "a")},
					{Key: "default/podpatch/a", Type: "podpatch", Value: `{}`},
				} {
					if _, err := s.Upsert(ctx, m); err != nil {
						t.Fatal(err)
					}
				}
			}
			deleted, err := s.DeleteIfUID(ctx, "default/pod/a", tc.uid, "default/podpatch/a")
			if err != nil || deleted != tc.wantDeleted {
				t.Fatalf("DeleteIfUID = %v, %v; want %v", deleted, err, tc.wantDeleted)
			}
			left, _ := s.ListByPrefix(ctx, "")
			wantLeft := 0
			if tc.seed && !tc.wantDeleted {
				wantLeft = 2
			}
			if len(left) != wantLeft {
				t.Errorf("rows left = %q, want %d", keys(left), wantLeft)
			}
		})
	}
	s := openTemp(t)
	if _, err := s.DeleteIfUID(t.Context(), "default/pod/a", ""); err == nil {
		t.Error("DeleteIfUID with empty uid: want error")
	}
}

// TestConcurrentWritersAndReaders is the "database is locked" regression
// test: many goroutines write and read at once and none may fail.
func TestConcurrentWritersAndReaders(t *testing.T) {
	s := openTemp(t)
	const writers, readers, perWriter = 8, 4, 100
	g, ctx := errgroup.WithContext(t.Context())
	for w := range writers {
		g.Go(func() error {
			for i := range perWriter {
				name := fmt.Sprintf("p-%d-%d", w, i%10)
				_, err := s.Upsert(ctx, Meta{Key: "default/pod/" + name, Type: "pod",
					Value: pod(fmt.Sprintf("u-%d-%d", w, i%10), fmt.Sprint(i), name)})
				if err != nil {
					return err
				}
				if i%7 == 0 {
					if _, err := s.Delete(ctx, "default/pod/"+name); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	for range readers {
		g.Go(func() error {
			for range perWriter {
				if _, err := s.ListByType(ctx, "pod"); err != nil {
					return err
				}
				if _, err := s.Get(ctx, "default/pod/p-0-0"); err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent access: %v", err)
	}
	// A second Store on the same file is another process's view (keadm
	// debug, a restart overlapping shutdown): it must read without errors.
	other, err := Open(t.Context(), s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	a, err1 := s.ListByType(t.Context(), "pod")
	b, err2 := other.ListByType(t.Context(), "pod")
	if err1 != nil || err2 != nil || !slices.Equal(keys(a), keys(b)) || len(a) == 0 {
		t.Errorf("views differ: %q (%v) vs %q (%v)", keys(a), err1, keys(b), err2)
	}
}

func TestPragmas(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.r, "journal_mode", "wal"},
		{s.w, "journal_mode", "wal"},
		{s.w, "synchronous", "2"}, // FULL: commits that precede an ACK are durable
		{s.r, "synchronous", "2"},
		{s.w, "busy_timeout", "5000"},
		{s.r, "busy_timeout", "5000"},
		{s.w, "foreign_keys", "0"},
		{s.r, "query_only", "1"},
	}
	for _, tc := range tests {
		var got string
		if err := tc.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
		}
	}
	if _, err := s.r.ExecContext(ctx, `DELETE FROM meta`); err == nil {
		t.Error("read pool accepted a write")
	}
}

// TestKubeEdgeDatabase opens a file laid out as KubeEdge's GORM creates it.
func TestKubeEdgeDatabase(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "a dir#with?odd chars", "edgecore.db")
	first, err := Open(ctx, path) // creates the directory
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Replace the file's table with KubeEdge's definition.
	raw, err := sql.Open(sqlitedb.Driver, sqlitedb.DSN(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP TABLE meta`,
		"CREATE TABLE `meta` (`key` varchar(256),`type` varchar(32),`value` text,PRIMARY KEY (`key`))",
		`INSERT INTO meta (key, type, value) VALUES ('default/pod/old', 'pod', '{"metadata":{"uid":"u9"}}')`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	pods, err := s.ListByType(ctx, "pod")
	if err != nil || len(pods) != 1 || pods[0].Key != "default/pod/old" {
		t.Fatalf("ListByType = %+v, %v", pods, err)
	}
	if _, err := s.Upsert(ctx, Meta{Key: "default/pod/old", Type: "pod", Value: pod("u9", "2", "old")}); err != nil {
		t.Fatal(err)
	}
}
