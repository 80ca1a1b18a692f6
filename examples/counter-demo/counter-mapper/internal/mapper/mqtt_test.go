package mapper

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	mqttserver "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll admits every client and topic (mochi refuses all without an auth hook).
type allowAll struct{ mqttserver.HookBase }

func (*allowAll) ID() string { return "allow-all" }

func (*allowAll) Provides(b byte) bool {
	return b == mqttserver.OnConnectAuthenticate || b == mqttserver.OnACLCheck
}

func (*allowAll) OnConnectAuthenticate(*mqttserver.Client, packets.Packet) bool { return true }

func (*allowAll) OnACLCheck(*mqttserver.Client, string, bool) bool { return true }

// fakeEdge is an in-process MQTT broker (mochi) playing edgecore's DeviceTwin for device "counter": it answers
// /twin/get, stores the mapper's actual values, and publishes a delta after each one, as DeviceTwin does.
type fakeEdge struct {
	t      *testing.T
	addr   string
	topics Topics

	// order is held from reading the twin to queueing what was built from it, so that replies leave in the
	// order the twin changed, as with DeviceTwin's single worker: a delta built before a command must not be
	// published after that command's delta.
	order      sync.Mutex
	mu         sync.Mutex
	srv        *mqttserver.Server
	ln         net.Listener
	expected   string
	actual     string
	gets       int
	answer404  int // answer this many /twin/get with 404 first
	reports    []report
	notify     chan struct{}
	out        chan outMsg
	badReports int
}

type report struct {
	value string
	at    time.Time
}

func newFakeEdge(t *testing.T, expected, actual string) *fakeEdge {
	e := &fakeEdge{t: t, topics: TopicsFor("counter"), expected: expected, actual: actual, notify: make(chan struct{}, 1),
		out: make(chan outMsg, 10000)}
	e.start("127.0.0.1:0")
	done := make(chan struct{})
	go e.sender(done)
	t.Cleanup(func() {
		close(done)
		e.stop()
	})
	return e
}

func (e *fakeEdge) start(addr string) {
	e.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := mqttserver.New(&mqttserver.Options{InlineClient: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		e.t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("t", ln)); err != nil {
		e.t.Fatal(err)
	}
	if err := srv.Subscribe(e.topics.Get, 1, e.onGet); err != nil {
		e.t.Fatal(err)
	}
	if err := srv.Subscribe(e.topics.Update, 2, e.onUpdate); err != nil {
		e.t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.srv, e.ln, e.addr = srv, ln, ln.Addr().String()
	e.mu.Unlock()
}

func (e *fakeEdge) stop() {
	e.mu.Lock()
	srv, ln := e.srv, e.ln
	e.srv, e.ln = nil, nil
	e.mu.Unlock()
	if srv != nil {
		// mochi disconnects its clients before it closes the listener, and drops (without closing) a
		// connection it accepts meanwhile: a client that reconnects at once would wait its whole connect
		// timeout for a CONNACK. Closing the listener first makes that reconnect fail fast instead.
		_ = ln.Close()
		_ = srv.Close()
	}
}

// restart stops the broker, dropping every session, and starts a new one on the same address.
func (e *fakeEdge) restart() {
	e.stop()
	e.start(e.address())
}

func (e *fakeEdge) address() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addr
}

func (e *fakeEdge) url() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return "tcp://" + e.addr
}

func (e *fakeEdge) publish(topic string, payload []byte) {
	e.mu.Lock()
	srv := e.srv
	e.mu.Unlock()
	if srv == nil {
		return
	}
	// Not from the inline handler's goroutine (mochi delivers inline while processing the client's packet),
	// but in order, as DeviceTwin's single worker does: a stale delta must not overtake a newer one.
	e.out <- outMsg{topic, payload}
}

type outMsg struct {
	topic   string
	payload []byte
}

// sender publishes queued messages in order until done closes.
func (e *fakeEdge) sender(done chan struct{}) {
	for {
		select {
		case <-done:
			return
		case m := <-e.out:
			e.mu.Lock()
			srv := e.srv
			e.mu.Unlock()
			if srv != nil {
				_ = srv.Publish(m.topic, m.payload, false, 1)
			}
		}
	}
}

