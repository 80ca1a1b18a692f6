package sqlitedb

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"testing"
)

// synchronousOf reads PRAGMA synchronous and journal_mode on n distinct connections of db, the first n it opens:
// the pragma is per connection, and go-sqlite3 sets NORMAL on each WAL connection unless told otherwise.
func synchronousOf(t *testing.T, db *sql.DB, n int) []int {
	t.Helper()
	ctx := context.Background()
	conns := make([]*sql.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var got []int
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var sync int
		if err := c.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
			t.Fatal(err)
		}
		got = append(got, sync)
	}
	return got
}

// Commits that precede an ACK must survive a power loss: every connection to edgecore.db runs with
// synchronous=FULL (2), whatever the caller adds, including connections opened after the first (the pool may
// replace its one writer) and read-only ones (the last connection to close checkpoints).
func TestEveryConnectionIsDurable(t *testing.T) {
	tests := []struct {
		name  string
		open  func(t *testing.T, path string) *sql.DB
		conns int
	}{
		{name: "writer", conns: 1, open: func(t *testing.T, path string) *sql.DB {
			db, _, err := OpenWriter(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
		{name: "writer with extra parameters that ask for less", conns: 1, open: func(t *testing.T, path string) *sql.DB {
			db, _, err := OpenWriter(path, url.Values{"_synchronous": {"OFF"}, "_sync": {"NORMAL"}, "_journal": {"DELETE"},
				"_foreign_keys": {"0"}})
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
		{name: "string set", conns: 1, open: func(t *testing.T, path string) *sql.DB {
			s, err := OpenStringSet(context.Background(), path, "t", "c", "thing")
			if err != nil {
				t.Fatal(err)
			}
			return s.db
		}},
		{name: "reader pool", conns: 4, open: func(t *testing.T, path string) *sql.DB {
			w, abs, err := OpenWriter(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = w.Close() })
			r, err := sql.Open(Driver, DSN(abs, ReaderParams()))
			if err != nil {
				t.Fatal(err)
			}
			return r
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.open(t, filepath.Join(t.TempDir(), "edgecore.db"))
			defer func() { _ = db.Close() }()
			for round := range 2 {
				for i, got := range synchronousOf(t, db, tc.conns) {
					if got != SynchronousFull {
						t.Errorf("round %d, connection %d: PRAGMA synchronous = %d, want %d (FULL)", round, i, got, SynchronousFull)
					}
				}
				// Close the idle connections, so the next round gets new ones.
				db.SetMaxIdleConns(0)
				db.SetMaxIdleConns(tc.conns)
			}
			var mode string
			if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
		})
	}
}
