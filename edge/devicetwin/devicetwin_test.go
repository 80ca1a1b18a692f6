package devicetwin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/twin"
)

const (
	counterTopic = "$hw/events/device/counter"
	// The counter mapper's report, byte for byte but with a valid type.
	mapperReport = `{"event_id":"","timestamp":0,"twin":{"status":{"actual":{"value":"3"},"metadata":{"type":"string"}}}}`
)

func TestMembershipAddAndRemove(t *testing.T) {
	h := newHarness(t, "", nil)
	h.cloud("membership", counterMembership(counterRV))

	var added twin.MembershipUpdate
	h.published("$hw/events/node/edge-1/membership/updated", &added)
	if len(added.AddedDevices) != 1 || len(added.RemovedDevices) != 0 {
		t.Fatalf("membership/updated = %+v, want one added device", added)
	}
	d := added.AddedDevices[0]
	st := d.Twin["status"]
	if d.ID != "counter" || d.Name != "counter" || st == nil || val(st.Expected) != "OFF" ||
		st.Metadata.Type != twin.TypeString || *st.Optional {
		t.Fatalf("added device = %+v, status = %+v", d, st)
	}
	if st.ExpectedVersion != nil || st.ActualVersion != nil {
		t.Errorf("membership/updated carries versions: %+v", st)
	}

	if got := h.query(`SELECT id, name, description FROM device`); len(got) != 1 ||
		got[0][0] != "counter" || got[0][1] != "counter" || got[0][2] != "counter" {
		t.Errorf("device rows = %v", got)
	}
	got := h.query(`SELECT expected, actual, expected_version, optional, attr_type FROM device_twin
		WHERE deviceid = 'counter' AND name = 'status'`)
	if len(got) != 1 || got[0][0] != "OFF" || got[0][1] != nil || got[0][2] != `{"cloud":12,"edge":0}` ||
		got[0][3] != int64(0) || got[0][4] != twin.TypeString {
		t.Errorf("status twin row = %v", got)
	}

	h.cloud("membership", twin.MembershipUpdate{RemovedDevices: []twin.Device{{ID: "counter", Name: "counter"}}})
	var removed twin.MembershipUpdate
	h.published("$hw/events/node/edge-1/membership/updated", &removed)
	if len(removed.RemovedDevices) != 1 || removed.RemovedDevices[0].ID != "counter" || len(removed.AddedDevices) != 0 {
		t.Fatalf("membership/updated = %+v, want counter removed", removed)
	}
	for _, table := range []string{"device", "device_twin", "device_attr", "tether_twin_outbox"} {
		if rows := h.query(`SELECT * FROM ` + table); len(rows) != 0 {
			t.Errorf("%s still has %v", table, rows)
		}
	}
}

func TestCloudUpdatedPublishesDocumentAndDelta(t *testing.T) {
	h := withCounter(t, "", nil)
	h.cloud("device/counter/twin/cloud_updated", twin.DeviceTwinUpdate{
		BaseMessage: twin.BaseMessage{EventID: "c1", Timestamp: 2},
		Twin: map[string]*twin.MsgTwin{"status": {
			Expected:        &twin.Value{Value: ptr("ON"), Metadata: &twin.ValueMetadata{Timestamp: 2}},
			Optional:        ptr(false),
			Metadata:        &twin.TypeMetadata{Type: twin.TypeString},
			ExpectedVersion: &twin.Version{CloudVersion: 13},
		}},
	})

	var doc DeviceTwinDocument
	h.published(counterTopic+"/twin/update/document", &doc)
	sd := doc.Twin["status"]
	if doc.EventID != "c1" || len(doc.Twin) != 1 || sd == nil || sd.Last == nil || sd.Current == nil ||
		val(sd.Last.Expected) != "OFF" || val(sd.Current.Expected) != "ON" || sd.Current.Expected.Metadata.Timestamp == 0 {
		t.Fatalf("document = %+v", doc)
	}
	var dl DeviceTwinDelta
	h.published(counterTopic+"/twin/update/delta", &dl)
	if dl.EventID == "" || dl.Timestamp == 0 || len(dl.Delta) != 1 || dl.Delta["status"] != "ON" ||
		val(dl.Twin["status"].Expected) != "ON" || dl.Twin["count"] == nil {
		t.Fatalf("delta = %+v", dl)
	}
	if got := h.query(`SELECT expected, expected_version FROM device_twin WHERE name = 'status'`); got[0][0] != "ON" ||
		got[0][1] != `{"cloud":13,"edge":0}` {
		t.Errorf("status row = %v", got)
	}
}