func (e *fakeEdge) twinJSON() map[string]any {
	return map[string]any{"status": map[string]any{
		"expected": map[string]any{"value": e.expected}, "actual": map[string]any{"value": e.actual},
		"optional": false, "metadata": map[string]any{"type": "string"}}}
}

func (e *fakeEdge) onGet(_ *mqttserver.Client, _ packets.Subscription, _ packets.Packet) {
	e.order.Lock()
	defer e.order.Unlock()
	e.mu.Lock()
	e.gets++
	var body []byte
	if e.answer404 > 0 {
		e.answer404--
		body = []byte(`{"event_id":"","timestamp":1,"code":404,"reason":"device \"counter\" does not exist"}`)
	} else {
		body, _ = json.Marshal(map[string]any{"event_id": "", "timestamp": time.Now().UnixMilli(), "twin": e.twinJSON()})
	}
	e.mu.Unlock()
	e.publish(e.topics.GetResult, body)
}

func (e *fakeEdge) onUpdate(_ *mqttserver.Client, _ packets.Subscription, pk packets.Packet) {
	var msg struct {
		EventID   *string `json:"event_id"`
		Timestamp int64   `json:"timestamp"`
		Twin      map[string]struct {
			Actual   *struct{ Value *string } `json:"actual"`
			Metadata *struct{ Type string }   `json:"metadata"`
		} `json:"twin"`
	}
	err := json.Unmarshal(pk.Payload, &msg)
	st, ok := msg.Twin["status"]
	e.order.Lock()
	defer e.order.Unlock()
	now := time.Now()
	e.mu.Lock()
	if err != nil || !ok || msg.EventID == nil || *msg.EventID != "" || st.Actual == nil || st.Actual.Value == nil ||
		st.Metadata == nil || st.Metadata.Type != "Updated" || msg.Timestamp > now.UnixMilli() ||
		msg.Timestamp < now.Add(-time.Minute).UnixMilli() || len(msg.Twin) != 1 {
		e.badReports++
		e.t.Errorf("malformed report %s", pk.Payload)
		e.mu.Unlock()
		return
	}
	e.actual = *st.Actual.Value
	e.reports = append(e.reports, report{value: e.actual, at: now})
	result, _ := json.Marshal(map[string]any{"event_id": "", "timestamp": now.UnixMilli(), "twin": e.twinJSON()})
	var delta []byte
	if e.expected != e.actual {
		delta, _ = json.Marshal(map[string]any{"event_id": "x", "timestamp": now.UnixMilli(), "twin": e.twinJSON(),
			"delta": map[string]string{"status": e.expected}})
	}
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
	e.publish(e.topics.UpdateResult, result)
	if delta != nil {
		e.publish(e.topics.Delta, delta)
	}
}

// command changes the expected value as a cloud sync does, and publishes the delta.
func (e *fakeEdge) command(value string) {
	e.order.Lock()
	defer e.order.Unlock()
	e.mu.Lock()
	e.expected = value
	delta, _ := json.Marshal(map[string]any{"event_id": "c", "timestamp": time.Now().UnixMilli(), "twin": e.twinJSON(),
		"delta": map[string]string{"status": value}})
	e.mu.Unlock()
	e.publish(e.topics.Delta, delta)
}

func (e *fakeEdge) values() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.reports))
	for i, r := range e.reports {
		out[i] = r.value
	}
	return out
}

func (e *fakeEdge) getCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gets
}

func (e *fakeEdge) waitFor(what string, cond func(values []string) bool) []string {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if v := e.values(); cond(v) {
			return v
		}
		select {
		case <-e.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			e.t.Fatalf("timed out waiting for %s; reports %v, gets %d", what, e.values(), e.getCount())
		}
	}
}

func (e *fakeEdge) waitGets(n int) {
	e.t.Helper()
	e.waitFor("/twin/get number "+strconv.Itoa(n), func([]string) bool { return e.getCount() >= n })
}

// quiet asserts that the mapper reports nothing for a while.
func (e *fakeEdge) quiet() {
	e.t.Helper()
	n := len(e.values())
	time.Sleep(150 * time.Millisecond)
	if v := e.values(); len(v) != n {
		e.t.Fatalf("reports went on: %v", v[n:])
	}
}

func countsFrom(first int, n int) func([]string) bool {
	return func(v []string) bool {
		if len(v) < n {
			return false
		}
		for i, s := range v {
			if s != strconv.Itoa(first+i) {
				return false
			}
		}
		return true
	}
}

