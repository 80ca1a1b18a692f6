package eventbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-edge/tether/edge/eventbus"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/tests/framework"
)

const (
	nodeName    = "edge-1"
	waitTimeout = 20 * time.Second
	deltaTopic  = "$hw/events/device/counter/twin/update/delta"
)

// recorder stands in for DeviceTwin or EdgeHub and keeps what it receives.
type recorder struct {
	name, group string
	bus         *beehive.Bus
	ch          chan model.Message
}

func newRecorder(bus *beehive.Bus, name, group string) *recorder {
	return &recorder{name: name, group: group, bus: bus, ch: make(chan model.Message, 4096)}
}

func (r *recorder) Name() string  { return r.name }
func (r *recorder) Group() string { return r.group }
func (r *recorder) Enable() bool  { return true }
func (r *recorder) Start(ctx context.Context) error {
	for {
		m, err := r.bus.Receive(ctx, r.name)
		if err != nil {
			return nil
		}
		select {
		case r.ch <- m:
		default:
		}
	}
}

// next returns the next message whose resource is res, skipping others.
func (r *recorder) next(t *testing.T, res string) model.Message {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case m := <-r.ch:
			if m.Router.Resource == res {
				return m
			}
		case <-timeout:
			t.Fatalf("%s: no message with resource %q within %s", r.name, res, waitTimeout)
		}
	}
}

type harness struct {
	eb        *eventbus.EventBus
	bus       *beehive.Bus
	twin, hub *recorder
	stop      func()
}

func start(t *testing.T, cfg *v1alpha2.EventBus, dbPath string) *harness {
	t.Helper()
	bus := beehive.New(beehive.Options{})
	h := &harness{
		bus:  bus,
		twin: newRecorder(bus, modules.DeviceTwin, modules.TwinGroup),
		hub:  newRecorder(bus, modules.EdgeHub, modules.EdgeHubGroup),
	}
	eb, err := eventbus.New(bus, cfg, dbPath, nodeName)
	if err != nil {
		t.Fatalf("eventbus.New: %v", err)
	}
	eventbus.SetReconnectBackoff(eb, 100*time.Millisecond)
	h.eb = eb
	for _, m := range []beehive.Module{h.twin, h.hub, eb} {
		if err := bus.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Run(ctx)
	}()
	h.stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(h.stop)
	waitFor(t, "event bus ready", eb.Ready)
	return h
}

func (h *harness) send(t *testing.T, msg *model.Message) {
	t.Helper()
	if err := h.bus.Send(context.Background(), modules.EventBus, *msg); err != nil {
		t.Fatalf("send to eventbus: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func needMosquitto(t *testing.T) {
	t.Helper()
	if !framework.HaveMosquitto() {
		t.Skipf("%s not installed: run hack/install-deps.sh", framework.MosquittoBinary)
	}
}

var clientSeq atomic.Int64

// mqttClient is a mapper or app: a plain MQTT client on url.
func mqttClient(t *testing.T, url string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), clientSeq.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect test client to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c paho.Client, topic string, payload []byte) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

type received struct {
	topic   string
	payload string
}

func subscribe(t *testing.T, c paho.Client, filter string) <-chan received {
	t.Helper()
	ch := make(chan received, 100)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		select {
		case ch <- received{m.Topic(), string(m.Payload())}:
		default:
		}
	})
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe to %s: %v", filter, tok.Error())
	}
	return ch
}

func expect(t *testing.T, ch <-chan received, topic, payload string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.topic != topic || r.payload != payload {
			t.Fatalf("subscriber got %s %q, want %s %q", r.topic, r.payload, topic, payload)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("subscriber got nothing on %s within %s", topic, waitTimeout)
	}
}

// setup is one broker arrangement: the config and the brokers apps use.
type setup struct {
	name    string
	cfg     *v1alpha2.EventBus
	brokers []string
}

func config(mode v1alpha2.MQTTMode, external, internal string) *v1alpha2.EventBus {
	return &v1alpha2.EventBus{
		Enable: true, MQTTMode: mode, MQTTSessionQueueSize: 100,
		MQTTServerExternal: external, MQTTServerInternal: internal,
	}
}

// setups returns the three modes, each with fresh brokers.
func setups(t *testing.T) []func(t *testing.T) setup {
	return []func(t *testing.T) setup{
		func(t *testing.T) setup {
			needMosquitto(t)
			url := framework.StartMosquitto(t)
			return setup{"external", config(v1alpha2.MQTTModeExternal, url, "tcp://127.0.0.1:1"), []string{url}}
		},
		func(t *testing.T) setup {
			internal := "tcp://127.0.0.1:" + strconv.Itoa(freePort(t))
			return setup{"internal", config(v1alpha2.MQTTModeInternal, "tcp://127.0.0.1:1", internal), []string{internal}}
		},
		func(t *testing.T) setup {
			needMosquitto(t)
			url := framework.StartMosquitto(t)
			internal := "tcp://127.0.0.1:" + strconv.Itoa(freePort(t))
			return setup{"both", config(v1alpha2.MQTTModeBoth, url, internal), []string{url, internal}}
		},
	}
}

