package model

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/uuid"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const (
	reqID  = "2f3a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
	respID = "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
	ts     = int64(1712345678901)
)

func podContent() map[string]any {
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata": map[string]any{
			"name":      "nginx",
			"namespace": "default",
			"labels":    map[string]any{"app": "nginx"},
		},
		"spec": map[string]any{
			"containers": []any{
				map[string]any{"name": "nginx", "image": "nginx:1.27", "ports": []any{map[string]any{"containerPort": 80}}},
			},
			"nodeName": "edge-1",
		},
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		file string
		// msg is encoded and compared to the golden file; nil means the
		// file is hand-written and only decoded.
		msg        *Message
		wantHeader MessageHeader
		wantRoute  MessageRoute
		// wantContent is what GetContentData must return after decoding,
		// compared after JSON compaction for object content.
		wantContent []byte
	}{
		{
			name: "request",
			file: "request.json",
			msg: &Message{
				Header:  MessageHeader{ID: reqID, Timestamp: ts, ResourceVersion: "12345", Sync: true, MessageType: "channel"},
				Router:  MessageRoute{Source: "edgecontroller", Destination: "websocket", Group: GroupResource, Operation: InsertOperation, Resource: "default/configmap/cm1"},
				Content: map[string]any{"data": map[string]any{"key": "value"}},
			},
			wantContent: []byte(`{"data":{"key":"value"}}`),
		},
		{
			name: "response with parent id",
			file: "response.json",
			msg: &Message{
				Header:  MessageHeader{ID: respID, ParentID: reqID, Timestamp: ts},
				Router:  MessageRoute{Source: "edgecontroller", Group: GroupResource, Operation: ResponseOperation, Resource: "default/configmap/cm1"},
				Content: "OK",
			},
			wantContent: []byte("OK"),
		},
		{
			name: "string content holding JSON",
			file: "string_content.json",
			msg: &Message{
				Header:  MessageHeader{ID: reqID, Timestamp: ts},
				Router:  MessageRoute{Source: "edged", Group: GroupMeta, Operation: UpdateOperation, Resource: "default/podstatus/nginx"},
				Content: `{"phase":"Running"}`,
			},
			wantContent: []byte(`{"phase":"Running"}`),
		},
		{
			name: "nested object content",
			file: "nested_content.json",
			msg: &Message{
				Header:  MessageHeader{ID: reqID, Timestamp: ts, ResourceVersion: "987"},
				Router:  MessageRoute{Source: "edgecontroller", Group: GroupResource, Operation: UpdateOperation, Resource: "default/pod/nginx"},
				Content: podContent(),
			},
			wantContent: mustJSON(t, podContent()),
		},
		{
			name: "byte content is base64 on the wire",
			file: "bytes_content.json",
			msg: &Message{
				Header:  MessageHeader{ID: reqID, Timestamp: ts},
				Router:  MessageRoute{Source: "twin", Group: GroupTwin, Operation: UpdateOperation, Resource: "membership"},
				Content: []byte(`{"event_id":"e1"}`),
			},
			// Indistinguishable from string content once decoded.
			wantContent: []byte("eyJldmVudF9pZCI6ImUxIn0="),
		},
		{
			name:        "v1.7 message without destination and type",
			file:        "v1_7_message.json",
			wantHeader:  MessageHeader{ID: reqID, ParentID: respID, Timestamp: ts, Sync: true},
			wantRoute:   MessageRoute{Source: "edgecontroller", Group: GroupResource, Operation: QueryOperation, Resource: "default/servicelist/all"},
			wantContent: []byte(`[{"metadata":{"name":"svc"}}]`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			if tt.msg != nil {
				got, err := json.MarshalIndent(tt.msg, "", "  ")
				if err != nil {
					t.Fatalf("marshal: %v", err)
				}
				got = append(got, '\n')
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want := readFile(t, path)
				if !bytes.Equal(got, want) {
					t.Fatalf("encoding differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
				}
				tt.wantHeader, tt.wantRoute = tt.msg.Header, tt.msg.Router
			}

			golden := readFile(t, path)
			var dec Message
			if err := json.Unmarshal(golden, &dec); err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if dec.Header != tt.wantHeader {
				t.Errorf("header = %+v, want %+v", dec.Header, tt.wantHeader)
			}
			if dec.Router != tt.wantRoute {
				t.Errorf("route = %+v, want %+v", dec.Router, tt.wantRoute)
			}
			data, err := dec.GetContentData()
			if err != nil {
				t.Fatalf("GetContentData: %v", err)
			}
			if _, isRaw := dec.Content.(json.RawMessage); isRaw {
				data = compact(t, data)
			}
			if !bytes.Equal(data, tt.wantContent) {
				t.Errorf("content data = %s, want %s", data, tt.wantContent)
			}

			// Round trip: re-encoding the decoded message reproduces the file.
			again, err := json.Marshal(&dec)
			if err != nil {
				t.Fatalf("re-marshal: %v", err)
			}
			if want := compact(t, golden); !bytes.Equal(again, want) {
				t.Errorf("round trip differs:\ngot  %s\nwant %s", again, want)
			}
		})
	}
}

