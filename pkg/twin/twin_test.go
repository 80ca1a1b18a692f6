package twin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const (
	eventID = "6f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"
	ts      = int64(1712345678901)
	// rv is the Device's resourceVersion, which the cloud sends as the twin's cloud version.
	rv = int64(4021)
)

func ptr[T any](v T) *T { return &v }

// cloudTwin is a twin as DeviceController announces it: the desired value only, never optional.
func cloudTwin(value, typ string) *MsgTwin {
	return &MsgTwin{
		Expected:        &Value{Value: ptr(value), Metadata: &ValueMetadata{Timestamp: ts}},
		Optional:        ptr(false),
		Metadata:        &TypeMetadata{Type: typ},
		ExpectedVersion: &Version{CloudVersion: rv},
	}
}

// The golden files are the protocol: KubeEdge peers parse these bytes, so a
// change to a tag shows up here as a diff to review, not as a silent break.
// Regenerate with go test ./pkg/twin -update.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		file string
		msg  any // a pointer, so the decoded copy can be compared with it
	}{
		{
			name: "membership update adding a device with twins",
			file: "membership_update.json",
			msg: &MembershipUpdate{
				BaseMessage: BaseMessage{EventID: eventID, Timestamp: ts},
				AddedDevices: []Device{{ID: "counter", Name: "counter", Description: "demo counter",
					Twin: map[string]*MsgTwin{"status": cloudTwin("OFF", TypeString), "limit": cloudTwin("10", TypeInt)}}},
				RemovedDevices: []Device{},
			},
		},
		{
			name: "membership detail",
			file: "membership_detail.json",
			msg: &MembershipDetail{
				BaseMessage: BaseMessage{EventID: eventID, Timestamp: ts},
				Devices:     []Device{{ID: "counter", Name: "counter", Twin: map[string]*MsgTwin{"status": cloudTwin("OFF", TypeString)}}},
			},
		},
		{
			name: "twin cloud_updated with a changed and a removed twin",
			file: "twin_cloud_updated.json",
			msg: &DeviceTwinUpdate{
				BaseMessage: BaseMessage{EventID: eventID, Timestamp: ts},
				Twin:        map[string]*MsgTwin{"status": cloudTwin("ON", TypeString), "mode": cloudTwin("auto", TypeDeleted)},
			},
		},
		{
			name: "twin edge_updated with a reported value and a deleted twin",
			file: "twin_edge_updated.json",
			msg: &DeviceTwinUpdate{
				BaseMessage: BaseMessage{EventID: eventID, Timestamp: ts},
				Twin: map[string]*MsgTwin{
					"status": {
						Expected:        &Value{Value: ptr("ON"), Metadata: &ValueMetadata{Timestamp: ts}},
						Actual:          &Value{Value: ptr("ON"), Metadata: &ValueMetadata{Timestamp: ts + 1000}},
						Optional:        ptr(false),
						Metadata:        &TypeMetadata{Type: TypeString},
						ExpectedVersion: &Version{CloudVersion: rv},
						ActualVersion:   &Version{EdgeVersion: 2},
					},
					"count": {Optional: ptr(true), Metadata: &TypeMetadata{Type: TypeDeleted}, ActualVersion: &Version{EdgeVersion: 3}},
				},
			},
		},
		{
			name: "device state update",
			file: "state_update.json",
			msg: &DeviceStateResult{
				BaseMessage: BaseMessage{EventID: eventID, Timestamp: ts},
				Device:      DeviceState{Name: "counter", State: "online", LastOnline: "2024-04-05T19:34:38Z"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
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
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, golden) {
				t.Fatalf("encoding differs from %s:\ngot:\n%s\nwant:\n%s", path, got, golden)
			}

			// Decoding gives back the same value, so no field is write-only (a lost pointer would read as
			// absent, a lost omitempty as a zero value).
			dec := reflect.New(reflect.TypeOf(tt.msg).Elem()).Interface()
			if err := json.Unmarshal(golden, dec); err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if !reflect.DeepEqual(dec, tt.msg) {
				t.Errorf("decoded %s = %+v, want %+v", path, dec, tt.msg)
			}
			again, err := json.Marshal(dec)
			if err != nil {
				t.Fatalf("re-marshal: %v", err)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, golden); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, want.Bytes()) {
				t.Errorf("round trip differs:\ngot  %s\nwant %s", again, want.Bytes())
			}
		})
	}
}

// The encoding rules that are easy to lose in a refactor, each pinned on its own.
func TestEncodingRules(t *testing.T) {
	tests := []struct {
		name string
		msg  any
		want string
	}{
		{"empty membership lists stay lists", MembershipUpdate{AddedDevices: []Device{}, RemovedDevices: []Device{}},
			`{"event_id":"","timestamp":0,"added_devices":[],"removed_devices":[]}`},
		{"cloud device omits edge-only fields", Device{ID: "d"}, `{"id":"d"}`},
		{"zero version is sent", MsgTwin{ExpectedVersion: &Version{}}, `{"expected_version":{"cloud":0,"edge":0}}`},
		{"empty value differs from no value", MsgTwin{Expected: &Value{Value: ptr("")}, Actual: &Value{}},
			`{"expected":{"value":""},"actual":{}}`},
		{"optional false is sent", MsgTwin{Optional: ptr(false)}, `{"optional":false}`},
		{"null twin", DeviceTwinUpdate{Twin: map[string]*MsgTwin{"gone": nil}}, `{"event_id":"","timestamp":0,"twin":{"gone":null}}`},
		{"attribute value is always sent", MsgAttr{}, `{"value":""}`},
		{"state report always carries the device", DeviceStateResult{},
			`{"event_id":"","timestamp":0,"device":{"name":"","state":"","lastOnlineTime":""}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
