// Package model defines the beehive message envelope exchanged between
// modules and, unchanged, between cloudcore and edgecore. The JSON encoding
// is the KubeEdge wire format, so every field name and omitempty rule here is
// part of the protocol.
package model

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// MessageHeader carries identity and correlation data.
type MessageHeader struct {
	ID string `json:"msg_id"`
	// ParentID links a response to its request; it is the only correlation
	// key the protocol uses.
	ParentID string `json:"parent_msg_id,omitempty"`
	// Timestamp is in Unix milliseconds.
	Timestamp int64 `json:"timestamp"`
	// ResourceVersion is the Kubernetes resourceVersion of the object in
	// the content, if any.
	ResourceVersion string `json:"resourceversion,omitempty"`
	Sync            bool   `json:"sync,omitempty"`
	// MessageType is the beehive context type; absent in KubeEdge v1.7.
	MessageType string `json:"type,omitempty"`
}

// MessageRoute says where a message comes from and what it acts on.
type MessageRoute struct {
	Source string `json:"source,omitempty"`
	// Destination is absent in KubeEdge v1.7.
	Destination string `json:"destination,omitempty"`
	Group       string `json:"group,omitempty"`
	Operation   string `json:"operation,omitempty"`
	Resource    string `json:"resource,omitempty"`
}

// Message is the envelope. Content is free-form; after JSON decoding it is
// nil, a string (JSON string content, which includes base64-encoded []byte
// content), or json.RawMessage holding the original bytes of any other JSON
// value, so that re-encoding and GetContentData do not reorder or lose data.
type Message struct {
	Header  MessageHeader `json:"header"`
	Router  MessageRoute  `json:"route"`
	Content any           `json:"content"`
}

// NewMessage returns a message with a fresh UUIDv4 id and the current time.
func NewMessage(parentID string) *Message {
	return &Message{Header: MessageHeader{
		ID:        uuid.NewString(),
		ParentID:  parentID,
		Timestamp: time.Now().UnixMilli(),
	}}
}

// BuildRouter sets source, group, resource and operation.
func (m *Message) BuildRouter(source, group, resource, operation string) *Message {
	m.Router.Source = source
	m.Router.Group = group
	m.Router.Resource = resource
	m.Router.Operation = operation
	return m
}

// SetDestination sets route.destination.
func (m *Message) SetDestination(dest string) *Message {
	m.Router.Destination = dest
	return m
}

// SetResourceVersion sets header.resourceversion.
func (m *Message) SetResourceVersion(rv string) *Message {
	m.Header.ResourceVersion = rv
	return m
}

// FillBody sets the content.
func (m *Message) FillBody(content any) *Message {
	m.Content = content
	return m
}

// GetID returns header.msg_id.
func (m *Message) GetID() string { return m.Header.ID }

// GetParentID returns header.parent_msg_id.
func (m *Message) GetParentID() string { return m.Header.ParentID }

// GetTimestamp returns header.timestamp (Unix ms).
func (m *Message) GetTimestamp() int64 { return m.Header.Timestamp }

// GetResourceVersion returns header.resourceversion.
func (m *Message) GetResourceVersion() string { return m.Header.ResourceVersion }

// IsSync reports header.sync.
func (m *Message) IsSync() bool { return m.Header.Sync }

// GetSource returns route.source.
func (m *Message) GetSource() string { return m.Router.Source }

// GetGroup returns route.group.
func (m *Message) GetGroup() string { return m.Router.Group }

// GetOperation returns route.operation.
func (m *Message) GetOperation() string { return m.Router.Operation }

// GetResource returns route.resource.
func (m *Message) GetResource() string { return m.Router.Resource }

// String describes the message for logs; it omits the content on purpose,
// because contents may hold secrets and can be large.
func (m *Message) String() string {
	return fmt.Sprintf("id=%s parent=%s source=%s dest=%s group=%s op=%s resource=%s",
		m.Header.ID, m.Header.ParentID, m.Router.Source, m.Router.Destination,
		m.Router.Group, m.Router.Operation, m.Router.Resource)
}

// GetContentData returns the content bytes as KubeEdge defines them: []byte
// as is, a string's bytes, and the JSON encoding of anything else. Decoded
// object content is returned byte-for-byte as received.
func (m *Message) GetContentData() ([]byte, error) {
	switch c := m.Content.(type) {
	case nil:
		return nil, nil
	case []byte:
		return c, nil
	case json.RawMessage:
		return c, nil
	case string:
		return []byte(c), nil
	default:
		data, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("marshal content of message %s: %w", m.Header.ID, err)
		}
		return data, nil
	}
}

// UnmarshalContent decodes the content bytes as JSON into v. Peers that put
// a Go []byte into content send it base64-encoded, which arrives here as a
// string; if a string is not valid JSON but is valid base64, the decoded
// bytes are used instead. Valid JSON always wins, so string content that is
// both (e.g. "1234") is read as JSON.
func (m *Message) UnmarshalContent(v any) error {
	data, err := m.GetContentData()
	if err != nil {
		return err
	}
	if s, ok := m.Content.(string); ok && !json.Valid(data) {
		if raw, b64err := base64.StdEncoding.DecodeString(s); b64err == nil {
			data = raw
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("unmarshal content of message %s into %T: %w", m.Header.ID, v, err)
	}
	return nil
}

// Clone returns a copy whose header, route and byte content can be changed
// without affecting m. Other content values are shared and must be treated
// as immutable once sent.
func (m *Message) Clone() *Message {
	c := *m
	switch v := m.Content.(type) {
	case []byte:
		c.Content = bytes.Clone(v)
	case json.RawMessage:
		c.Content = json.RawMessage(bytes.Clone(v))
	}
	return &c
}

// UnmarshalJSON decodes the wire format, keeping non-string content raw.
func (m *Message) UnmarshalJSON(data []byte) error {
	var w struct {
		Header  MessageHeader   `json:"header"`
		Router  MessageRoute    `json:"route"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("decode message: %w", err)
	}
	m.Header, m.Router, m.Content = w.Header, w.Router, nil
	raw := bytes.TrimSpace(w.Content)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("decode string content of message %s: %w", w.Header.ID, err)
		}
		m.Content = s
	default:
		m.Content = json.RawMessage(raw)
	}
	return nil
}

// NewRespByMessage builds the response to req: new id, parent = req's id,
// same source, group and resource, operation "response".
func NewRespByMessage(req *Message, content any) *Message {
	return NewMessage(req.Header.ID).
		BuildRouter(req.Router.Source, req.Router.Group, req.Router.Resource, ResponseOperation).
		FillBody(content)
}

// NewErrorMessage builds an error response to req carrying text as content.
func NewErrorMessage(req *Message, text string) *Message {
	return NewMessage(req.Header.ID).
		BuildRouter(req.Router.Source, req.Router.Group, req.Router.Resource, ResponseErrorOperation).
		FillBody(text)
}
