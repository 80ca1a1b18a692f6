package servicebus

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	// Registers the "sqlite3" database/sql driver.
	_ "github.com/mattn/go-sqlite3"
)

// busyTimeout bounds the wait for other writers of the shared edgecore
// database (MetaManager, DeviceTwin, EventBus).
const busyTimeout = 5 * time.Second

// urlStore keeps the allow-list in KubeEdge's target_urls table. A nil
// *urlStore keeps nothing.
type urlStore struct {
	db *sql.DB
}

func openURLStore(ctx context.Context, path string) (*urlStore, error) {
	if path == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open target url store %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("open target url store %q: %w", path, err)
	}
	params := url.Values{
		"_busy_timeout": {strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"NORMAL"},
		// BEGIN IMMEDIATE takes the write lock up front, so a transaction
		// never has to upgrade a read lock and fail with SQLITE_BUSY.
		"_txlock": {"immediate"},
	}
	// A file: URI passes any path, even one with '?' or '#', intact.
	dsn := (&url.URL{Scheme: "file", Path: abs}).String() + "?" + params.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open target url store %q: %w", path, err)
	}
	// Rare writes: one connection queues them here instead of contending
	// for SQLite's write lock.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS target_urls (url TEXT PRIMARY KEY)`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open target url store %q: create table target_urls: %w", path, err)
	}
	return &urlStore{db: db}, nil
}

func (s *urlStore) list(ctx context.Context) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT url FROM target_urls ORDER BY url`)
	if err != nil {
		return nil, fmt.Errorf("list target_urls: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("list target_urls: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list target_urls: %w", err)
	}
	return out, nil
}

func (s *urlStore) add(ctx context.Context, u string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO target_urls (url) VALUES (?)`, u); err != nil {
		return fmt.Errorf("save target url %q: %w", u, err)
	}
	return nil
}

func (s *urlStore) remove(ctx context.Context, u string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM target_urls WHERE url = ?`, u); err != nil {
		return fmt.Errorf("delete target url %q: %w", u, err)
	}
	return nil
}

func (s *urlStore) close() error {
	if s == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close target url store: %w", err)
	}
	return nil
}
