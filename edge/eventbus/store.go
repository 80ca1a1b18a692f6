package eventbus

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
// database (MetaManager, DeviceTwin, keadm debug).
const busyTimeout = 5 * time.Second

// topicStore persists dynamic subscriptions in KubeEdge's sub_topics table,
// so an existing edgecore.db keeps its subscriptions. A nil *topicStore keeps
// nothing: subscriptions then last until the module stops.
type topicStore struct {
	db *sql.DB
}

func openTopicStore(ctx context.Context, path string) (*topicStore, error) {
	if path == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open topic store %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("open topic store %q: %w", path, err)
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
		return nil, fmt.Errorf("open topic store %q: %w", path, err)
	}
	// Subscriptions change rarely: one connection serialises our writes
	// instead of having them contend for SQLite's single write lock.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS sub_topics (topic TEXT PRIMARY KEY)`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open topic store %q: create table sub_topics: %w", path, err)
	}
	return &topicStore{db: db}, nil
}

func (s *topicStore) list(ctx context.Context) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT topic FROM sub_topics ORDER BY topic`)
	if err != nil {
		return nil, fmt.Errorf("list sub_topics: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("list sub_topics: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sub_topics: %w", err)
	}
	return out, nil
}

func (s *topicStore) add(ctx context.Context, topic string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO sub_topics (topic) VALUES (?)`, topic); err != nil {
		return fmt.Errorf("save subscription %q: %w", topic, err)
	}
	return nil
}

func (s *topicStore) remove(ctx context.Context, topic string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sub_topics WHERE topic = ?`, topic); err != nil {
		return fmt.Errorf("delete subscription %q: %w", topic, err)
	}
	return nil
}

func (s *topicStore) close() error {
	if s == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close topic store: %w", err)
	}
	return nil
}
