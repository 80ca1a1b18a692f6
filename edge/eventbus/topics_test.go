package eventbus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/sqlitedb"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		topic     string
		wantGroup string
		wantOp    string
		// wantRes is the resource; empty means base64url of the topic.
		wantRes string
	}{
		{"$hw/events/device/counter/twin/update", modules.TwinGroup, model.ResponseOperation, "JGh3L2V2ZW50cy9kZXZpY2UvY291bnRlci90d2luL3VwZGF0ZQ=="},
		{"$hw/events/device/default/counter/twin/update", modules.TwinGroup, model.ResponseOperation, ""},
		{"$hw/events/device/counter/state/update", modules.TwinGroup, model.ResponseOperation, ""},
		{"$hw/events/device/counter/twin/get", modules.TwinGroup, model.ResponseOperation, ""},
		{"$hw/events/node/edge-1/membership/get", modules.TwinGroup, model.ResponseOperation, ""},
		{"$hw/events/upload/foo", modules.EdgeHubGroup, model.UploadOperation, "$hw/events/upload/foo"},
		{"SYS/dis/upload_records", modules.EdgeHubGroup, model.UploadOperation, "SYS/dis/upload_records"},
		{"default/user/app/data", modules.EdgeHubGroup, model.UploadOperation, "default/user/app/data"},
		// Prefix match is on whole levels: "$hw/events/devices" is not a device topic.
		{"$hw/events/devices/x", modules.EdgeHubGroup, model.UploadOperation, "$hw/events/devices/x"},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			group, msg := Route(tc.topic, `{"v":1}`)
			if group != tc.wantGroup {
				t.Errorf("group = %q, want %q", group, tc.wantGroup)
			}
			want := tc.wantRes
			if want == "" {
				want = TopicResource(tc.topic)
			}
			r := msg.Router
			if r.Source != modules.BusGroup || r.Group != model.GroupUser || r.Operation != tc.wantOp || r.Resource != want {
				t.Errorf("route = %+v, want source bus, group user, op %s, resource %s", r, tc.wantOp, want)
			}
			if msg.Content != `{"v":1}` || msg.Header.ID == "" || msg.Header.Timestamp == 0 {
				t.Errorf("message = %+v, want string content and a fresh header", msg)
			}
			if group == modules.TwinGroup {
				back, err := ResourceTopic(r.Resource)
				if err != nil || back != tc.topic {
					t.Errorf("ResourceTopic(%q) = %q, %v; want %q", r.Resource, back, err, tc.topic)
				}
			}
		})
	}
}

func TestTopicValidation(t *testing.T) {
	tests := []struct {
		s                      string
		validName, validFilter bool
	}{
		{"$hw/events/device/a/twin/update", true, true},
		{"a/+/b", false, true},
		{"a/#", false, true},
		{"#", false, true},
		{"+", false, true},
		{"a/#/b", false, false},
		{"a/b#", false, false},
		{"a/b+/c", false, false},
		{"", false, false},
		{"a\x00b", false, false},
		{"bad\xffutf8", false, false},
		{strings.Repeat("x", 65536), false, false},
	}
	for _, tc := range tests {
		name := tc.s
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			if err := validTopicName(tc.s); (err == nil) != tc.validName {
				t.Errorf("validTopicName = %v, want valid=%v", err, tc.validName)
			}
			if err := validTopicFilter(tc.s); (err == nil) != tc.validFilter {
				t.Errorf("validTopicFilter = %v, want valid=%v", err, tc.validFilter)
			}
		})
	}
}

// Every built-in filter must be one a broker accepts, and v1.7 and v1.23
// device topics must both match exactly one of them.
func TestBuiltinFilters(t *testing.T) {
	for _, f := range BuiltinFilters() {
		if err := validTopicFilter(f); err != nil {
			t.Errorf("built-in filter %q: %v", f, err)
		}
	}
	for _, topic := range []string{
		"$hw/events/device/counter/twin/update",
		"$hw/events/device/default/counter/twin/update",
		"$hw/events/device/counter/state/update",
		"$hw/events/device/default/counter/state/update",
		"$hw/events/node/edge-1/membership/get",
		"a/user/b/c",
	} {
		n := 0
		for _, f := range BuiltinFilters() {
			if matches(f, topic) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("topic %q matches %d built-in filters, want 1", topic, n)
		}
	}
	// What DeviceTwin publishes must not come back to it.
	for _, topic := range []string{
		"$hw/events/device/counter/twin/update/delta",
		"$hw/events/device/default/counter/twin/update/result",
		"$hw/events/device/counter/state/update/result",
		"$hw/events/node/edge-1/membership/get/result",
	} {
		for _, f := range BuiltinFilters() {
			if matches(f, topic) {
				t.Errorf("edgecore's own topic %q matches built-in filter %q", topic, f)
			}
		}
	}
}

