package devicetwin

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/twin"
)

const memUpdatedTopic = "$hw/events/node/" + testNode + "/membership/updated"

// drain returns everything published before a barrier, topic by topic;
// the barrier's own answer is left out.
func (h *harness) drain() map[string][]string {
	h.t.Helper()
	h.mqtt("$hw/events/device/barrier-none/twin/get", `{"event_id":"barrier"}`)
	out := map[string][]string{}
	for {
		select {
		case msg := <-h.eventbus.got:
			s, _ := msg.Content.(string)
			if msg.Router.Resource == "$hw/events/device/barrier-none/twin/get/result" {
				return out
			}
			out[msg.Router.Resource] = append(out[msg.Router.Resource], s)
		case <-time.After(waitTimeout):
			h.t.Fatal("barrier never answered")
			return nil
		}
	}
}

// lampDevice is a second device with one twin, as the cloud announces it.
func lampDevice(id, expected string, cloudVersion int64) twin.Device {
	return twin.Device{ID: id, Name: id, Description: "lamp",
		Twin: map[string]*twin.MsgTwin{"power": {
			Expected:        &twin.Value{Value: ptr(expected), Metadata: &twin.ValueMetadata{Timestamp: 1}},
			Optional:        ptr(false),
			Metadata:        &twin.TypeMetadata{Type: twin.TypeString},
			ExpectedVersion: &twin.Version{CloudVersion: cloudVersion},
		}}}
}

func detail(devs ...twin.Device) twin.MembershipDetail {
	if devs == nil {
		devs = []twin.Device{}
	}
	return twin.MembershipDetail{BaseMessage: twin.BaseMessage{EventID: "detail-1", Timestamp: 2}, Devices: devs}
}

