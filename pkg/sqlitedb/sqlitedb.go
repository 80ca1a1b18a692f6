// Package sqlitedb opens edgecore's shared SQLite file. MetaManager, DeviceTwin, EventBus and ServiceBus each keep
// their tables in the same file, so they must all open it the same way: WAL, the same busy timeout, one writer
// connection each, and BEGIN IMMEDIATE — otherwise two writers can meet with `database is locked`.
//
// Every connection runs with synchronous=FULL: a commit returns only after the WAL is fsynced. The modules
// answer (MetaManager ACKs to the cloud, DeviceTwin answers a mapper and retires a report) right after their
// commit, and under WAL's usual synchronous=NORMAL a power loss can roll back a commit that was already answered
// for. The pragma is per connection and go-sqlite3 sets NORMAL on every WAL connection unless told otherwise,
// so it is in the parameters of every connection opened here, writers and readers alike.
package sqlitedb

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
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

// Synchronous is the synchronous pragma of every connection, and SynchronousFull what PRAGMA synchronous
// reports for it.
const (
	Synchronous     = "FULL"
	SynchronousFull = 2
)

// ReaderParams are the connection parameters of a read-only pool on the file (a reader can still checkpoint
// the WAL when it is the last connection to close, so it too gets the writers' durability settings).
func ReaderParams() url.Values {
	return url.Values{
		"_busy_timeout": {BusyTimeoutParam()},
		"_synchronous":  {Synchronous},
		"_query_only":   {"1"},
	}
}

// OpenWriter opens (creating its directory) the database at path with exactly one connection, the module's only
// writer. extra adds connection parameters; it cannot change the journal mode, the synchronous setting or the
// locking. It returns the absolute path too, for read-only pools on the file (see ReaderParams).
func OpenWriter(path string, extra url.Values) (*sql.DB, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolving %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, "", fmt.Errorf("creating the directory of %q: %w", abs, err)
	}
	// Created by us, not SQLite: SQLite would create it 0644 less the umask, and gives the -wal and -shm files
	// the database file's mode.
	if err := createPrivate(abs); err != nil {
		return nil, "", err
	}
	params := url.Values{}
	for k, v := range extra {
		params[k] = v
	}
	// go-sqlite3's short aliases would win over the full names.
	params.Del("_sync")
	params.Del("_journal")
	for k, v := range map[string]string{
		"_busy_timeout": BusyTimeoutParam(),
		"_journal_mode": "WAL",
		// Durable commits: see the package comment.
		"_synchronous": Synchronous,
		// BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade a read lock and
		// fail with SQLITE_BUSY.
		"_txlock": "immediate",
	} {
		params[k] = []string{v}
	}
	db, err := sql.Open(Driver, DSN(abs, params))
	if err != nil {
		return nil, "", fmt.Errorf("opening %q: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	// Connecting switches to WAL, which creates -wal and -shm; then every file of the database is made private,
	// which also repairs files left readable by older versions.
	if err := db.Ping(); err != nil {
		_ = db.Close()
		return nil, "", fmt.Errorf("opening %q: %w", abs, err)
	}
	if err := MakePrivate(abs); err != nil {
		_ = db.Close()
		return nil, "", err
	}
	return db, abs, nil
}

// Mode is the mode of the database and its -wal, -shm and -journal files. The database holds the node's
// Secrets (MetaManager keeps them for offline use): nobody but edgecore (root) may read it, whatever the umask
// or the directory it is in.
const Mode = 0o600

// companions are the files SQLite keeps next to the database.
var companions = []string{"", "-wal", "-shm", "-journal"}

// createPrivate creates the database file with Mode if it does not exist yet.
func createPrivate(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, Mode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating %q: %w", abs, err)
	}
	// The umask only ever removes bits, but a chmod makes the mode exact either way.
	if err := f.Chmod(Mode); err != nil {
		_ = f.Close()
		return fmt.Errorf("creating %q: %w", abs, err)
	}
	return f.Close()
}

// MakePrivate sets Mode on the database at abs and on those of its companion files that exist.
func MakePrivate(abs string) error {
	for _, suffix := range companions {
		p := abs + suffix
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("checking the mode of %q: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			// Never chmod through a symlink: its target is not ours to change.
			return fmt.Errorf("database file %q is not a regular file (%s)", p, fi.Mode().Type())
		}
		if fi.Mode().Perm() == Mode {
			continue
		}
		if err := os.Chmod(p, Mode); err != nil {
			return fmt.Errorf("making %q private: %w", p, err)
		}
	}
	return nil
}
