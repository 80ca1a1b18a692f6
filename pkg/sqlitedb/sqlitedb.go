// Package sqlitedb opens edgecore's shared SQLite file. MetaManager, DeviceTwin, EventBus and ServiceBus each keep
// their tables in the same file, so they must all open it the same way: WAL, the same busy timeout, one writer
// connection each, and BEGIN IMMEDIATE — otherwise two writers can meet with `database is locked`.
package sqlitedb

import (
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

// BusyTimeout bounds the wait for another writer of the shared file.
const BusyTimeout = 5 * time.Second

// Driver is the database/sql driver name.
const Driver = "sqlite3"

// DSN builds a file: URI, so that any path, even one with '?' or '#', reaches SQLite intact.
func DSN(abs string, params url.Values) string {
	return (&url.URL{Scheme: "file", Path: abs}).String() + "?" + params.Encode()
}

// BusyTimeoutParam is the _busy_timeout value every connection to the shared file uses.
func BusyTimeoutParam() string { return strconv.FormatInt(BusyTimeout.Milliseconds(), 10) }

// OpenWriter opens (creating its directory) the database at path with exactly one connection, the module's only
// writer. extra adds connection parameters. It returns the absolute path too, for read-only pools on the file.
func OpenWriter(path string, extra url.Values) (*sql.DB, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolving %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, "", fmt.Errorf("creating the directory of %q: %w", abs, err)
	}
	params := url.Values{
		"_busy_timeout": {BusyTimeoutParam()},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"NORMAL"},
		// BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade a read lock and
		// fail with SQLITE_BUSY.
		"_txlock": {"immediate"},
	}
	for k, v := range extra {
		params[k] = v
	}
	db, err := sql.Open(Driver, DSN(abs, params))
	if err != nil {
		return nil, "", fmt.Errorf("opening %q: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, abs, nil
}
