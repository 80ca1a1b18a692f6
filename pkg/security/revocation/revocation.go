// Package revocation is the format of Tether's certificate deny-list: a
// ConfigMap, kubeedge/tether-certificate-revocations, that every cloudcore
// reads and that cloudcore (node deletion, re-join) and keadm (keadm revoke)
// write. Each entry is one key of the ConfigMap's data, so writers touch only
// their own keys and one malformed entry spoils nothing else:
//
//	serial.<hex serial>  {"node":"edge1","revokedAt":"…","notAfter":"…","reason":"…"}
//	node.<node name>     {"before":"…","reason":"…","nodeUID":"…"}
//
// A serial entry revokes one certificate; it is pruned once the certificate
// has expired (notAfter). A node entry is a floor: every certificate of that
// node issued before "before" is revoked (certs.IssuedAt), which is what node
// deletion, re-join and keadm revoke <node> write. A certificate issued at or
// after the floor is not affected, so a node joins again simply by getting a
// new certificate.
package revocation

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/pkg/security/certs"
)

const (
	// Namespace and ConfigMapName locate the list; the namespace is
	// KubeEdge's, where cloudcore keeps its Secrets.
	Namespace     = "kubeedge"
	ConfigMapName = "tether-certificate-revocations"

	serialPrefix = "serial."
	nodePrefix   = "node."
)

// Rules name what revoked a certificate, in errors, logs and metric labels.
const (
	RuleSerial = "revoked_serial"
	RuleNode   = "revoked_node"
)

// Reasons recorded in entries by Tether's own writers.
const (
	ReasonNodeDeleted = "node deleted"
	ReasonRejoined    = "re-joined with a re-join token"
	ReasonKeadm       = "keadm revoke"
)

// ErrRevoked is wrapped by every error Check returns for a revoked
// certificate.
var ErrRevoked = errors.New("certificate revoked")

// SerialEntry revokes one certificate.
type SerialEntry struct {
	// Node the certificate was issued to, when known; for messages only.
	Node      string    `json:"node,omitempty"`
	RevokedAt time.Time `json:"revokedAt"`
	// NotAfter is when the certificate expires anyway; the entry is pruned
	// after it. Zero keeps the entry for ever.
	NotAfter time.Time `json:"notAfter,omitzero"`
	Reason   string    `json:"reason,omitempty"`
}

// NodeFloor revokes every certificate of a node issued before Before.
type NodeFloor struct {
	Before time.Time `json:"before"`
	Reason string    `json:"reason,omitempty"`
	// NodeUID is the UID of the deleted Node that caused the floor, so that
	// the deletion is recorded once however many cloudcores see it.
	NodeUID string `json:"nodeUID,omitempty"`
}

// List is the decoded deny-list. The zero value revokes nothing.
type List struct {
	Serials map[string]SerialEntry // by normalized hex serial
	Nodes   map[string]NodeFloor   // by node name
}

// Empty reports whether the list revokes nothing.
func (l List) Empty() bool { return len(l.Serials) == 0 && len(l.Nodes) == 0 }

// SerialKey is the data key of a serial entry.
func SerialKey(serial string) string { return serialPrefix + serial }

// NodeKey is the data key of a node floor.
func NodeKey(node string) string { return nodePrefix + node }

// SerialHex is the canonical form of a certificate serial: lowercase hex
// without leading zeros.
func SerialHex(n *big.Int) string { return n.Text(16) }

// NormalizeSerial accepts a serial as people copy it (openssl's
// "0A:1B:…", "0x0a1b…", upper case) and returns SerialHex of it.
func NormalizeSerial(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "0x")
	t = strings.NewReplacer(":", "", " ", "").Replace(t)
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || n.Sign() <= 0 {
		return "", fmt.Errorf("serial %q is not a positive hexadecimal number", s)
	}
	return SerialHex(n), nil
}

// EncodeSerial and EncodeNode render entry values.
func EncodeSerial(e SerialEntry) (string, error) { return encode(e) }

// EncodeNode renders a node floor.
func EncodeNode(f NodeFloor) (string, error) { return encode(f) }

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode revocation entry: %w", err)
	}
	return string(b), nil
}

// EntryError is a malformed entry Decode skipped.
type EntryError struct {
	Key string
	Err error
}

