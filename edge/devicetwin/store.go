package devicetwin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/sqlitedb"
	"github.com/tether-edge/tether/pkg/twin"
)

// The tables are KubeEdge's (spec §11.1), so an edgecore.db written by
// KubeEdge keeps its devices; the outbox is ours.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS device (
		id varchar(64) NOT NULL PRIMARY KEY,
		name text, description text, state text, last_online text)`,
	`CREATE TABLE IF NOT EXISTS device_attr (
		id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
		deviceid text, name text, description text, value text,
		optional bool, attr_type text, metadata text)`,
	`CREATE TABLE IF NOT EXISTS device_twin (
		id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
		deviceid text, name text, description text, expected text, actual text,
		expected_meta text, actual_meta text, expected_version text, actual_version text,
		optional bool, attr_type text, metadata text)`,
	`CREATE TABLE IF NOT EXISTS tether_twin_outbox (
		kind text NOT NULL, device text NOT NULL, prop text NOT NULL,
		seq integer NOT NULL, payload text NOT NULL,
		PRIMARY KEY (kind, device, prop))`,
}

// device is one cached device with its attributes and twins.
type device struct {
	ID          string
	Name        string
	Description string
	State       string
	LastOnline  string
	Attrs       map[string]attr
	Twins       map[string]twinRow
}

type attr struct {
	Description string
	Value       string
	Optional    bool
	Type        string
	Metadata    string
}

// openDB opens the shared file with one connection: every statement of this module runs on its own goroutine
// anyway.
func openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, _, err := sqlitedb.OpenWriter(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open twin database: %w", err)
	}
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open twin database %q: create tables: %w", path, err)
		}
	}
	return db, nil
}

func withTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// loadDevices reads the three device tables into the cache. Unparsable
// columns are logged and read as empty: one bad row must not cost the
// node every device.
func loadDevices(ctx context.Context, db *sql.DB) (map[string]*device, error) {
	devices := map[string]*device{}
	rows, err := db.QueryContext(ctx, `SELECT id, name, description, state, last_online FROM device`)
	if err != nil {
		return nil, fmt.Errorf("load devices: %w", err)
	}
	for rows.Next() {
		var id string
		var name, desc, state, last sql.NullString
		if err := rows.Scan(&id, &name, &desc, &state, &last); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("load devices: %w", err)
		}
		devices[id] = &device{ID: id, Name: name.String, Description: desc.String, State: state.String,
			LastOnline: last.String, Attrs: map[string]attr{}, Twins: map[string]twinRow{}}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("load devices: %w", err)
	}

	rows, err = db.QueryContext(ctx, `SELECT deviceid, name, description, value, optional, attr_type, metadata FROM device_attr`)
	if err != nil {
		return nil, fmt.Errorf("load device attributes: %w", err)
	}
	for rows.Next() {
		var devID, name, desc, value, typ, meta sql.NullString
		var optional sql.NullBool
		if err := rows.Scan(&devID, &name, &desc, &value, &optional, &typ, &meta); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("load device attributes: %w", err)
		}
		d := devices[devID.String]
		if d == nil {
			klog.InfoS("Ignoring attribute of unknown device", "device", devID.String, "attribute", name.String)
			continue
		}
		d.Attrs[name.String] = attr{Description: desc.String, Value: value.String, Optional: optional.Bool,
			Type: typ.String, Metadata: meta.String}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("load device attributes: %w", err)
	}

	rows, err = db.QueryContext(ctx, `SELECT deviceid, name, description, expected, actual, expected_meta, actual_meta,
		expected_version, actual_version, optional, attr_type, metadata FROM device_twin`)
	if err != nil {
		return nil, fmt.Errorf("load device twins: %w", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var devID, name, desc, exp, act, expMeta, actMeta, expVer, actVer, typ, meta sql.NullString
		var optional sql.NullBool
		if err := rows.Scan(&devID, &name, &desc, &exp, &act, &expMeta, &actMeta, &expVer, &actVer,
			&optional, &typ, &meta); err != nil {
			return nil, fmt.Errorf("load device twins: %w", err)
		}
		d := devices[devID.String]
		if d == nil {
			klog.InfoS("Ignoring twin of unknown device", "device", devID.String, "twin", name.String)
			continue
		}
		t := twinRow{Description: desc.String, Optional: optional.Bool, Type: typ.String, Metadata: meta.String}
		if exp.Valid {
			t.Expected = ptr(exp.String)
		}
		if act.Valid {
			t.Actual = ptr(act.String)
		}
		where := func(col string) []any { return []any{"device", devID.String, "twin", name.String, "column", col} }
		t.ExpectedTS = parseMeta(expMeta, where("expected_meta"))
		t.ActualTS = parseMeta(actMeta, where("actual_meta"))
		t.ExpectedVersion = parseVersion(expVer, where("expected_version"))
		t.ActualVersion = parseVersion(actVer, where("actual_version"))
		if t.Type == "" {
			t.Type = twin.TypeString
		}
		d.Twins[name.String] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load device twins: %w", err)
	}
	return devices, nil
}

func parseMeta(s sql.NullString, where []any) int64 {
	if s.String == "" {
		return 0
	}
	var m twin.ValueMetadata
	if err := json.Unmarshal([]byte(s.String), &m); err != nil {
		klog.InfoS("Ignoring unparsable twin column", append(where, "err", err)...)
	}
	return m.Timestamp
}

func parseVersion(s sql.NullString, where []any) twin.Version {
	var v twin.Version
	if s.String == "" {
		return v
	}
	if err := json.Unmarshal([]byte(s.String), &v); err != nil {
		klog.InfoS("Ignoring unparsable twin column", append(where, "err", err)...)
	}
	return v
}

func insertDevice(ctx context.Context, tx *sql.Tx, d *device) error {
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO device (id, name, description, state, last_online)
		VALUES (?, ?, ?, ?, ?)`, d.ID, d.Name, d.Description, d.State, d.LastOnline); err != nil {
		return fmt.Errorf("write device %q: %w", d.ID, err)
	}
	return nil
}