var modeNames = []string{"external", "internal", "both"}

func TestMQTTToBus(t *testing.T) {
	tests := []struct {
		topic  string
		toTwin bool
	}{
		{"$hw/events/device/counter/twin/update", true},
		{"$hw/events/device/default/counter/twin/update", true},
		{"$hw/events/device/counter/state/update", true},
		{"$hw/events/device/default/counter/state/update", true},
		{"$hw/events/node/edge-1/membership/get", true},
		{"$hw/events/upload/telemetry", false},
		{"SYS/dis/upload_records", false},
		{"default/user/app/reading", false},
	}
	for i, mk := range setups(t) {
		t.Run(modeNames[i], func(t *testing.T) {
			s := mk(t)
			h := start(t, s.cfg, "")
			for _, broker := range s.brokers {
				c := mqttClient(t, broker)
				for _, tc := range tests {
					payload := fmt.Sprintf(`{"event_id":"%s","via":"%s"}`, tc.topic, broker)
					publish(t, c, tc.topic, []byte(payload))
					rec, res, op := h.hub, tc.topic, model.UploadOperation
					if tc.toTwin {
						rec, res, op = h.twin, eventbus.TopicResource(tc.topic), model.ResponseOperation
					}
					m := rec.next(t, res)
					if m.Router.Source != "bus" || m.Router.Group != "user" || m.Router.Operation != op {
						t.Errorf("%s via %s: route %+v, want source bus, group user, op %s", tc.topic, broker, m.Router, op)
					}
					if m.Content != payload {
						t.Errorf("%s via %s: content %#v, want %q", tc.topic, broker, m.Content, payload)
					}
				}
			}
		})
	}
}

func TestBusToMQTT(t *testing.T) {
	for i, mk := range setups(t) {
		t.Run(modeNames[i], func(t *testing.T) {
			s := mk(t)
			h := start(t, s.cfg, "")
			var deltas, apps, auths []<-chan received
			for _, broker := range s.brokers {
				c := mqttClient(t, broker)
				deltas = append(deltas, subscribe(t, c, deltaTopic))
				apps = append(apps, subscribe(t, c, "app/x"))
				auths = append(auths, subscribe(t, c, "$hw/events/node/+/authInfo/get/result"))
			}

			// DeviceTwin sends string content; the cloud's []byte content arrives as is.
			h.send(t, model.NewMessage("").BuildRouter("twin", "user", deltaTopic, model.PublishOperation).FillBody(`{"delta":{"v":"1"}}`))
			h.send(t, model.NewMessage("").BuildRouter("router_eventbus", "user", deltaTopic, model.PublishOperation).FillBody([]byte("raw")))
			h.send(t, model.NewMessage("").BuildRouter("router_eventbus", "user", "", model.MessageOperation).
				FillBody(json.RawMessage(`{"message":{"topic":"app/x","data":"d"}}`)))
			h.send(t, model.NewMessage("").BuildRouter("twin", "user", "auth_info", model.GetResultOperation).
				FillBody(json.RawMessage(`{"token":"t"}`)))
			for j := range s.brokers {
				expect(t, deltas[j], deltaTopic, `{"delta":{"v":"1"}}`)
				expect(t, deltas[j], deltaTopic, "raw")
				expect(t, apps[j], "app/x", `{"topic":"app/x","data":"d"}`)
				expect(t, auths[j], "$hw/events/node/edge-1/authInfo/get/result", `{"token":"t"}`)
			}
		})
	}
}

func TestDynamicSubscriptionPersists(t *testing.T) {
	for i, mk := range setups(t)[:2] {
		t.Run(modeNames[i], func(t *testing.T) {
			s := mk(t)
			db := filepath.Join(t.TempDir(), "edgecore.db")
			h := start(t, s.cfg, db)
			c := mqttClient(t, s.brokers[0])
			sub := func(op, filter string) {
				h.send(t, model.NewMessage("").BuildRouter("router_eventbus", "user", filter, op))
			}
			sub(model.SubscribeOperation, "app/other/#")
			sub(model.UnsubscribeOperation, "app/other/#")
			sub(model.SubscribeOperation, "app/telemetry/#")
			// The mailbox is handled in order, so once app/telemetry/# is live
			// the others are done. The client may publish before that: repeat
			// until it arrives.
			got := false
			for deadline := time.Now().Add(waitTimeout); !got && time.Now().Before(deadline); {
				publish(t, c, "app/telemetry/t1", []byte("1"))
				select {
				case m := <-h.hub.ch:
					got = m.Router.Resource == "app/telemetry/t1"
				case <-time.After(200 * time.Millisecond):
				}
			}
			if !got {
				t.Fatal("dynamic subscription app/telemetry/# never delivered")
			}
			h.stop()

			// A new edgecore on the same database subscribes again by itself.
			h2 := start(t, s.cfg, db)
			c2 := mqttClient(t, s.brokers[0])
			publish(t, c2, "app/other/x", []byte("unsubscribed"))
			publish(t, c2, "app/telemetry/t2", []byte("2"))
			select {
			case m := <-h2.hub.ch:
				if m.Router.Resource != "app/telemetry/t2" || m.Content != "2" {
					t.Fatalf("after restart the cloud got %s %v, want app/telemetry/t2 (and nothing from the removed app/other/#)", m.Router.Resource, m.Content)
				}
			case <-time.After(waitTimeout):
				t.Fatal("after restart, app/telemetry/t2 was not delivered")
			}
		})
	}
}