// matches is MQTT topic matching, for the test above.
func matches(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (fl[0] == "+" || fl[0] == "#") {
		return false
	}
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}

func TestNewValidation(t *testing.T) {
	bus := beehive.New(beehive.Options{})
	base := func() *v1alpha2.EventBus {
		return &v1alpha2.EventBus{Enable: true, MQTTMode: v1alpha2.MQTTModeBoth, MQTTSessionQueueSize: 10,
			MQTTServerExternal: "tcp://127.0.0.1:1883", MQTTServerInternal: "tcp://127.0.0.1:1884"}
	}
	tests := []struct {
		name    string
		mutate  func(*v1alpha2.EventBus)
		wantErr string
	}{
		{"defaults", func(*v1alpha2.EventBus) {}, ""},
		{"disabled skips checks", func(c *v1alpha2.EventBus) { c.Enable = false; c.MQTTMode = 9 }, ""},
		{"bad mode", func(c *v1alpha2.EventBus) { c.MQTTMode = 3 }, "mqttMode"},
		{"bad qos", func(c *v1alpha2.EventBus) { c.MQTTQOS = 3 }, "mqttQOS"},
		{"external without port", func(c *v1alpha2.EventBus) { c.MQTTServerExternal = "tcp://127.0.0.1" }, "scheme://host:port"},
		{"internal websocket", func(c *v1alpha2.EventBus) { c.MQTTServerInternal = "ws://127.0.0.1:1884" }, "tcp:// only"},
		{"internal ignored in external mode", func(c *v1alpha2.EventBus) {
			c.MQTTMode = v1alpha2.MQTTModeExternal
			c.MQTTServerInternal = "junk"
		}, ""},
		{"missing TLS CA", func(c *v1alpha2.EventBus) {
			c.TLS = &v1alpha2.EventBusTLS{Enable: true, TLSMQTTCAFile: filepath.Join(t.TempDir(), "ca.crt")}
		}, "eventBusTLS CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.mutate(cfg)
			_, err := New(bus, cfg, "", "edge-1")
			if tc.wantErr == "" && err != nil {
				t.Fatalf("New: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("New error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := New(bus, nil, "", ""); err == nil {
		t.Error("New with nil config: no error")
	}
}

func TestExternalURL(t *testing.T) {
	tests := []struct {
		in   string
		tls  bool
		want string
	}{
		{"tcp://h:1883", false, "tcp://h:1883"},
		{"tcp://h:8883", true, "ssl://h:8883"},
		{"MQTT://h:8883", true, "ssl://h:8883"},
		{"ssl://h:8883", true, "ssl://h:8883"},
		{"wss://h:443/mqtt", true, "wss://h:443/mqtt"},
	}
	for _, tc := range tests {
		if got := externalURL(tc.in, tc.tls); got != tc.want {
			t.Errorf("externalURL(%q, %v) = %q, want %q", tc.in, tc.tls, got, tc.want)
		}
	}
}

func TestPublishQueueDropsOldest(t *testing.T) {
	q := newPublishQueue("test", 3)
	for _, topic := range []string{"a", "b", "c", "d", "e"} {
		q.push(topic, nil)
	}
	var got []string
	for {
		m, ok := q.peek()
		if !ok {
			break
		}
		got = append(got, m.topic)
		q.pop(m.seq)
	}
	if want := []string{"c", "d", "e"}; !slices.Equal(got, want) {
		t.Fatalf("queue delivered %q, want %q", got, want)
	}
	// pop of a message push already dropped must not remove its successor.
	q.push("x", nil)
	m, _ := q.peek()
	q.push("y", nil)
	q.push("z", nil)
	q.push("w", nil) // drops x
	q.pop(m.seq)
	if n := q.len(); n != 3 {
		t.Fatalf("after popping a dropped message, len = %d, want 3", n)
	}

	// The byte budget drops old messages too, but always keeps the newest.
	q = newPublishQueue("test", 1000)
	big := make([]byte, MaxPayloadSize)
	for range maxQueuedBytes/MaxPayloadSize + 3 {
		q.push("big", big)
	}
	if n := q.len(); n != maxQueuedBytes/MaxPayloadSize {
		t.Fatalf("queue of 1 MiB messages holds %d, want %d", n, maxQueuedBytes/MaxPayloadSize)
	}
}

// Bad mailbox messages are dropped without side effects; nothing may panic.
func TestHandleBadMessages(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := openTopicStore(ctx, filepath.Join(dir, "edgecore.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	e := &EventBus{nodeName: "edge-1"}
	// No broker at all: publish is validated, then goes nowhere.
	s := &session{eb: e, store: store, dynamic: map[string]bool{}}
	msgs := []*model.Message{
		model.NewMessage("").BuildRouter("x", "user", "a/#/b", model.SubscribeOperation),
		model.NewMessage("").BuildRouter("x", "user", "", model.SubscribeOperation),
		model.NewMessage("").BuildRouter("x", "user", "a/+", model.PublishOperation).FillBody("p"),
		model.NewMessage("").BuildRouter("x", "user", "", model.PublishOperation).FillBody("p"),
		model.NewMessage("").BuildRouter("x", "user", "a", model.PublishOperation).FillBody(make([]byte, MaxPayloadSize+1)),
		model.NewMessage("").BuildRouter("x", "user", "a", model.PublishOperation).FillBody(func() {}),
		model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody("not json"),
		model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody(json.RawMessage(`{"message":42}`)),
		model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody(json.RawMessage(`{"other":{}}`)),
		model.NewMessage("").BuildRouter("x", "user", "", model.MessageOperation).FillBody(nil),
		model.NewMessage("").BuildRouter("x", "user", "other", model.GetResultOperation).FillBody("x"),
		model.NewMessage("").BuildRouter("x", "user", "auth_info", model.GetResultOperation).FillBody(func() {}),
		model.NewMessage("").BuildRouter("x", "user", "t", "no-such-op"),
	}
	for _, m := range msgs {
		s.handle(ctx, m)
	}
	saved, err := store.List(ctx)
	if err != nil || len(saved) != 0 {
		t.Fatalf("saved subscriptions = %q, %v; want none", saved, err)
	}
}

func TestInnerMessage(t *testing.T) {
	msg := model.NewMessage("").FillBody(json.RawMessage(`{"message":{"topic":"a/b","data":{"x":1}}}`))
	topic, payload, err := innerMessage(msg)
	if err != nil || topic != "a/b" || string(payload) != `{"topic":"a/b","data":{"x":1}}` {
		t.Fatalf("innerMessage = %q, %s, %v", topic, payload, err)
	}
}

func TestTopicStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "edgecore.db")
	s, err := openTopicStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"b/#", "a/+", "b/#"} {
		if err := s.Add(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "a/+"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openTopicStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	got, err := s.List(ctx)
	if err != nil || !slices.Equal(got, []string{"b/#"}) {
		t.Fatalf("list after reopen = %q, %v; want [b/#]", got, err)
	}
	var none *sqlitedb.StringSet
	if err := none.Add(ctx, "x"); err != nil {
		t.Fatalf("nil store add: %v", err)
	}
}

func TestNewWithTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsCfg := &v1alpha2.EventBusTLS{Enable: true,
		TLSMQTTCAFile:         write("ca.crt", "CERTIFICATE", der),
		TLSMQTTCertFile:       write("client.crt", "CERTIFICATE", der),
		TLSMQTTPrivateKeyFile: write("client.key", "EC PRIVATE KEY", keyDER)}
	e, err := New(beehive.New(beehive.Options{}), &v1alpha2.EventBus{Enable: true, MQTTMode: v1alpha2.MQTTModeExternal,
		MQTTServerExternal: "tcp://127.0.0.1:8883", TLS: tlsCfg}, "", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.tls == nil || e.tls.RootCAs == nil || len(e.tls.Certificates) != 1 || e.external != "ssl://127.0.0.1:8883" {
		t.Fatalf("TLS not set up: tls=%v external=%q", e.tls != nil, e.external)
	}
	tlsCfg.TLSMQTTPrivateKeyFile = tlsCfg.TLSMQTTCAFile
	if _, err := New(beehive.New(beehive.Options{}), &v1alpha2.EventBus{Enable: true, MQTTMode: v1alpha2.MQTTModeExternal,
		MQTTServerExternal: "tcp://127.0.0.1:8883", TLS: tlsCfg}, "", "edge-1"); err == nil {
		t.Fatal("New with a certificate as the key: no error")
	}
}
