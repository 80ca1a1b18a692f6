package devicetwin

import (
	"fmt"
	"maps"
	"slices"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/twin"
)

// twinRow is one cached device_twin row. It is a value: updates build a new
// row and replace the old one only after the database write succeeded.
type twinRow struct {
	Description     string
	Expected        *string // nil: no value
	Actual          *string
	ExpectedTS      int64
	ActualTS        int64
	ExpectedVersion twin.Version
	ActualVersion   twin.Version
	Optional        bool
	Type            string // attr_type; twin.TypeDeleted for a deleted twin
	// Metadata is the metadata column as stored (type blanked), kept so
	// rows written by KubeEdge round-trip.
	Metadata string
}

func (t twinRow) deleted() bool { return t.Type == twin.TypeDeleted }

// msg renders t for the wire; versions are only for the cloud.
func (t twinRow) msg(withVersions bool) *twin.MsgTwin {
	m := &twin.MsgTwin{Optional: ptr(t.Optional), Metadata: &twin.TypeMetadata{Type: t.Type}}
	if t.Expected != nil {
		m.Expected = &twin.Value{Value: ptr(*t.Expected), Metadata: &twin.ValueMetadata{Timestamp: t.ExpectedTS}}
	}
	if t.Actual != nil {
		m.Actual = &twin.Value{Value: ptr(*t.Actual), Metadata: &twin.ValueMetadata{Timestamp: t.ActualTS}}
	}
	if withVersions {
		if t.Expected != nil || t.ExpectedVersion != (twin.Version{}) {
			m.ExpectedVersion = ptr(t.ExpectedVersion)
		}
		if t.Actual != nil || t.ActualVersion != (twin.Version{}) {
			m.ActualVersion = ptr(t.ActualVersion)
		}
	}
	return m
}

// docState is t as apps see it in documents: deleted twins are absent.
func (t twinRow) docState() *twin.MsgTwin {
	if t.deleted() {
		return nil
	}
	return t.msg(false)
}

type dealType int

const (
	// dealREST is an update from an app or mapper: edge versions count up
	// and any invalid twin fails the whole request.
	dealREST dealType = iota
	// dealSync is an update from the cloud: versions are the cloud's and
	// must not be older than ours; invalid twins are skipped.
	dealSync
)

// twinOutcome is what applying one update request produces.
type twinOutcome struct {
	changed  map[string]twinRow // rows to write, including version-only changes
	inserted map[string]bool    // keys of changed that have no row yet
	document map[string]*TwinDoc
	result   map[string]*twin.MsgTwin // dealREST: the /twin/update/result twins
	toCloud  map[string]*twin.MsgTwin // twin/edge_updated entries, with versions
}

func (o *twinOutcome) empty() bool {
	return len(o.changed) == 0 && len(o.toCloud) == 0
}

// requestError is an update the requester must fix (code 400).
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &requestError{fmt.Errorf(format, args...)}
}

// applyTwins runs KubeEdge's twin update algorithm (spec §14.3) against
// the device's current twins without modifying them. now is Unix ms.
func applyTwins(deviceID string, current map[string]twinRow, req map[string]*twin.MsgTwin, deal dealType, now int64) (*twinOutcome, error) {
	o := &twinOutcome{
		changed:  map[string]twinRow{},
		inserted: map[string]bool{},
		document: map[string]*TwinDoc{},
		result:   map[string]*twin.MsgTwin{},
		toCloud:  map[string]*twin.MsgTwin{},
	}
	// Sorted, so that a request with several bad twins always names the
	// same one.
	for _, key := range slices.Sorted(maps.Keys(req)) {
		var err error
		if deal == dealREST {
			err = o.rest(current, key, req[key], now)
		} else {
			err = o.sync(current, key, req[key], now)
		}
		if err == nil {
			continue
		}
		if deal == dealREST {
			return nil, err
		}
		klog.InfoS("Skipping invalid twin in cloud update", "device", deviceID, "twin", key, "err", err)
	}
	return o, nil
}

// checkValues validates the values in m against type typ.
func checkValues(key, typ string, m *twin.MsgTwin) error {
	for _, v := range []struct {
		name string
		tv   *twin.Value
	}{{"expected", m.Expected}, {"actual", m.Actual}} {
		if v.tv == nil {
			continue
		}
		if v.tv.Value == nil {
			return badRequest("twin %q: %s has no value", key, v.name)
		}
		if err := validateValue(typ, *v.tv.Value); err != nil {
			return badRequest("twin %q: %s: %w", key, v.name, err)
		}
	}
	return nil
}

