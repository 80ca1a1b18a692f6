// Package store keeps MetaManager's objects in SQLite, in the table KubeEdge's
// edgecore uses (meta: key, type, value), so an existing edgecore.db keeps
// working and `keadm debug get` can read ours.
//
// All writes go through one connection: SQLite allows one writer at a time,
// and a single connection turns contention into queueing inside this process
// instead of "database is locked" errors. Reads use a separate pool, which
// WAL lets run alongside the writer.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/sqlitedb"
)

// readers is the size of the read-only pool beside the one writer.
const readers = 4

// ErrNotFound is returned by Get when no row has the key.
var ErrNotFound = errors.New("meta not found")

// Meta is one row of the meta table. Key is the edge resource
// ({namespace}/{type}/{name}), Type its type token and Value the object JSON.
type Meta struct {
	Key   string
	Type  string
	Value string
}

// Result says what Upsert did.
type Result int

// Upsert results.
const (
	Inserted Result = iota + 1
	Updated
	// Stale means the stored row is the same object (same metadata.uid) at a
	// higher resourceVersion, so it was kept and the new value dropped.
	Stale
)

func (r Result) String() string {
	switch r {
	case Inserted:
		return "inserted"
	case Updated:
		return "updated"
	case Stale:
		return "stale"
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// Store is the meta table of one database file. It is safe for concurrent use.
type Store struct {
	path string
	w    *sql.DB // exactly one connection: the only writer
	r    *sql.DB
}

// Open opens or creates the database at path, creating its directory, and
// makes sure the meta table exists.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open meta store: empty data source")
	}
	w, abs, err := sqlitedb.OpenWriter(path, url.Values{"_foreign_keys": {"0"}})
	if err != nil {
		return nil, fmt.Errorf("open meta store: %w", err)
	}
	s := &Store{path: abs, w: w}
	// The schema must exist, and the file must be in WAL mode, before any
	// reader connects.
	if err := s.init(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open meta store %q: %w", path, err)
	}
	r, err := sql.Open(sqlitedb.Driver, sqlitedb.DSN(abs, sqlitedb.ReaderParams()))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open meta store %q: %w", path, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	// Column types as in the brief and KubeEdge's GORM model (varchar is
	// TEXT affinity in SQLite); an existing KubeEdge table is left alone.
	if _, err := s.w.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, type TEXT, value TEXT)`); err != nil {
		return fmt.Errorf("create table meta: %w", err)
	}
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		// Some filesystems (network mounts) cannot do WAL; SQLite then keeps
		// the rollback journal, which is slower but still correct.
		klog.InfoS("SQLite is not in WAL mode; writers will block readers", "file", s.path, "journalMode", mode)
	}
	return nil
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes both connection pools.
func (s *Store) Close() error {
	return errors.Join(s.w.Close(), s.r.Close())
}

// Upsert writes m unless the stored row is the same object (same
// metadata.uid) at a higher numeric resourceVersion; then it keeps the row
// and returns Stale. A different UID means the object was recreated, so the
// new value replaces the old one. Values without a UID or a numeric
// resourceVersion (patches, status strings) always replace.
func (s *Store) Upsert(ctx context.Context, m Meta) (Result, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("upsert meta %q: %w", m.Key, err)
	}
	defer func() { _ = tx.Rollback() }()

	res := Updated
	var old string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, m.Key).Scan(&old)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		res = Inserted
	case err != nil:
		return 0, fmt.Errorf("upsert meta %q: read stored row: %w", m.Key, err)
	case isStale(old, m.Value):
		return Stale, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (key, type, value) VALUES (?, ?, ?)`,
		m.Key, m.Type, m.Value); err != nil {
		return 0, fmt.Errorf("upsert meta %q: %w", m.Key, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("upsert meta %q: commit: %w", m.Key, err)
	}
	return res, nil
}

// Get returns the row with key, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Meta, error) {
	m := Meta{Key: key}
	err := s.r.QueryRowContext(ctx, `SELECT type, value FROM meta WHERE key = ?`, key).Scan(&m.Type, &m.Value)
	if errors.Is(err, sql.ErrNoRows) {
		return Meta{}, fmt.Errorf("get meta %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("get meta %q: %w", key, err)
	}
	return m, nil
}