func TestMapperUpdateReachesCloud(t *testing.T) {
	h := withCounter(t, "", nil)
	h.link(model.ContentCloudConnected)
	h.mqtt(counterTopic+"/twin/update", mapperReport)

	var res twin.DeviceTwinUpdate
	h.published(counterTopic+"/twin/update/result", &res)
	if st := res.Twin["status"]; st == nil || val(st.Actual) != "3" || st.ActualVersion != nil || st.Expected != nil {
		t.Fatalf("update/result = %+v", res)
	}
	var doc DeviceTwinDocument
	h.published(counterTopic+"/twin/update/document", &doc)
	if c := doc.Twin["status"].Current; val(c.Actual) != "3" || val(c.Expected) != "OFF" {
		t.Fatalf("document current = %+v", c)
	}
	var dl DeviceTwinDelta
	h.published(counterTopic+"/twin/update/delta", &dl)
	if dl.Delta["status"] != "OFF" {
		t.Fatalf("delta = %+v", dl)
	}

	rep := h.report()
	if r := rep.Router; r.Source != modules.DeviceTwin || r.Group != model.GroupTwin || r.Operation != model.UpdateOperation ||
		r.Resource != "device/counter/twin/edge_updated" {
		t.Fatalf("report route = %+v", r)
	}
	var up twin.DeviceTwinUpdate
	if err := rep.UnmarshalContent(&up); err != nil {
		t.Fatal(err)
	}
	st := up.Twin["status"]
	if up.EventID == "" || up.Timestamp == 0 || st == nil || val(st.Actual) != "3" || st.Actual.Metadata.Timestamp == 0 ||
		st.Metadata.Type != twin.TypeString || st.ActualVersion == nil || *st.ActualVersion != (twin.Version{EdgeVersion: 1}) ||
		st.Expected != nil {
		t.Fatalf("edge_updated = %s", mustJSON(t, up))
	}
	// The desired value is the cloud's; a report must not touch it.
	if got := h.query(`SELECT expected, actual, actual_version FROM device_twin WHERE name = 'status'`); got[0][0] != "OFF" ||
		got[0][1] != "3" || got[0][2] != `{"cloud":0,"edge":1}` {
		t.Errorf("status row = %v", got)
	}

	h.confirm(rep)
	h.barrier()
	if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
		t.Errorf("outbox after confirmation = %v", rows)
	}
}