func TestExternalBrokerRestart(t *testing.T) {
	needMosquitto(t)
	m := framework.NewMosquitto(t)
	cfg := config(v1alpha2.MQTTModeExternal, m.URL, "tcp://127.0.0.1:1")
	// Retained, so that a subscriber arriving after the flush still sees it.
	cfg.MQTTRetain = true
	h := start(t, cfg, "")
	topic := "$hw/events/device/counter/twin/update"
	publish(t, mqttClient(t, m.URL), topic, []byte("before"))
	if got := h.twin.next(t, eventbus.TopicResource(topic)); got.Content != "before" {
		t.Fatalf("before restart: content %v", got.Content)
	}

	m.Stop()
	waitFor(t, "event bus to notice the broker is gone", func() bool { return !h.eb.Ready() })
	// Queued while the broker is down, sent when it is back.
	h.send(t, model.NewMessage("").BuildRouter("twin", "user", deltaTopic, model.PublishOperation).FillBody("queued"))
	m.Start()
	waitFor(t, "event bus to reconnect", h.eb.Ready)

	expect(t, subscribe(t, mqttClient(t, m.URL), deltaTopic), deltaTopic, "queued")
	publish(t, mqttClient(t, m.URL), topic, []byte("after"))
	if got := h.twin.next(t, eventbus.TopicResource(topic)); got.Content != "after" {
		t.Fatalf("after restart: content %v, want after (resubscribed)", got.Content)
	}
}

func TestBadInput(t *testing.T) {
	for i, mk := range setups(t)[:2] {
		t.Run(modeNames[i], func(t *testing.T) {
			s := mk(t)
			h := start(t, s.cfg, filepath.Join(t.TempDir(), "edgecore.db"))

			// Garbage instead of MQTT on the broker port.
			conn, err := net.Dial("tcp", s.brokers[0][len("tcp://"):])
			if err != nil {
				t.Fatal(err)
			}
			_, _ = conn.Write(bytes.Repeat([]byte{0xff, 0x00, 0x10}, 1000))
			_ = conn.Close()

			// Bad mailbox messages.
			for _, msg := range []*model.Message{
				model.NewMessage("").BuildRouter("x", "user", "a/#/b", model.SubscribeOperation),
				model.NewMessage("").BuildRouter("x", "user", "a/+", model.PublishOperation).FillBody("p"),
				model.NewMessage("").BuildRouter("x", "user", "a", model.PublishOperation).FillBody(make([]byte, eventbus.MaxPayloadSize+1)),
				model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody("{"),
				model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody(json.RawMessage(`{"message":{"topic":"#"}}`)),
				model.NewMessage("").BuildRouter("x", "user", "t", "bogus"),
			} {
				h.send(t, msg)
			}

			c := mqttClient(t, s.brokers[0])
			topic := "$hw/events/device/counter/twin/update"
			res := eventbus.TopicResource(topic)
			publish(t, c, topic, bytes.Repeat([]byte("x"), eventbus.MaxPayloadSize+1))
			publish(t, c, topic, []byte("{not json"))
			publish(t, c, topic, []byte("ok"))
			if got := h.twin.next(t, res); got.Content != "{not json" {
				t.Fatalf("first twin message after an oversized one: %.40v, want the malformed JSON as is", got.Content)
			}
			if got := h.twin.next(t, res); got.Content != "ok" {
				t.Fatalf("twin message: %v, want ok", got.Content)
			}
			if !h.eb.Ready() {
				t.Fatal("event bus not ready after bad input")
			}
		})
	}
}

func TestEmbeddedBrokerPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	bus := beehive.New(beehive.Options{})
	eb, err := eventbus.New(bus, config(v1alpha2.MQTTModeInternal, "", "tcp://"+l.Addr().String()), "", nodeName)
	if err != nil {
		t.Fatal(err)
	}
	if err := eb.Start(context.Background()); err == nil {
		t.Fatal("Start with the broker port taken: no error")
	}
}