func TestDecodeKeepsObjectBytes(t *testing.T) {
	// Key order and spacing must survive, since consumers may hash or
	// forward the content verbatim.
	const content = `{"z": 1, "a": [true, null]}`
	in := `{"header":{"msg_id":"x","timestamp":1},"route":{},"content":` + content + `}`
	var m Message
	if err := json.Unmarshal([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	got, err := m.GetContentData()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != content {
		t.Fatalf("GetContentData = %q, want %q", got, content)
	}
}

func TestDecodeContentKinds(t *testing.T) {
	tests := []struct {
		name    string
		content string // JSON text of the content field; "" = field absent
		want    any
	}{
		{"absent", "", nil},
		{"null", "null", nil},
		{"string", `"ack"`, "ack"},
		{"escaped string", `"a\"b\u00e9"`, "a\"bé"},
		{"number", "42", json.RawMessage("42")},
		{"bool", "true", json.RawMessage("true")},
		{"array", `[1,2]`, json.RawMessage(`[1,2]`)},
		{"object", `{"k":"v"}`, json.RawMessage(`{"k":"v"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"header":{"msg_id":"x","timestamp":1},"route":{"operation":"query"}`
			if tt.content != "" {
				in += `,"content":` + tt.content
			}
			in += "}"
			m := Message{Content: "stale"}
			if err := json.Unmarshal([]byte(in), &m); err != nil {
				t.Fatalf("decode %s: %v", in, err)
			}
			if !reflect.DeepEqual(m.Content, tt.want) {
				t.Fatalf("content = %#v, want %#v", m.Content, tt.want)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"header":{"timestamp":"soon"}}`, `{"content":"unterminated}`} {
		var m Message
		if err := json.Unmarshal([]byte(in), &m); err == nil {
			t.Errorf("decode %q: want error", in)
		}
	}
}

func TestUnmarshalContent(t *testing.T) {
	type pod struct {
		Name string `json:"name"`
	}
	tests := []struct {
		name    string
		content any
		want    string
		wantErr bool
	}{
		{"object", map[string]any{"name": "a"}, "a", false},
		{"raw", json.RawMessage(`{"name":"b"}`), "b", false},
		{"json string", `{"name":"c"}`, "c", false},
		{"bytes", []byte(`{"name":"d"}`), "d", false},
		{"base64 string from []byte peer", "eyJuYW1lIjoiZSJ9", "e", false},
		{"garbage", "not json", "", true},
		{"unmarshalable", func() {}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMessage("").FillBody(tt.content)
			var p pod
			err := m.UnmarshalContent(&p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if p.Name != tt.want {
				t.Fatalf("name = %q, want %q", p.Name, tt.want)
			}
		})
	}
}

func TestGetContentData(t *testing.T) {
	tests := []struct {
		name    string
		content any
		want    []byte
	}{
		{"nil", nil, nil},
		{"bytes", []byte{0, 1}, []byte{0, 1}},
		{"string", "hello", []byte("hello")},
		{"raw", json.RawMessage(`{"a":1}`), []byte(`{"a":1}`)},
		{"struct", struct {
			A int `json:"a"`
		}{1}, []byte(`{"a":1}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := (&Message{Content: tt.content}).GetContentData()
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := (&Message{Content: make(chan int)}).GetContentData(); err == nil {
		t.Fatal("channel content: want error")
	}
}

func TestConstructors(t *testing.T) {
	req := NewMessage("").
		BuildRouter("edgecontroller", GroupResource, "default/pod/nginx", QueryOperation).
		SetDestination("websocket").
		SetResourceVersion("7").
		FillBody("q")
	if _, err := uuid.Parse(req.GetID()); err != nil {
		t.Fatalf("id %q is not a UUID: %v", req.GetID(), err)
	}
	if v := uuid.MustParse(req.GetID()).Version(); v != 4 {
		t.Fatalf("uuid version = %d, want 4", v)
	}
	// Millisecond, not second or nanosecond, timestamps: 2020..2100.
	if ts := req.GetTimestamp(); ts < 1577836800000 || ts > 4102444800000 {
		t.Fatalf("timestamp %d is not Unix ms", ts)
	}
	if req.GetResourceVersion() != "7" || req.Router.Destination != "websocket" {
		t.Fatalf("builder lost fields: %v", req)
	}

	resp := NewRespByMessage(req, "r")
	errMsg := NewErrorMessage(req, "boom")
	for _, tc := range []struct {
		m    *Message
		op   string
		body any
	}{{resp, ResponseOperation, "r"}, {errMsg, ResponseErrorOperation, "boom"}} {
		if tc.m.GetID() == req.GetID() || tc.m.GetParentID() != req.GetID() {
			t.Errorf("%s: id %s parent %s, req id %s", tc.op, tc.m.GetID(), tc.m.GetParentID(), req.GetID())
		}
		if tc.m.GetSource() != req.GetSource() || tc.m.GetGroup() != req.GetGroup() || tc.m.GetResource() != req.GetResource() {
			t.Errorf("%s: route %+v does not mirror request %+v", tc.op, tc.m.Router, req.Router)
		}
		if tc.m.GetOperation() != tc.op || tc.m.Content != tc.body || tc.m.IsSync() {
			t.Errorf("%s: got %v content %v", tc.op, tc.m, tc.m.Content)
		}
	}
}

func TestClone(t *testing.T) {
	orig := NewMessage("p").BuildRouter("s", "g", "r", "o").FillBody([]byte("abc"))
	c := orig.Clone()
	c.Header.ID = "other"
	c.Router.Resource = "changed"
	c.Content.([]byte)[0] = 'X'
	if orig.GetID() == "other" || orig.GetResource() != "r" || string(orig.Content.([]byte)) != "abc" {
		t.Fatalf("clone aliases original: %v %q", orig, orig.Content)
	}

	raw := &Message{Content: json.RawMessage(`{"a":1}`)}
	rc := raw.Clone()
	rc.Content.(json.RawMessage)[0] = '['
	if string(raw.Content.(json.RawMessage)) != `{"a":1}` {
		t.Fatal("clone aliases raw content")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	return b
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("compact %s: %v", b, err)
	}
	return buf.Bytes()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