// TestMQTTRequests covers every app-facing request and its error codes.
func TestMQTTRequests(t *testing.T) {
	type answer struct {
		EventID string                   `json:"event_id"`
		Code    int                      `json:"code"`
		Reason  string                   `json:"reason"`
		Twin    map[string]*twin.MsgTwin `json:"twin"`
		Device  *twin.DeviceState        `json:"device"`
		Devices []twin.Device            `json:"devices"`
	}
	tests := []struct {
		name, topic, payload string
		resultTopic          string
		code                 int    // 0: success
		reason               string // substring of the error reason
		check                func(t *testing.T, a answer)
	}{
		{name: "get", topic: counterTopic + "/twin/get", payload: `{"event_id":"g1","timestamp":5}`,
			resultTopic: counterTopic + "/twin/get/result",
			check: func(t *testing.T, a answer) {
				if a.EventID != "g1" || val(a.Twin["status"].Expected) != "OFF" || a.Twin["status"].ExpectedVersion != nil {
					t.Errorf("get/result = %+v", a)
				}
			}},
		{name: "get unknown device", topic: "$hw/events/device/nope/twin/get", payload: `{"event_id":"g2"}`,
			resultTopic: "$hw/events/device/nope/twin/get/result", code: 404, reason: "nope"},
		{name: "update unknown device", topic: "$hw/events/device/nope/twin/update", payload: mapperReport,
			resultTopic: "$hw/events/device/nope/twin/update/result", code: 404},
		{name: "malformed JSON", topic: counterTopic + "/twin/update", payload: `{"twin":`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "malformed"},
		{name: "no twin", topic: counterTopic + "/twin/update", payload: `{"event_id":"u0"}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400},
		{name: "bad twin name", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u1","twin":{"bad name!":{"actual":{"value":"1"}}}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "bad name!"},
		{name: "bad int value", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u2","twin":{"count":{"actual":{"value":"abc"}}}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "not a valid int"},
		{name: "bad float on new twin", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u3","twin":{"temp":{"actual":{"value":"hot"},"metadata":{"type":"double"}}}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "double"},
		{name: "unsupported type on new twin", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u4","twin":{"temp":{"actual":{"value":"1"},"metadata":{"type":"Updated"}}}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "unsupported type"},
		{name: "value without value", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u5","twin":{"status":{"actual":{}}}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400},
		{name: "delete required twin", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"u6","twin":{"status":null}}`,
			resultTopic: counterTopic + "/twin/update/result", code: 400, reason: "not optional"},
		{name: "counter mapper type kept", topic: counterTopic + "/twin/update",
			payload:     `{"event_id":"","timestamp":0,"twin":{"status":{"actual":{"value":"7"},"metadata":{"type":"Updated"}}}}`,
			resultTopic: counterTopic + "/twin/update/result",
			check: func(t *testing.T, a answer) {
				if st := a.Twin["status"]; val(st.Actual) != "7" || st.Metadata.Type != twin.TypeString {
					t.Errorf("update/result = %+v", st)
				}
			}},
		{name: "state online", topic: counterTopic + "/state/update", payload: `{"event_id":"s1","timestamp":1,"state":"Online"}`,
			resultTopic: counterTopic + "/state/update/result",
			check: func(t *testing.T, a answer) {
				if a.EventID != "s1" || a.Device == nil || a.Device.Name != "counter" || a.Device.State != "online" {
					t.Fatalf("state/update/result = %+v", a)
				}
				if _, err := time.Parse(time.RFC3339, a.Device.LastOnline); err != nil {
					t.Errorf("lastOnlineTime: %v", err)
				}
			}},
		{name: "state invalid", topic: counterTopic + "/state/update", payload: `{"event_id":"s2","state":"sleepy"}`,
			resultTopic: counterTopic + "/state/update/result", code: 400, reason: "sleepy"},
		{name: "state unknown device", topic: "$hw/events/device/nope/state/update", payload: `{"state":"online"}`,
			resultTopic: "$hw/events/device/nope/state/update/result", code: 404},
		{name: "membership get", topic: "$hw/events/node/edge-1/membership/get", payload: `{"event_id":"mg"}`,
			resultTopic: "$hw/events/node/edge-1/membership/get/result",
			check: func(t *testing.T, a answer) {
				if a.EventID != "mg" || len(a.Devices) != 1 || a.Devices[0].ID != "counter" || a.Devices[0].Description != "counter" {
					t.Errorf("membership/get/result = %+v", a)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := withCounter(t, "", nil)
			h.mqtt(tc.topic, tc.payload)
			var a answer
			h.published(tc.resultTopic, &a)
			if a.Code != tc.code || !strings.Contains(a.Reason, tc.reason) {
				t.Fatalf("answer code %d reason %q, want %d containing %q", a.Code, a.Reason, tc.code, tc.reason)
			}
			if tc.code != 0 && a.Twin != nil {
				t.Errorf("error answer carries twins: %+v", a)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
			if tc.code != 0 {
				// A refused request changes nothing and is not reported.
				h.barrier()
				if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
					t.Errorf("outbox after refused request = %v", rows)
				}
			}
		})
	}
}

func TestCloudVersionRule(t *testing.T) {
	tests := []struct {
		name string
		// localExpected, if set, is an app's change of the desired value
		// first (edge version 1).
		localExpected string
		version       twin.Version
		accept        bool
	}{
		{name: "newer", version: twin.Version{CloudVersion: counterRV + 1}, accept: true},
		{name: "same", version: twin.Version{CloudVersion: counterRV}, accept: true},
		{name: "stale cloud version", version: twin.Version{CloudVersion: counterRV - 1}},
		{name: "edge changed since", localExpected: "AUTO", version: twin.Version{CloudVersion: counterRV + 1}},
		{name: "cloud saw edge change", localExpected: "AUTO", version: twin.Version{CloudVersion: counterRV + 1, EdgeVersion: 1}, accept: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := withCounter(t, "", nil)
			h.link(model.ContentCloudConnected)
			want := "OFF"
			if tc.localExpected != "" {
				want = tc.localExpected
				h.mqtt(counterTopic+"/twin/update", `{"twin":{"status":{"expected":{"value":"`+want+`"}}}}`)
				var ignore json.RawMessage
				for _, s := range []string{"/twin/update/result", "/twin/update/document", "/twin/update/delta"} {
					h.published(counterTopic+s, &ignore)
				}
				h.confirm(h.report())
			}
			h.cloud("device/counter/twin/cloud_updated", twin.DeviceTwinUpdate{Twin: map[string]*twin.MsgTwin{"status": {
				Expected:        &twin.Value{Value: ptr("ON")},
				Metadata:        &twin.TypeMetadata{Type: twin.TypeString},
				ExpectedVersion: &tc.version,
			}}})
			if tc.accept {
				var doc DeviceTwinDocument
				h.published(counterTopic+"/twin/update/document", &doc)
				if val(doc.Twin["status"].Current.Expected) != "ON" {
					t.Fatalf("document = %+v", doc)
				}
				return
			}
			// Refused: nothing for apps, and the cloud gets our state back.
			rep := h.report()
			var up twin.DeviceTwinUpdate
			if err := rep.UnmarshalContent(&up); err != nil {
				t.Fatal(err)
			}
			st := up.Twin["status"]
			if rep.Router.Resource != "device/counter/twin/edge_updated" || st == nil || val(st.Expected) != want ||
				st.ExpectedVersion == nil || st.ExpectedVersion.CloudVersion != counterRV {
				t.Fatalf("edge_updated = %s", mustJSON(t, up))
			}
			h.barrier()
			if got := h.query(`SELECT expected FROM device_twin WHERE name = 'status'`); got[0][0] != want {
				t.Errorf("expected = %v, want %s", got[0][0], want)
			}
		})
	}
}

