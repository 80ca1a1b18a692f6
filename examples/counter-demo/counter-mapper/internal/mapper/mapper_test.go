package mapper

import (
	"encoding/json"
	"testing"
)

// Payloads as Tether's (and KubeEdge's) DeviceTwin publishes them.
const (
	getResultOn   = `{"event_id":"e1","timestamp":1761000000000,"twin":{"status":{"expected":{"value":"ON","metadata":{"timestamp":1761000000000}},"actual":{"value":"7","metadata":{"timestamp":1761000000000}},"optional":false,"metadata":{"type":"string"}}}}`
	getResultOff  = `{"event_id":"","timestamp":1,"twin":{"status":{"expected":{"value":"OFF"},"actual":{"value":"0"},"metadata":{"type":"string"}}}}`
	getResultOff5 = `{"event_id":"","timestamp":1,"twin":{"status":{"expected":{"value":"OFF"},"actual":{"value":"5"},"metadata":{"type":"string"}}}}`
	getResult404  = `{"event_id":"","timestamp":1,"code":404,"reason":"device \"counter\" does not exist"}`
	deltaOn       = `{"event_id":"d1","timestamp":1,"twin":{"status":{"expected":{"value":"ON"},"actual":{"value":"9"},"metadata":{"type":"string"}}},"delta":{"status":"ON"}}`
	deltaOff      = `{"event_id":"d2","timestamp":1,"twin":{"status":{"expected":{"value":"OFF"},"actual":{"value":"3"},"metadata":{"type":"string"}}},"delta":{"status":"OFF"}}`
)

type step struct {
	getResult bool // else delta
	payload   string
}

func TestMapper(t *testing.T) {
	for _, tc := range []struct {
		name       string
		steps      []step
		wantOn     bool
		wantFirst  int    // with wantOn: the first count published
		wantValues string // without wantOn: exactly these values, as JSON
		wantSynced bool
	}{
		{name: "get/result ON at start resumes counting after the reported count",
			steps: []step{{true, getResultOn}}, wantOn: true, wantFirst: 8, wantSynced: true},
		{name: "get/result OFF at start stays idle",
			steps: []step{{true, getResultOff}}, wantValues: `[]`, wantSynced: true},
		{name: "get/result OFF with a stale count resets it",
			steps: []step{{true, getResultOff5}}, wantValues: `["0"]`, wantSynced: true},
		{name: "delta ON counts from 1",
			steps: []step{{false, deltaOn}}, wantOn: true, wantFirst: 1, wantSynced: true},
		{name: "repeated delta ON does not restart",
			steps: []step{{false, deltaOn}, {false, deltaOn}, {true, getResultOn}}, wantOn: true, wantFirst: 1, wantSynced: true},
		{name: "delta OFF after ON publishes 0",
			steps: []step{{false, deltaOn}, {false, deltaOff}}, wantSynced: true},
		{name: "lower-case desired value",
			steps: []step{{false, `{"twin":{"status":{"expected":{"value":" on "}}}}`}}, wantOn: true, wantFirst: 1, wantSynced: true},
		{name: "delta map without twin",
			steps: []step{{false, `{"delta":{"status":"ON"}}`}}, wantOn: true, wantFirst: 1, wantSynced: true},
		{name: "404 from edgecore is not a state",
			steps: []step{{true, getResult404}}, wantValues: `[]`},
		{name: "malformed and unexpected payloads are ignored",
			steps: []step{
				{false, `not json`}, {false, ``}, {false, `[]`}, {false, `null`}, {false, `{}`},
				{false, `{"twin":null}`}, {false, `{"twin":{"status":null}}`}, {false, `{"twin":{"status":{}}}`},
				{false, `{"twin":{"status":{"expected":null}}}`}, {false, `{"twin":{"status":{"expected":{"value":null}}}}`},
				{false, `{"twin":{"status":{"expected":{"value":5}}}}`}, {false, `{"twin":{"other":{"expected":{"value":"ON"}}}}`},
				{false, `{"delta":{"status":"PLAY"}}`}, {true, `{"twin":{"status":{"expected":{"value":"STATUS"}}}}`},
				{false, `{"delta":"ON"}`}, {true, `{"code":"x"}`},
			},
			wantValues: `[]`},
		{name: "malformed payload between commands changes nothing",
			steps:  []step{{false, deltaOn}, {false, `{"twin":{"status":{"expected":null}}}`}, {false, `{`}},
			wantOn: true, wantFirst: 1, wantSynced: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecorder()
			c := NewCounter(tick, r.publish)
			defer c.Close()
			m := New("status", c)
			for _, s := range tc.steps {
				if s.getResult {
					m.HandleGetResult([]byte(s.payload))
				} else {
					m.HandleDelta([]byte(s.payload))
				}
			}
			if m.Synced() != tc.wantSynced {
				t.Errorf("Synced = %v, want %v", m.Synced(), tc.wantSynced)
			}
			if c.On() != tc.wantOn {
				t.Fatalf("counter on = %v, want %v", c.On(), tc.wantOn)
			}
			if tc.wantOn {
				assertCounting(t, r.waitFor(t, "three counts", atLeast(3)), tc.wantFirst)
				return
			}
			r.quiet(t)
			got := r.snapshot()
			if tc.wantValues == "" {
				// Stopped after counting: the last value is the reset.
				if len(got) == 0 || got[len(got)-1] != "0" {
					t.Fatalf("values = %v, want a final 0", got)
				}
				assertCounting(t, got[:len(got)-1], 1)
				return
			}
			var want []string
			if err := json.Unmarshal([]byte(tc.wantValues), &want); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("values = %q, want %q", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("values = %q, want %q", got, want)
				}
			}
		})
	}
}