// ListByType returns every row of type typ, ordered by key.
func (s *Store) ListByType(ctx context.Context, typ string) ([]Meta, error) {
	ms, err := s.list(ctx, `SELECT key, type, value FROM meta WHERE type = ? ORDER BY key`, typ)
	if err != nil {
		return nil, fmt.Errorf("list meta of type %q: %w", typ, err)
	}
	return ms, nil
}

// ListByPrefix returns the rows whose key starts with prefix, ordered by key;
// "default/pod/" lists the pods of namespace default.
func (s *Store) ListByPrefix(ctx context.Context, prefix string) ([]Meta, error) {
	if prefix == "" {
		ms, err := s.list(ctx, `SELECT key, type, value FROM meta ORDER BY key`)
		if err != nil {
			return nil, fmt.Errorf("list all meta: %w", err)
		}
		return ms, nil
	}
	// A key range rather than LIKE: it uses the primary key index and needs
	// no escaping of '%' and '_' in names.
	ms, err := s.list(ctx, `SELECT key, type, value FROM meta WHERE key >= ? AND key < ? ORDER BY key`,
		prefix, prefixEnd(prefix))
	if err != nil {
		return nil, fmt.Errorf("list meta with key prefix %q: %w", prefix, err)
	}
	return ms, nil
}

// prefixEnd is the smallest string greater than every string with prefix
// p under SQLite's default BINARY (bytewise) collation.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	// All 0xff: no upper bound exists; this sorts after any UTF-8 key.
	return p + "\xff"
}

func (s *Store) list(ctx context.Context, query string, args ...any) ([]Meta, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Meta
	for rows.Next() {
		var m Meta
		if err := rows.Scan(&m.Key, &m.Type, &m.Value); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Delete removes the rows with the given keys and returns how many existed.
func (s *Store) Delete(ctx context.Context, keys ...string) (int64, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("delete meta %q: %w", keys, err)
	}
	defer func() { _ = tx.Rollback() }()
	n, err := deleteKeys(ctx, tx, keys)
	if err != nil {
		return 0, fmt.Errorf("delete meta %q: %w", keys, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("delete meta %q: commit: %w", keys, err)
	}
	return n, nil
}

// DeleteIfUID removes key, and then the related keys, only if the stored
// object's metadata.uid is uid. It reports whether key was removed. A
// delete for an older incarnation of a recreated object thus leaves the new
// one alone.
func (s *Store) DeleteIfUID(ctx context.Context, key, uid string, related ...string) (bool, error) {
	if uid == "" {
		return false, fmt.Errorf("delete meta %q: empty uid", key)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("delete meta %q with uid %s: %w", key, uid, err)
	}
	defer func() { _ = tx.Rollback() }()
	var old string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&old)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete meta %q with uid %s: read stored row: %w", key, uid, err)
	}
	if stored, _ := identity(old); stored.uid != uid {
		return false, nil
	}
	if _, err := deleteKeys(ctx, tx, append([]string{key}, related...)); err != nil {
		return false, fmt.Errorf("delete meta %q with uid %s: %w", key, uid, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("delete meta %q with uid %s: commit: %w", key, uid, err)
	}
	return true, nil
}

func deleteKeys(ctx context.Context, tx *sql.Tx, keys []string) (int64, error) {
	var n int64
	for _, k := range keys {
		r, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, k)
		if err != nil {
			return 0, err
		}
		c, err := r.RowsAffected()
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// objectID is the part of a Kubernetes object the staleness guard needs.
type objectID struct {
	uid string
	rv  uint64
	// rvOK is false when resourceVersion is missing or not a number; such
	// versions cannot be ordered.
	rvOK bool
}

// identity reads metadata.uid and metadata.resourceVersion from v; ok is
// false if v is not a JSON object.
func identity(v string) (objectID, bool) {
	var obj struct {
		Metadata struct {
			UID             string `json:"uid"`
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(v), &obj); err != nil {
		return objectID{}, false
	}
	id := objectID{uid: obj.Metadata.UID}
	if rv, err := strconv.ParseUint(obj.Metadata.ResourceVersion, 10, 64); err == nil {
		id.rv, id.rvOK = rv, true
	}
	return id, true
}

// isStale reports whether incoming is an older version of the object in
// stored.
func isStale(stored, incoming string) bool {
	in, ok := identity(incoming)
	if !ok || in.uid == "" || !in.rvOK {
		return false
	}
	old, ok := identity(stored)
	return ok && old.uid == in.uid && old.rvOK && old.rv > in.rv
}
