package devicetwin

import (
	"errors"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/twin"
)

func TestValidateValue(t *testing.T) {
	tests := []struct {
		typ, value string
		wantErr    error
	}{
		{twin.TypeString, "anything at all", nil},
		{"", "x", nil},
		{twin.TypeBytes, "AAEC", nil},
		{twin.TypeInt, "-42", nil},
		{twin.TypeInteger, "7", nil},
		{twin.TypeInt, "abc", errBadValue},
		{twin.TypeInt, "1.5", errBadValue},
		{twin.TypeFloat, "1.5e3", nil},
		{twin.TypeDouble, "NaNa", errBadValue},
		{twin.TypeBoolean, "true", nil},
		{twin.TypeBoolean, "yes", errBadValue},
		{"Updated", "1", errBadType},
		{twin.TypeString, string(make([]byte, maxValueLen+1)), errBadValue},
	}
	for _, tc := range tests {
		if err := validateValue(tc.typ, tc.value); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
			t.Errorf("validateValue(%q, %.20q) = %v, want %v", tc.typ, tc.value, err, tc.wantErr)
		}
	}
}

func TestApplyTwins(t *testing.T) {
	current := map[string]twinRow{
		"status": {Expected: ptr("OFF"), ExpectedVersion: twin.Version{CloudVersion: 5}, Type: twin.TypeString},
		"temp":   {Actual: ptr("20"), ActualVersion: twin.Version{EdgeVersion: 3}, Type: twin.TypeInt, Optional: true},
		"gone":   {Type: twin.TypeDeleted, Optional: true, ExpectedVersion: twin.Version{CloudVersion: 4}},
	}
	tests := []struct {
		name    string
		deal    dealType
		req     map[string]*twin.MsgTwin
		wantErr bool
		check   func(t *testing.T, o *twinOutcome)
	}{
		{name: "rest actual bumps edge version", deal: dealREST,
			req: map[string]*twin.MsgTwin{"temp": {Actual: &twin.Value{Value: ptr("21")}}},
			check: func(t *testing.T, o *twinOutcome) {
				if got := o.changed["temp"]; *got.Actual != "21" || got.ActualVersion.EdgeVersion != 4 || o.inserted["temp"] {
					t.Errorf("changed = %+v", got)
				}
				if c := o.toCloud["temp"]; c.ActualVersion.EdgeVersion != 4 || c.Expected != nil {
					t.Errorf("toCloud = %+v", c)
				}
			}},
		{name: "rest same value is still a report", deal: dealREST,
			req: map[string]*twin.MsgTwin{"temp": {Actual: &twin.Value{Value: ptr("20")}}},
			check: func(t *testing.T, o *twinOutcome) {
				if len(o.document) != 1 || len(o.toCloud) != 1 {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "rest new twin", deal: dealREST,
			req: map[string]*twin.MsgTwin{"hum": {Actual: &twin.Value{Value: ptr("0.5")}, Metadata: &twin.TypeMetadata{Type: twin.TypeFloat}}},
			check: func(t *testing.T, o *twinOutcome) {
				got := o.changed["hum"]
				if !o.inserted["hum"] || got.Type != twin.TypeFloat || !got.Optional || got.ActualVersion != (twin.Version{EdgeVersion: 1}) {
					t.Errorf("changed = %+v", got)
				}
				if d := o.document["hum"]; d.Last != nil || val(d.Current.Actual) != "0.5" {
					t.Errorf("document = %+v", d)
				}
			}},
		{name: "rest revives deleted twin with new type", deal: dealREST,
			req: map[string]*twin.MsgTwin{"gone": {Expected: &twin.Value{Value: ptr("true")}, Metadata: &twin.TypeMetadata{Type: twin.TypeBoolean}}},
			check: func(t *testing.T, o *twinOutcome) {
				if got := o.changed["gone"]; got.Type != twin.TypeBoolean || got.ExpectedVersion != (twin.Version{CloudVersion: 4, EdgeVersion: 1}) {
					t.Errorf("changed = %+v", got)
				}
			}},
		{name: "rest one bad twin fails all", deal: dealREST, wantErr: true,
			req: map[string]*twin.MsgTwin{"temp": {Actual: &twin.Value{Value: ptr("21")}}, "status": {Actual: &twin.Value{}}}},
		{name: "rest optional cannot be regained", deal: dealREST,
			req: map[string]*twin.MsgTwin{"status": {Optional: ptr(true)}},
			check: func(t *testing.T, o *twinOutcome) {
				if !o.empty() {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync newer", deal: dealSync,
			req: map[string]*twin.MsgTwin{"status": {Expected: &twin.Value{Value: ptr("ON")}, ExpectedVersion: &twin.Version{CloudVersion: 6}}},
			check: func(t *testing.T, o *twinOutcome) {
				if got := o.changed["status"]; *got.Expected != "ON" || got.ExpectedVersion.CloudVersion != 6 || len(o.toCloud) != 0 {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync version only is silent", deal: dealSync,
			req: map[string]*twin.MsgTwin{"status": {Expected: &twin.Value{Value: ptr("OFF")}, ExpectedVersion: &twin.Version{CloudVersion: 7}}},
			check: func(t *testing.T, o *twinOutcome) {
				if len(o.changed) != 1 || len(o.document) != 0 {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync stale answers with edge state", deal: dealSync,
			req: map[string]*twin.MsgTwin{"status": {Expected: &twin.Value{Value: ptr("ON")}, ExpectedVersion: &twin.Version{CloudVersion: 4}}},
			check: func(t *testing.T, o *twinOutcome) {
				c := o.toCloud["status"]
				if len(o.changed) != 0 || c == nil || val(c.Expected) != "OFF" || c.ExpectedVersion.CloudVersion != 5 {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync missing version on known value is stale", deal: dealSync,
			req: map[string]*twin.MsgTwin{"status": {Expected: &twin.Value{Value: ptr("ON")}}},
			check: func(t *testing.T, o *twinOutcome) {
				if len(o.changed) != 0 || o.toCloud["status"] == nil {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync empty desired of an int twin is no value", deal: dealSync,
			req: map[string]*twin.MsgTwin{"temp": {Expected: &twin.Value{Value: ptr("")}, Metadata: &twin.TypeMetadata{Type: twin.TypeInt},
				ExpectedVersion: &twin.Version{CloudVersion: 9}}},
			check: func(t *testing.T, o *twinOutcome) {
				if got := o.changed["temp"]; got.Expected != nil || got.ExpectedVersion.CloudVersion != 9 || len(o.document) != 0 {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync delete", deal: dealSync,
			req: map[string]*twin.MsgTwin{"temp": {Metadata: &twin.TypeMetadata{Type: twin.TypeDeleted}}},
			check: func(t *testing.T, o *twinOutcome) {
				if got := o.changed["temp"]; !got.deleted() || got.Actual != nil || o.document["temp"].Current != nil {
					t.Errorf("outcome = %+v", o)
				}
			}},
		{name: "sync skips bad twin, applies the rest", deal: dealSync,
			req: map[string]*twin.MsgTwin{
				"temp":   {Actual: &twin.Value{Value: ptr("hot")}, ActualVersion: &twin.Version{EdgeVersion: 3}},
				"status": {Expected: &twin.Value{Value: ptr("ON")}, ExpectedVersion: &twin.Version{CloudVersion: 6}},
			},
			check: func(t *testing.T, o *twinOutcome) {
				if _, bad := o.changed["temp"]; bad || len(o.changed) != 1 {
					t.Errorf("outcome = %+v", o)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := applyTwins("dev", current, tc.req, tc.deal, 1000)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
	if *current["status"].Expected != "OFF" || current["temp"].ActualVersion.EdgeVersion != 3 {
		t.Errorf("applyTwins modified its input: %+v", current)
	}
}

func TestMergeCloud(t *testing.T) {
	older := &twin.MsgTwin{Expected: &twin.Value{Value: ptr("A")}, ExpectedVersion: &twin.Version{EdgeVersion: 1},
		Actual: &twin.Value{Value: ptr("1")}, ActualVersion: &twin.Version{EdgeVersion: 1}}
	got := mergeCloud(older, &twin.MsgTwin{Actual: &twin.Value{Value: ptr("2")}, ActualVersion: &twin.Version{EdgeVersion: 2}})
	if val(got.Expected) != "A" || val(got.Actual) != "2" || got.ActualVersion.EdgeVersion != 2 {
		t.Errorf("merge = %+v", got)
	}
	del := mergeCloud(older, &twin.MsgTwin{Metadata: &twin.TypeMetadata{Type: twin.TypeDeleted}, ActualVersion: &twin.Version{EdgeVersion: 3}})
	if del.Expected != nil || del.Actual != nil {
		t.Errorf("merge with deletion kept values: %+v", del)
	}
}

func TestResendBackoff(t *testing.T) {
	o := &outbox{resend: time.Minute}
	sent := time.Unix(1000, 0)
	tests := []struct {
		attempts int
		after    time.Duration
		due      bool
	}{
		{1, 59 * time.Second, false},
		{1, time.Minute, true},
		{2, time.Minute, false},
		{2, 2 * time.Minute, true},
		{4, 7 * time.Minute, false},
		{4, 8 * time.Minute, true},
		{40, 29 * time.Minute, false},
		{40, maxResendInterval, true},
	}
	for _, tc := range tests {
		e := &outboxEntry{msgID: "m", sentAt: sent, attempts: tc.attempts}
		if got := o.overdue(e, sent.Add(tc.after)); got != tc.due {
			t.Errorf("attempts %d after %v: overdue = %v, want %v", tc.attempts, tc.after, got, tc.due)
		}
	}
	if !o.overdue(&outboxEntry{}, sent) {
		t.Error("unsent entry is not due")
	}
}