func TestUnsync(t *testing.T) {
	c := NewCounter(tick, newRecorder().publish)
	defer c.Close()
	m := New("status", c)
	m.HandleGetResult([]byte(getResultOff))
	m.Unsync()
	if m.Synced() {
		t.Fatal("Synced after Unsync")
	}
	m.HandleDelta([]byte(deltaOff))
	if !m.Synced() {
		t.Fatal("a delta did not sync")
	}
}

func TestUpdateResultDoesNotPanic(t *testing.T) {
	c := NewCounter(tick, newRecorder().publish)
	defer c.Close()
	m := New("status", c)
	for _, p := range []string{`{"event_id":"","timestamp":1,"twin":{"status":{"actual":{"value":"1"}}}}`,
		`{"code":404,"reason":"unknown"}`, `{"code":404,"reason":"unknown"}`, `garbage`, `{}`} {
		m.HandleUpdateResult([]byte(p))
	}
}

func TestEncodeActual(t *testing.T) {
	got := string(encodeActual("status", "7", 1761000000123))
	// The tutorial's shape (counter-demo.md §4.3), with a real timestamp in ms.
	const want = `{"event_id":"","timestamp":1761000000123,"twin":{"status":{"actual":{"value":"7"},"metadata":{"type":"Updated"}}}}`
	if got != want {
		t.Fatalf("encodeActual = %s\nwant %s", got, want)
	}
	if got, want := string(getRequest("", 5)), `{"event_id":"","timestamp":5}`; got != want {
		t.Fatalf("getRequest = %s, want %s", got, want)
	}
}

func TestTopicsFor(t *testing.T) {
	for _, tc := range []struct{ id, delta, get string }{
		{"counter", "$hw/events/device/counter/twin/update/delta", "$hw/events/device/counter/twin/get"},
		{"default/counter", "$hw/events/device/default/counter/twin/update/delta", "$hw/events/device/default/counter/twin/get"},
	} {
		tp := TopicsFor(tc.id)
		if tp.Delta != tc.delta || tp.Get != tc.get || tp.GetResult != tc.get+"/result" ||
			tp.Update != "$hw/events/device/"+tc.id+"/twin/update" || tp.UpdateResult != tp.Update+"/result" {
			t.Errorf("TopicsFor(%q) = %+v", tc.id, tp)
		}
	}
}