// TestOfflineReportsSurviveRestart: reports made while the cloud is away
// wait, coalesced, in the database, go out on cloud_connected after a
// restart, and leave once the cloud confirms them.
func TestOfflineReportsSurviveRestart(t *testing.T) {
	h := withCounter(t, "", nil)
	for _, v := range []string{"1", "2"} {
		h.mqtt(counterTopic+"/twin/update", `{"twin":{"status":{"actual":{"value":"`+v+`"}}}}`)
		var ignore json.RawMessage
		for _, s := range []string{"/twin/update/result", "/twin/update/document", "/twin/update/delta"} {
			h.published(counterTopic+s, &ignore)
		}
	}
	h.mqtt(counterTopic+"/state/update", `{"state":"online"}`)
	var ignore json.RawMessage
	h.published(counterTopic+"/state/update/result", &ignore)
	h.barrier()
	h.noReport()
	if rows := h.query(`SELECT kind, device, prop FROM tether_twin_outbox ORDER BY seq`); len(rows) != 2 ||
		rows[0][0] != kindTwin || rows[0][2] != "status" || rows[1][0] != kindState {
		t.Fatalf("outbox = %v, want one twin and one state entry", rows)
	}
	h.stop()

	h = newHarness(t, h.dbPath, nil)
	h.link(model.ContentCloudConnected)
	twinRep, stateRep := h.report(), h.report()
	if twinRep.Router.Resource != "device/counter/twin/edge_updated" || stateRep.Router.Resource != "device/counter/state/update" {
		t.Fatalf("reports = %s, %s", twinRep.String(), stateRep.String())
	}
	var up twin.DeviceTwinUpdate
	if err := twinRep.UnmarshalContent(&up); err != nil {
		t.Fatal(err)
	}
	if st := up.Twin["status"]; val(st.Actual) != "2" || *st.ActualVersion != (twin.Version{EdgeVersion: 2}) {
		t.Errorf("edge_updated = %s, want the newest value", mustJSON(t, up))
	}
	content, ok := stateRep.Content.(string)
	var sr twin.DeviceStateResult
	if !ok || json.Unmarshal([]byte(content), &sr) != nil || sr.Device.State != "online" || sr.Device.Name != "counter" {
		t.Errorf("state report content = %#v", stateRep.Content)
	}

	h.confirm(twinRep)
	h.barrier()
	if rows := h.query(`SELECT kind FROM tether_twin_outbox`); len(rows) != 1 || rows[0][0] != kindState {
		t.Fatalf("outbox = %v, want only the state entry", rows)
	}
	h.confirm(stateRep)
	h.barrier()
	if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
		t.Fatalf("outbox = %v, want empty", rows)
	}
}

