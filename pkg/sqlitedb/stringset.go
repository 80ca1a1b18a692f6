package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
)

// StringSet is a one-column table of unique strings, the shape of KubeEdge's sub_topics (EventBus) and
// target_urls (ServiceBus). A nil *StringSet keeps nothing: its methods do nothing and list nothing.
type StringSet struct {
	db            *sql.DB
	table, column string
	// noun names an element in errors ("subscription", "target url").
	noun string
}

// OpenStringSet opens path and creates table(column TEXT PRIMARY KEY) if missing. An empty path means no
// persistence: it returns a nil set.
func OpenStringSet(ctx context.Context, path, table, column, noun string) (*StringSet, error) {
	if path == "" {
		return nil, nil
	}
	db, _, err := OpenWriter(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", table, err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (%s TEXT PRIMARY KEY)`, table, column)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s store %q: create table %s: %w", table, path, table, err)
	}
	return &StringSet{db: db, table: table, column: column, noun: noun}, nil
}

// List returns the elements in order.
func (s *StringSet) List(ctx context.Context) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM %s ORDER BY %s`, s.column, s.table, s.column))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.table, err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("list %s: %w", s.table, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", s.table, err)
	}
	return out, nil
}

// Add stores v; adding an element twice is not an error.
func (s *StringSet) Add(ctx context.Context, v string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`INSERT OR IGNORE INTO %s (%s) VALUES (?)`, s.table, s.column), v); err != nil {
		return fmt.Errorf("save %s %q: %w", s.noun, v, err)
	}
	return nil
}

// Remove deletes v if present.
func (s *StringSet) Remove(ctx context.Context, v string) error {
	if s == nil {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s = ?`, s.table, s.column), v); err != nil {
		return fmt.Errorf("delete %s %q: %w", s.noun, v, err)
	}
	return nil
}

// Close closes the database.
func (s *StringSet) Close() error {
	if s == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s store: %w", s.table, err)
	}
	return nil
}