func ids(devs []twin.Device) []string {
	out := []string{}
	for _, d := range devs {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

// dbState is the stored devices, their twins' desired values and the
// devices with pending reports, for comparing before and after.
func (h *harness) dbState() string {
	h.t.Helper()
	return fmt.Sprint(
		h.query(`SELECT id, name, description FROM device ORDER BY id`),
		h.query(`SELECT deviceid, name, expected, expected_version FROM device_twin ORDER BY deviceid, name`),
		h.query(`SELECT deviceid, name, value FROM device_attr ORDER BY deviceid, name`),
		h.query(`SELECT device, prop FROM tether_twin_outbox ORDER BY device, prop`))
}

func (h *harness) deviceIDs() []string {
	h.t.Helper()
	out := []string{}
	for _, row := range h.query(`SELECT id FROM device ORDER BY id`) {
		out = append(out, row[0].(string))
	}
	return out
}

// withTwoDevices knows counter and lamp, and holds an unconfirmed report of
// counter's, since the link is down.
func withTwoDevices(t *testing.T) *harness {
	t.Helper()
	h := withCounter(t, "", nil)
	h.cloud("membership", twin.MembershipUpdate{BaseMessage: twin.BaseMessage{EventID: "m2"},
		AddedDevices: []twin.Device{lampDevice("lamp", "off", counterRV)}, RemovedDevices: []twin.Device{}})
	h.mqtt(counterTopic+"/twin/update", mapperReport)
	h.drain()
	if rows := h.query(`SELECT device FROM tether_twin_outbox`); len(rows) != 1 {
		t.Fatalf("outbox = %v, want counter's report", rows)
	}
	return h
}

func TestMembershipDetailReplacesDevices(t *testing.T) {
	for _, tc := range []struct {
		name        string
		res         string
		detail      twin.MembershipDetail
		wantDevices []string
		wantAdded   []string // membership/updated; nil: nothing published
		wantRemoved []string
		check       func(t *testing.T, h *harness, pub map[string][]string)
	}{
		{
			name:        "adds new devices and keeps listed ones",
			detail:      detail(counterMembership(counterRV).AddedDevices[0], lampDevice("lamp", "off", counterRV), lampDevice("fan", "slow", 20)),
			wantDevices: []string{"counter", "fan", "lamp"},
			wantAdded:   []string{"counter", "fan", "lamp"},
			wantRemoved: []string{},
			check: func(t *testing.T, h *harness, pub map[string][]string) {
				if got := h.query(`SELECT expected, expected_version FROM device_twin WHERE deviceid = 'fan'`); len(got) != 1 ||
					got[0][0] != "slow" || got[0][1] != `{"cloud":20,"edge":0}` {
					t.Errorf("fan twin = %v", got)
				}
				// Unchanged devices publish no document; the pending report survives.
				if docs := pub[counterTopic+"/twin/update/document"]; len(docs) != 0 {
					t.Errorf("documents for unchanged counter: %v", docs)
				}
				if rows := h.query(`SELECT device FROM tether_twin_outbox`); len(rows) != 1 {
					t.Errorf("outbox = %v, want counter's report kept", rows)
				}
			},
		},
		{
			name:        "updates listed devices as a membership update does",
			res:         "node/" + testNode + "/membership/detail",
			detail:      detail(counterMembership(counterRV).AddedDevices[0], lampDevice("lamp", "on", counterRV+1)),
			wantDevices: []string{"counter", "lamp"},
			wantAdded:   []string{"counter", "lamp"},
			wantRemoved: []string{},
			check: func(t *testing.T, h *harness, pub map[string][]string) {
				if got := h.query(`SELECT expected, expected_version FROM device_twin WHERE deviceid = 'lamp'`); len(got) != 1 ||
					got[0][0] != "on" || got[0][1] != `{"cloud":13,"edge":0}` {
					t.Errorf("lamp twin = %v", got)
				}
				docs := pub["$hw/events/device/lamp/twin/update/document"]
				if len(docs) != 1 {
					t.Fatalf("lamp documents = %v, want one", docs)
				}
				var doc DeviceTwinDocument
				if err := json.Unmarshal([]byte(docs[0]), &doc); err != nil {
					t.Fatal(err)
				}
				if p := doc.Twin["power"]; p == nil || val(p.Last.Expected) != "off" || val(p.Current.Expected) != "on" {
					t.Errorf("lamp document = %s", docs[0])
				}
			},
		},
		{
			name:        "removes devices absent from the list",
			detail:      detail(lampDevice("lamp", "off", counterRV)),
			wantDevices: []string{"lamp"},
			wantAdded:   []string{"lamp"},
			wantRemoved: []string{"counter"},
			check: func(t *testing.T, h *harness, _ map[string][]string) {
				for _, table := range []string{"device_twin", "device_attr"} {
					if rows := h.query(`SELECT * FROM ` + table + ` WHERE deviceid = 'counter'`); len(rows) != 0 {
						t.Errorf("%s still has counter: %v", table, rows)
					}
				}
				if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
					t.Errorf("outbox still has %v", rows)
				}
				// Mappers asking for the removed device get the unknown-device answer.
				h.mqtt(counterTopic+"/twin/get", `{"event_id":"gone"}`)
				var res ErrorResult
				h.published(counterTopic+"/twin/get/result", &res)
				if res.Code != CodeNotFound {
					t.Errorf("twin/get of removed device = %+v", res)
				}
			},
		},
		{
			name:        "an empty list removes every device",
			detail:      detail(),
			wantDevices: []string{},
			wantAdded:   []string{},
			wantRemoved: []string{"counter", "lamp"},
			check: func(t *testing.T, h *harness, _ map[string][]string) {
				for _, table := range []string{"device_twin", "device_attr", "tether_twin_outbox"} {
					if rows := h.query(`SELECT * FROM ` + table); len(rows) != 0 {
						t.Errorf("%s still has %v", table, rows)
					}
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := withTwoDevices(t)
			res := tc.res
			if res == "" {
				res = "membership/detail"
			}
			h.cloud(res, tc.detail)
			pub := h.drain()
			if got := h.deviceIDs(); !slices.Equal(got, tc.wantDevices) {
				t.Errorf("devices = %v, want %v", got, tc.wantDevices)
			}
			updates := pub[memUpdatedTopic]
			if len(updates) != 1 {
				t.Fatalf("membership/updated publications = %v, want one", updates)
			}
			var mu twin.MembershipUpdate
			if err := json.Unmarshal([]byte(updates[0]), &mu); err != nil {
				t.Fatal(err)
			}
			if mu.EventID != tc.detail.EventID || !slices.Equal(ids(mu.AddedDevices), tc.wantAdded) ||
				!slices.Equal(ids(mu.RemovedDevices), tc.wantRemoved) {
				t.Errorf("membership/updated = %s, want added %v removed %v", updates[0], tc.wantAdded, tc.wantRemoved)
			}
			if mu.AddedDevices == nil || mu.RemovedDevices == nil {
				t.Errorf("membership/updated lists must be [], not null: %s", updates[0])
			}
			if tc.check != nil {
				tc.check(t, h, pub)
			}
		})
	}
}

// TestMalformedMembershipDetailIsIgnored: only a list the module can read
// whole may remove devices.
func TestMalformedMembershipDetailIsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content any
	}{
		{"a string", "not a detail"},
		{"an array", []int{1, 2}},
		{"no device list", map[string]any{"event_id": "x"}},
		{"a null device list", map[string]any{"devices": nil}},
		{"a device list of the wrong type", map[string]any{"devices": "counter"}},
		{"a null entry", map[string]any{"devices": []any{nil}}},
		{"an entry of the wrong type", map[string]any{"devices": []any{"counter"}}},
		{"an entry with an invalid id", map[string]any{"devices": []any{map[string]any{"id": "a/+/b"}}}},
		{"a valid entry beside an invalid one", map[string]any{"devices": []any{
			map[string]any{"id": "fan", "name": "fan"}, map[string]any{"id": "counter", "twin": 7}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := withTwoDevices(t)
			before := h.dbState()
			h.cloud("membership/detail", tc.content)
			if pub := h.drain(); len(pub) != 0 {
				t.Errorf("published %v", pub)
			}
			if after := h.dbState(); after != before {
				t.Errorf("database changed:\nbefore %s\nafter  %s", before, after)
			}
			// The module still serves the devices it had.
			h.mqtt(counterTopic+"/twin/get", `{"event_id":"after"}`)
			var res twin.DeviceTwinUpdate
			h.published(counterTopic+"/twin/get/result", &res)
			if res.EventID != "after" || res.Twin["status"] == nil {
				t.Errorf("twin/get after junk = %+v", res)
			}
		})
	}
}

// TestMembershipDetailThenUpdatesInOrder replays what the cloud sends a
// reconnecting node, its detail and the same devices as an update, then a
// later removal and re-add: each applies in arrival order, none is undone.
func TestMembershipDetailThenUpdatesInOrder(t *testing.T) {
	h := withTwoDevices(t)
	lamp := lampDevice("lamp", "off", counterRV)
	h.cloud("membership/detail", detail(lamp))
	h.cloud("membership", twin.MembershipUpdate{AddedDevices: []twin.Device{lamp}, RemovedDevices: []twin.Device{}})
	h.cloud("membership", twin.MembershipUpdate{AddedDevices: []twin.Device{}, RemovedDevices: []twin.Device{{ID: "lamp"}}})
	h.cloud("membership", twin.MembershipUpdate{AddedDevices: counterMembership(counterRV + 1).AddedDevices, RemovedDevices: []twin.Device{}})
	pub := h.drain()
	if got := h.deviceIDs(); !slices.Equal(got, []string{"counter"}) {
		t.Errorf("devices = %v, want [counter]", got)
	}
	if n := len(pub[memUpdatedTopic]); n != 4 {
		t.Errorf("membership/updated publications = %d, want 4", n)
	}
	// Re-added counter is a new device: its report went with the removal.
	if rows := h.query(`SELECT * FROM tether_twin_outbox`); len(rows) != 0 {
		t.Errorf("outbox = %v", rows)
	}
}