func lastIs(value string) func([]string) bool {
	return func(v []string) bool { return len(v) > 0 && v[len(v)-1] == value }
}

// runMapper runs the mapper against e until the test ends.
func runMapper(t *testing.T, e *fakeEdge) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Broker: e.url(), ClientID: "counter-mapper-test", DeviceID: "counter", Property: "status",
			Interval: 20 * time.Millisecond, RetryInterval: 20 * time.Millisecond, ResyncInterval: 100 * time.Millisecond})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// TestMapperOverMQTT drives the mapper through a broker: start-up resync (after a 404), ON, a malformed
// delta, OFF, ON again, and a broker restart that forgets every subscription.
func TestMapperOverMQTT(t *testing.T) {
	e := newFakeEdge(t, "OFF", "0")
	e.answer404 = 1 // edgecore has not got the device yet: the mapper must ask again
	runMapper(t, e)

	e.waitGets(2)
	e.quiet() // OFF with actual 0: nothing to report

	e.command("ON")
	e.waitFor("counts 1, 2, 3", countsFrom(1, 3))

	e.publish(e.topics.Delta, []byte(`{"twin":{"status":{"expected":null}}}`))
	e.publish(e.topics.Delta, []byte(`garbage`))
	n := len(e.values())
	v := e.waitFor("counting on after malformed deltas", func(v []string) bool { return len(v) >= n+3 })
	if !countsFrom(1, len(v))(v) {
		t.Fatalf("counts = %v, want 1, 2, 3, … without restarts", v)
	}

	e.command("OFF")
	v = e.waitFor("a reset to 0", lastIs("0"))
	e.quiet()
	if !countsFrom(1, len(v)-1)(v[:len(v)-1]) {
		t.Fatalf("reports = %v, want 1, 2, …, n, 0", v)
	}

	e.command("ON")
	n = len(e.values())
	e.waitFor("counts from 1 again", func(v []string) bool { return len(v) >= n+2 && countsFrom(1, 2)(v[n:]) })

	// Broker restart: a clean session loses the subscriptions. The mapper must reconnect, subscribe again in
	// its connect handler and ask for the twin.
	gets := e.getCount()
	e.restart()
	e.waitGets(gets + 1)
	n = len(e.values())
	e.waitFor("counts on the new broker", func(v []string) bool { return len(v) >= n+2 })
	e.command("OFF") // only reaches the mapper if it subscribed to the delta again
	e.waitFor("a reset to 0 after the restart", lastIs("0"))
	e.quiet()
}

// TestMapperResumesAfterRestart: the mapper starts while the twin says ON (it was restarted mid-count); it
// resumes after the last reported count instead of waiting for a new command.
func TestMapperResumesAfterRestart(t *testing.T) {
	e := newFakeEdge(t, "ON", "41")
	runMapper(t, e)
	e.waitFor("counts 42, 43", countsFrom(42, 2))
}

// TestMapperResetsStaleCount: the twin says OFF but still holds a count (OFF came while the mapper was down).
func TestMapperResetsStaleCount(t *testing.T) {
	e := newFakeEdge(t, "OFF", "12")
	runMapper(t, e)
	e.waitFor("a reset to 0", lastIs("0"))
	e.quiet()
	if v := e.values(); len(v) != 1 {
		t.Fatalf("reports = %v, want just 0", v)
	}
}

// TestMapperWaitsForBroker: no broker at start; the mapper keeps trying and works once one appears.
func TestMapperWaitsForBroker(t *testing.T) {
	e := newFakeEdge(t, "ON", "0")
	e.stop()
	runMapper(t, e)
	time.Sleep(100 * time.Millisecond)
	e.start(e.address())
	e.waitFor("counts 1, 2", countsFrom(1, 2))
}

func TestRunValidates(t *testing.T) {
	for _, c := range []Config{
		{ClientID: "c", DeviceID: "d", Property: "p"},
		{Broker: "tcp://x", DeviceID: "d", Property: "p"},
		{Broker: "tcp://x", ClientID: "c", Property: "p"},
		{Broker: "tcp://x", ClientID: "c", DeviceID: "d"},
	} {
		if err := Run(context.Background(), c); err == nil {
			t.Errorf("Run(%+v) succeeded", c)
		}
	}
}