// valueType is the type values of m are checked against: a live twin keeps
// its type (the counter mapper sends "Updated"); a new or deleted one takes
// the request's.
func valueType(old twinRow, exists bool, m *twin.MsgTwin) string {
	if exists && !old.deleted() {
		return old.Type
	}
	if m.Metadata != nil && m.Metadata.Type != "" {
		return m.Metadata.Type
	}
	return twin.TypeString
}

func (o *twinOutcome) rest(current map[string]twinRow, key string, m *twin.MsgTwin, now int64) error {
	if err := validateKey(key); err != nil {
		return &requestError{fmt.Errorf("twin %w", err)}
	}
	old, exists := current[key]
	if m == nil {
		switch {
		case !exists || old.deleted():
			return badRequest("twin %q: cannot delete a twin that does not exist", key)
		case !old.Optional:
			return badRequest("twin %q: cannot delete a twin that is not optional", key)
		}
		t := old
		t.Expected, t.Actual, t.ExpectedTS, t.ActualTS = nil, nil, 0, 0
		t.ExpectedVersion.EdgeVersion++
		t.ActualVersion.EdgeVersion++
		t.Type = twin.TypeDeleted
		o.changed[key] = t
		o.document[key] = &TwinDoc{Last: old.docState()}
		o.result[key] = nil
		o.toCloud[key] = t.msg(true)
		return nil
	}

	typ := valueType(old, exists, m)
	if !knownType(typ) {
		return badRequest("twin %q: %w %q", key, errBadType, typ)
	}
	if err := checkValues(key, typ, m); err != nil {
		return err
	}
	t := old
	if !exists {
		t = twinRow{Optional: true, Metadata: "{}"}
	}
	if !exists || old.deleted() {
		t.Type = typ
	}
	cloud := &twin.MsgTwin{}
	if m.Expected != nil {
		t.Expected, t.ExpectedTS = ptr(*m.Expected.Value), now
		t.ExpectedVersion.EdgeVersion++
		cloud.Expected = &twin.Value{Value: ptr(*t.Expected), Metadata: &twin.ValueMetadata{Timestamp: now}}
		cloud.ExpectedVersion = ptr(t.ExpectedVersion)
	}
	if m.Actual != nil {
		t.Actual, t.ActualTS = ptr(*m.Actual.Value), now
		t.ActualVersion.EdgeVersion++
		cloud.Actual = &twin.Value{Value: ptr(*t.Actual), Metadata: &twin.ValueMetadata{Timestamp: now}}
		cloud.ActualVersion = ptr(t.ActualVersion)
	}
	if m.Optional != nil && (!exists || (old.Optional && !*m.Optional)) {
		// Optional can only be given up: the cloud relies on required twins.
		t.Optional = *m.Optional
	}
	if t == old {
		return nil
	}
	cloud.Optional = ptr(t.Optional)
	cloud.Metadata = &twin.TypeMetadata{Type: t.Type}
	o.changed[key] = t
	o.inserted[key] = !exists
	var last *twin.MsgTwin
	if exists {
		last = old.docState()
	}
	o.document[key] = &TwinDoc{Last: last, Current: t.docState()}
	o.result[key] = &twin.MsgTwin{Expected: cloud.Expected, Actual: cloud.Actual, Optional: cloud.Optional, Metadata: cloud.Metadata}
	o.toCloud[key] = cloud
	return nil
}

// versionOK is the rule of spec §21.11: a cloud update must not be older
// than what we hold on either counter.
func versionOK(cur twin.Version, req *twin.Version) bool {
	r := twin.Version{}
	if req != nil {
		r = *req
	}
	return cur.CloudVersion <= r.CloudVersion && cur.EdgeVersion <= r.EdgeVersion
}