// deleteDevice removes the device with everything that hangs off it,
// including reports to the cloud that no longer concern anyone.
func deleteDevice(ctx context.Context, tx *sql.Tx, id string) error {
	for _, q := range []string{
		`DELETE FROM device WHERE id = ?`,
		`DELETE FROM device_attr WHERE deviceid = ?`,
		`DELETE FROM device_twin WHERE deviceid = ?`,
		`DELETE FROM tether_twin_outbox WHERE device = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete device %q: %w", id, err)
		}
	}
	return nil
}

func writeAttr(ctx context.Context, tx *sql.Tx, devID, name string, a attr) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM device_attr WHERE deviceid = ? AND name = ?`, devID, name); err != nil {
		return fmt.Errorf("write attribute %q of device %q: %w", name, devID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_attr (deviceid, name, description, value, optional, attr_type, metadata)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, devID, name, a.Description, a.Value, a.Optional, a.Type, a.Metadata); err != nil {
		return fmt.Errorf("write attribute %q of device %q: %w", name, devID, err)
	}
	return nil
}

// writeTwin stores t in the KubeEdge column format: plain values, meta and
// version columns as JSON, NULL for absent values.
func writeTwin(ctx context.Context, tx *sql.Tx, devID, name string, t twinRow, insert bool) error {
	nullable := func(p *string) any {
		if p == nil {
			return nil
		}
		return *p
	}
	meta := func(p *string, ts int64) any {
		if p == nil {
			return nil
		}
		return fmt.Sprintf(`{"timestamp":%d}`, ts)
	}
	version := func(v twin.Version) string {
		return fmt.Sprintf(`{"cloud":%d,"edge":%d}`, v.CloudVersion, v.EdgeVersion)
	}
	args := []any{t.Description, nullable(t.Expected), nullable(t.Actual), meta(t.Expected, t.ExpectedTS),
		meta(t.Actual, t.ActualTS), version(t.ExpectedVersion), version(t.ActualVersion), t.Optional, t.Type,
		t.Metadata, devID, name}
	q := `UPDATE device_twin SET description = ?, expected = ?, actual = ?, expected_meta = ?, actual_meta = ?,
		expected_version = ?, actual_version = ?, optional = ?, attr_type = ?, metadata = ?
		WHERE deviceid = ? AND name = ?`
	if insert {
		q = `INSERT INTO device_twin (description, expected, actual, expected_meta, actual_meta,
			expected_version, actual_version, optional, attr_type, metadata, deviceid, name)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("write twin %q of device %q: %w", name, devID, err)
	}
	return nil
}