// TestNewerValueOutlivesOlderConfirmation: the confirmation of a report
// must not retire a newer value that replaced it while in flight.
func TestNewerValueOutlivesOlderConfirmation(t *testing.T) {
	h := withCounter(t, "", nil)
	h.link(model.ContentCloudConnected)
	var reps []model.Message
	for _, v := range []string{"1", "2"} {
		h.mqtt(counterTopic+"/twin/update", `{"twin":{"status":{"actual":{"value":"`+v+`"}}}}`)
		var ignore json.RawMessage
		for _, s := range []string{"/twin/update/result", "/twin/update/document", "/twin/update/delta"} {
			h.published(counterTopic+s, &ignore)
		}
		reps = append(reps, h.report())
	}
	h.confirm(reps[0])
	h.barrier()
	if rows := h.query(`SELECT payload FROM tether_twin_outbox`); len(rows) != 1 || !strings.Contains(rows[0][0].(string), `"2"`) {
		t.Fatalf("outbox = %v, want the newer value", rows)
	}
	h.confirm(reps[1])
	h.barrier()
	if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
		t.Fatalf("outbox = %v, want empty", rows)
	}
}

func TestUnconfirmedReportIsResent(t *testing.T) {
	h := withCounter(t, "", func(d *DeviceTwin) { d.resend = 20 * time.Millisecond })
	h.link(model.ContentCloudConnected)
	h.mqtt(counterTopic+"/twin/update", mapperReport)
	var ignore json.RawMessage
	for _, s := range []string{"/twin/update/result", "/twin/update/document", "/twin/update/delta"} {
		h.published(counterTopic+s, &ignore)
	}
	first, again := h.report(), h.report()
	if first.Header.ID == again.Header.ID || again.Router.Resource != first.Router.Resource {
		t.Fatalf("resent %s after %s", again.String(), first.String())
	}
	h.confirm(again)
	h.barrier()
	if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
		t.Fatalf("outbox = %v, want empty", rows)
	}
}