func (e *EntryError) Error() string { return fmt.Sprintf("revocation entry %q: %v", e.Key, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// Decode reads a ConfigMap's data. Malformed entries are skipped and
// returned as *EntryError, one each, for the caller to log: the rest of the
// list still applies, so a bad entry never turns revocation off.
func Decode(data map[string]string) (List, []error) {
	l := List{Serials: map[string]SerialEntry{}, Nodes: map[string]NodeFloor{}}
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, &EntryError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	for _, key := range slices.Sorted(maps.Keys(data)) {
		value := data[key]
		switch {
		case strings.HasPrefix(key, serialPrefix):
			serial, err := NormalizeSerial(strings.TrimPrefix(key, serialPrefix))
			if err != nil {
				bad(key, "%w", err)
				continue
			}
			var e SerialEntry
			if err := strictUnmarshal(value, &e); err != nil {
				bad(key, "%w", err)
				continue
			}
			if e.RevokedAt.IsZero() {
				bad(key, "no revokedAt")
				continue
			}
			// Two spellings of one serial: the earliest revocation wins, and
			// the entry is kept as long as either wants.
			if old, ok := l.Serials[serial]; ok {
				if old.RevokedAt.Before(e.RevokedAt) {
					e.RevokedAt = old.RevokedAt
				}
				if old.NotAfter.IsZero() || old.NotAfter.After(e.NotAfter) && !e.NotAfter.IsZero() {
					e.NotAfter = old.NotAfter
				}
			}
			l.Serials[serial] = e
		case strings.HasPrefix(key, nodePrefix):
			node := strings.TrimPrefix(key, nodePrefix)
			if msgs := validation.IsDNS1123Subdomain(node); len(msgs) > 0 {
				bad(key, "invalid node name: %s", strings.Join(msgs, "; "))
				continue
			}
			var f NodeFloor
			if err := strictUnmarshal(value, &f); err != nil {
				bad(key, "%w", err)
				continue
			}
			if f.Before.IsZero() {
				bad(key, "no before time")
				continue
			}
			l.Nodes[node] = f
		default:
			bad(key, "unknown key: want %s<hex serial> or %s<node name>", serialPrefix, nodePrefix)
		}
	}
	return l, errs
}

func strictUnmarshal(value string, v any) error {
	dec := json.NewDecoder(strings.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON value: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON value: trailing data")
	}
	return nil
}

// RevokedError says which rule revoked a certificate.
type RevokedError struct {
	Rule   string // RuleSerial or RuleNode
	Node   string
	Serial string
	// At is the revocation time (serial) or the floor (node).
	At       time.Time
	IssuedAt time.Time
	Reason   string
}

func (e *RevokedError) Error() string {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	// Floors are precise; issue times have whole seconds.
	floor := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
	reason := ""
	if e.Reason != "" {
		reason = " (" + e.Reason + ")"
	}
	node := e.Node
	if node == "" {
		node = "<node>"
	}
	switch e.Rule {
	case RuleSerial:
		return fmt.Sprintf("certificate serial %s of node %q was revoked at %s%s [rule %s]; the node must join again with a token from \"keadm gettoken --rejoin %s\"",
			e.Serial, e.Node, ts(e.At), reason, e.Rule, node)
	default:
		return fmt.Sprintf("certificates of node %q issued before %s are revoked%s and this one was issued at %s [rule %s]; the node must join again with a token from \"keadm gettoken --rejoin %s\" (or plain \"keadm gettoken\" if the Node was deleted)",
			e.Node, floor(e.At), reason, ts(e.IssuedAt), e.Rule, node)
	}
}

// Is makes errors.Is(err, ErrRevoked) hold.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// Check returns a *RevokedError if cert is revoked: its serial is listed, or
// it was issued before its node's floor. The node is the one the certificate
// names; see CheckNode for certificates that name none.
func (l List) Check(cert *x509.Certificate) error {
	node, _ := certs.NodeNameFromCert(cert)
	return l.CheckNode(cert, node)
}

// CheckNode is Check for a certificate used on behalf of node, which may be
// a legacy KubeEdge certificate that names no node.
func (l List) CheckNode(cert *x509.Certificate, node string) error {
	if cert == nil || cert.SerialNumber == nil {
		return errors.New("check revocation: no certificate")
	}
	serial := SerialHex(cert.SerialNumber)
	if e, ok := l.Serials[serial]; ok {
		return &RevokedError{Rule: RuleSerial, Node: node, Serial: serial, At: e.RevokedAt, Reason: e.Reason}
	}
	if f, ok := l.Nodes[node]; ok && node != "" {
		if issued := certs.IssuedAt(cert); issued.Before(f.Before) {
			return &RevokedError{Rule: RuleNode, Node: node, Serial: serial, At: f.Before, IssuedAt: issued, Reason: f.Reason}
		}
	}
	return nil
}

// Floor returns the node's floor, if any.
func (l List) Floor(node string) (NodeFloor, bool) {
	f, ok := l.Nodes[node]
	return f, ok
}

// IssueTime is when to date a new certificate of node asked for at now: now,
// or the first whole second at or after the node's floor if that is later.
// X.509 times have whole seconds, so a certificate issued in the same second
// as the floor would otherwise look older than it.
func IssueTime(floor time.Time, now time.Time) time.Time {
	if floor.IsZero() {
		return now
	}
	ceil := floor.Truncate(time.Second)
	if ceil.Before(floor) {
		ceil = ceil.Add(time.Second)
	}
	if now.Truncate(time.Second).Before(ceil) {
		return ceil
	}
	return now
}

// Expired lists the serial keys of data whose certificates have expired by
// now; they can go, since an expired certificate is refused anyway.
// Malformed entries are left for an administrator to look at.
func Expired(data map[string]string, now time.Time) []string {
	var keys []string
	for key, value := range data {
		if !strings.HasPrefix(key, serialPrefix) {
			continue
		}
		var e SerialEntry
		if strictUnmarshal(value, &e) != nil || e.NotAfter.IsZero() {
			continue
		}
		if now.After(e.NotAfter) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys
}
