package mapper

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The $hw twin payloads the mapper reads and writes (kubeedge-protocol.md §13, §14.2). Only the fields it
// uses are declared; everything else in a payload is ignored.

// Topic suffixes under $hw/events/device/{id}.
const (
	suffixUpdate       = "/twin/update"
	suffixUpdateResult = "/twin/update/result"
	suffixDelta        = "/twin/update/delta"
	suffixGet          = "/twin/get"
	suffixGetResult    = "/twin/get/result"
)

// Topics of one device.
type Topics struct {
	Update, UpdateResult, Delta, Get, GetResult string
}

// TopicsFor returns the topics of device id: its name (KubeEdge ≤ v1.16, Tether) or namespace/name (v1.17+).
func TopicsFor(id string) Topics {
	p := "$hw/events/device/" + id
	return Topics{Update: p + suffixUpdate, UpdateResult: p + suffixUpdateResult, Delta: p + suffixDelta,
		Get: p + suffixGet, GetResult: p + suffixGetResult}
}

type twinValue struct {
	Value *string `json:"value"`
}

type msgTwin struct {
	Expected *twinValue `json:"expected,omitempty"`
	Actual   *twinValue `json:"actual,omitempty"`
}

// incoming is the union of /twin/get/result, /twin/update/delta and /twin/update/result: a twin map, a
// delta map, or an error code and reason.
type incoming struct {
	Twin   map[string]*msgTwin `json:"twin"`
	Delta  map[string]string   `json:"delta"`
	Code   int                 `json:"code"`
	Reason string              `json:"reason"`
}

// twinState is what a message says about the counter's twin.
type twinState struct {
	desired string // ON or OFF, upper case
	actual  string // the last count the edge stored; "" if unknown
}

var (
	errMalformed = errors.New("malformed message")
	errNoTwin    = errors.New("no expected value for the property")
)

// errorReply is an error answer from edgecore: {"code":404,"reason":"..."}.
type errorReply struct {
	code   int
	reason string
}

func (e *errorReply) Error() string { return fmt.Sprintf("edgecore answered %d: %s", e.code, e.reason) }

func decode(payload []byte) (*incoming, error) {
	var m incoming
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if m.Code != 0 {
		return nil, &errorReply{code: m.Code, reason: m.Reason}
	}
	return &m, nil
}

// parseState reads property's desired value from a /twin/get/result or /twin/update/delta payload: the
// delta's entry if present, else the twin's expected value.
func parseState(payload []byte, property string) (twinState, error) {
	m, err := decode(payload)
	if err != nil {
		return twinState{}, err
	}
	var st twinState
	t := m.Twin[property]
	if t != nil && t.Actual != nil && t.Actual.Value != nil {
		st.actual = *t.Actual.Value
	}
	switch d, ok := m.Delta[property]; {
	case ok:
		st.desired = d
	case t != nil && t.Expected != nil && t.Expected.Value != nil:
		st.desired = *t.Expected.Value
	default:
		return twinState{}, errNoTwin
	}
	st.desired = strings.ToUpper(strings.TrimSpace(st.desired))
	return st, nil
}

// actualUpdate is the tutorial's report of one count (counter-demo.md §4.3), with a real timestamp:
// {"event_id":"","timestamp":ms,"twin":{"status":{"actual":{"value":"7"},"metadata":{"type":"Updated"}}}}.
type actualUpdate struct {
	EventID   string                  `json:"event_id"`
	Timestamp int64                   `json:"timestamp"`
	Twin      map[string]actualReport `json:"twin"`
}

type actualReport struct {
	Actual   actualValue  `json:"actual"`
	Metadata typeMetadata `json:"metadata"`
}

type actualValue struct {
	Value string `json:"value"`
}

type typeMetadata struct {
	Type string `json:"type"`
}

func encodeActual(property, value string, nowMs int64) []byte {
	b, err := json.Marshal(actualUpdate{Timestamp: nowMs, Twin: map[string]actualReport{
		property: {Actual: actualValue{Value: value}, Metadata: typeMetadata{Type: "Updated"}},
	}})
	if err != nil {
		panic(err) // strings only
	}
	return b
}

// getRequest is the body of /twin/get.
func getRequest(eventID string, nowMs int64) []byte {
	b, err := json.Marshal(struct {
		EventID   string `json:"event_id"`
		Timestamp int64  `json:"timestamp"`
	}{eventID, nowMs})
	if err != nil {
		panic(err)
	}
	return b
}