// TestJunkNeverStopsTheModule feeds malformed messages of every origin;
// the module must log them and keep serving.
func TestJunkNeverStopsTheModule(t *testing.T) {
	h := withCounter(t, "", nil)
	h.cloud("membership", "not a membership")
	h.cloud("membership", map[string]any{"added_devices": []any{map[string]any{"id": "a/+/b"}, nil}})
	h.cloud("device/counter/twin/cloud_updated", []int{1, 2})
	h.cloud("device/counter/twin/cloud_updated", map[string]any{"twin": map[string]any{"status": nil, "bad key!": map[string]any{}}})
	h.cloud("device/ghost/twin/cloud_updated", map[string]any{"twin": map[string]any{}})
	h.cloud("default/device/counter", map[string]any{"kind": "Device"})
	h.cloud("device//", nil)
	h.toTwin(*model.NewMessage("").BuildRouter("bus", model.GroupUser, "%%%", model.ResponseOperation).FillBody([]byte{0xff}))
	h.mqtt("$hw/events/device/+/twin/update", mapperReport)
	h.mqtt("$hw/events/connected/counter", "")
	h.mqtt(counterTopic+"/state/get", "")
	h.mqtt(counterTopic+"/twin/cloud_updated", `{"twin":{"status":{"expected":{"value":"ON"},"expected_version":{"cloud":999999,"edge":0}}}}`)
	h.mqtt("$hw/events/node/other/membership/get", "{}")
	h.link("half_connected")
	h.toTwin(*model.NewMessage("unknown-parent").BuildRouter(modules.DeviceController, model.GroupTwin, "twin", model.ResponseOperation))
	h.barrier()

	// Still fully working.
	h.mqtt(counterTopic+"/twin/get", `{"event_id":"after"}`)
	var res twin.DeviceTwinUpdate
	h.published(counterTopic+"/twin/get/result", &res)
	if res.EventID != "after" || val(res.Twin["status"].Expected) != "OFF" {
		t.Fatalf("get/result = %+v", res)
	}
}

func TestOptionalTwinDeletedByApp(t *testing.T) {
	h := withCounter(t, "", nil)
	h.link(model.ContentCloudConnected)
	h.mqtt(counterTopic+"/twin/update", `{"event_id":"d1","twin":{"count":{"actual":{"value":"5"}}}}`)
	var ignore json.RawMessage
	h.published(counterTopic+"/twin/update/result", &ignore)
	h.published(counterTopic+"/twin/update/document", &ignore)
	h.published(counterTopic+"/twin/update/delta", &ignore)
	h.confirm(h.report())

	h.mqtt(counterTopic+"/twin/update", `{"event_id":"d2","twin":{"count":null}}`)
	var res map[string]any
	h.published(counterTopic+"/twin/update/result", &res)
	if tw, ok := res["twin"].(map[string]any); !ok || tw["count"] != nil {
		t.Fatalf("update/result = %v, want count: null", res)
	} else if _, present := tw["count"]; !present {
		t.Fatalf("update/result = %v, want count: null", res)
	}
	var doc DeviceTwinDocument
	h.published(counterTopic+"/twin/update/document", &doc)
	if c := doc.Twin["count"]; c == nil || c.Last == nil || c.Current != nil {
		t.Fatalf("document = %+v", doc)
	}
	h.published(counterTopic+"/twin/update/delta", &ignore)
	var up twin.DeviceTwinUpdate
	rep := h.report()
	if err := rep.UnmarshalContent(&up); err != nil {
		t.Fatal(err)
	}
	if c := up.Twin["count"]; c == nil || c.Metadata.Type != twin.TypeDeleted || *c.ActualVersion != (twin.Version{EdgeVersion: 2}) {
		t.Fatalf("edge_updated = %s", mustJSON(t, up))
	}
	h.mqtt(counterTopic+"/twin/get", `{}`)
	var get twin.DeviceTwinUpdate
	h.published(counterTopic+"/twin/get/result", &get)
	if _, ok := get.Twin["count"]; ok {
		t.Errorf("get/result still lists the deleted twin: %+v", get.Twin)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