func (o *twinOutcome) sync(current map[string]twinRow, key string, m *twin.MsgTwin, now int64) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("twin %w", err)
	}
	if m == nil {
		return fmt.Errorf("twin %q: null twin", key)
	}
	old, exists := current[key]
	// A stale or conflicting update is refused as a whole; the cloud gets
	// our state back so that it converges on the newer value.
	if exists {
		if (m.Expected != nil || m.ExpectedVersion != nil) && !versionOK(old.ExpectedVersion, m.ExpectedVersion) ||
			(m.Actual != nil || m.ActualVersion != nil) && !versionOK(old.ActualVersion, m.ActualVersion) {
			klog.V(2).InfoS("Refusing older cloud twin update", "twin", key,
				"expectedVersion", old.ExpectedVersion, "actualVersion", old.ActualVersion)
			o.toCloud[key] = old.msg(true)
			return nil
		}
	}

	if m.Metadata != nil && m.Metadata.Type == twin.TypeDeleted {
		if !exists || old.deleted() {
			return nil
		}
		t := old
		t.Expected, t.Actual, t.ExpectedTS, t.ActualTS = nil, nil, 0, 0
		if m.ExpectedVersion != nil {
			t.ExpectedVersion = *m.ExpectedVersion
		}
		if m.ActualVersion != nil {
			t.ActualVersion = *m.ActualVersion
		}
		t.Type = twin.TypeDeleted
		o.changed[key] = t
		o.document[key] = &TwinDoc{Last: old.docState()}
		return nil
	}

	typ := valueType(old, exists, m)
	if !knownType(typ) {
		return fmt.Errorf("twin %q: %w %q", key, errBadType, typ)
	}
	if m.Expected != nil && m.Expected.Value != nil && *m.Expected.Value == "" && typ != twin.TypeString && typ != twin.TypeBytes {
		// The v1.7 cloud sends every property, those without a desired
		// value included, as an empty expected value.
		c := *m
		c.Expected = nil
		m = &c
	}
	if err := checkValues(key, typ, m); err != nil {
		return err
	}
	t := old
	if !exists {
		t = twinRow{Optional: true, Metadata: "{}"}
	}
	if !exists || old.deleted() {
		t.Type = typ
	}
	if m.Expected != nil && (t.Expected == nil || *t.Expected != *m.Expected.Value) {
		t.Expected, t.ExpectedTS = ptr(*m.Expected.Value), now
	}
	if m.ExpectedVersion != nil {
		t.ExpectedVersion = *m.ExpectedVersion
	}
	if m.Actual != nil && (t.Actual == nil || *t.Actual != *m.Actual.Value) {
		t.Actual, t.ActualTS = ptr(*m.Actual.Value), now
	}
	if m.ActualVersion != nil {
		t.ActualVersion = *m.ActualVersion
	}
	if m.Optional != nil && (!exists || (old.Optional && !*m.Optional)) {
		t.Optional = *m.Optional
	}
	if t == old {
		return nil
	}
	o.changed[key] = t
	o.inserted[key] = !exists
	last, cur := (*twin.MsgTwin)(nil), t.docState()
	if exists {
		last = old.docState()
	}
	// Versions alone are bookkeeping: apps only hear about what they see.
	if !exists || !sameDoc(last, cur) {
		o.document[key] = &TwinDoc{Last: last, Current: cur}
	}
	return nil
}

// sameDoc compares two app-visible twin states, ignoring timestamps.
func sameDoc(a, b *twin.MsgTwin) bool {
	if a == nil || b == nil {
		return a == b
	}
	val := func(v *twin.Value) *string {
		if v == nil {
			return nil
		}
		return v.Value
	}
	eq := func(x, y *string) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	return eq(val(a.Expected), val(b.Expected)) && eq(val(a.Actual), val(b.Actual)) &&
		*a.Optional == *b.Optional && a.Metadata.Type == b.Metadata.Type
}

// delta lists the live twins whose expected value differs from the actual
// one (spec §14.3 step 3), with all live twins for context.
func delta(twins map[string]twinRow) (map[string]*twin.MsgTwin, map[string]string) {
	all := map[string]*twin.MsgTwin{}
	d := map[string]string{}
	for k, t := range twins {
		if t.deleted() {
			continue
		}
		all[k] = t.msg(false)
		if t.Expected != nil && *t.Expected != "" && (t.Actual == nil || *t.Actual != *t.Expected) {
			d[k] = *t.Expected
		}
	}
	return all, d
}

// mergeCloud coalesces two pending edge_updated entries of one twin: the
// newer values win, and what only the older one carries is kept.
func mergeCloud(older, newer *twin.MsgTwin) *twin.MsgTwin {
	if older == nil {
		return newer
	}
	m := *older
	if newer.Expected != nil || newer.ExpectedVersion != nil {
		m.Expected, m.ExpectedVersion = newer.Expected, newer.ExpectedVersion
	}
	if newer.Actual != nil || newer.ActualVersion != nil {
		m.Actual, m.ActualVersion = newer.Actual, newer.ActualVersion
	}
	if newer.Metadata != nil {
		m.Metadata = newer.Metadata
		if newer.Metadata.Type == twin.TypeDeleted {
			// A deletion makes older values meaningless.
			m.Expected, m.Actual = newer.Expected, newer.Actual
		}
	}
	if newer.Optional != nil {
		m.Optional = newer.Optional
	}
	return &m
}
