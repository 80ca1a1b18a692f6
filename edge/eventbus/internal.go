package eventbus

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/go-logr/logr"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"k8s.io/klog/v2"
)

const (
	// inlineSubID is shared by all our inline subscriptions: the broker
	// calls a handler once per subscription id, so a message matching
	// several of our filters is dispatched once.
	inlineSubID = 1
	// MaxBrokerPacketSize caps one MQTT packet on the embedded broker, so a
	// single client cannot make edgecore buffer arbitrarily much memory.
	MaxBrokerPacketSize = 16 << 20
	// sysTopicInterval: $SYS statistics are of no use to mappers, and
	// mochi's one-second default wakes the process needlessly.
	sysTopicIntervalSeconds = 24 * 60 * 60
)

// embeddedBroker is the MQTT broker inside edgecore, for hosts without one.
// Our own subscriptions are inline: messages reach us without a network hop.
type embeddedBroker struct {
	addr string
	srv  *mqtt.Server
	ln   net.Listener
	// onMessage must not block: it runs on the publishing client's goroutine.
	onMessage func(topic string, payload []byte)
}

func startBroker(addr string, sessionQueue int, onMessage func(topic string, payload []byte)) (*embeddedBroker, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxBrokerPacketSize
	// KubeEdge's mqttSessionQueueSize bounds what the broker buffers per
	// client; mochi's equivalent is the pending-writes limit.
	caps.MaximumClientWritesPending = int32(max(sessionQueue, 1))
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           caps,
		SysTopicResendInterval: sysTopicIntervalSeconds,
		// Info would log every client connect and disconnect.
		Logger: slog.New(logr.ToSlogHandler(klog.Background().WithName("mqtt-broker").V(2))),
	})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		return nil, fmt.Errorf("embedded MQTT broker on %s: add auth hook: %w", addr, err)
	}
	// Our own listener, so that close can shut it before mochi disconnects the clients (see close).
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded MQTT broker: listen on %s: %w", addr, err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded MQTT broker: listen on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		_ = ln.Close()
		_ = srv.Close()
		return nil, fmt.Errorf("embedded MQTT broker on %s: %w", addr, err)
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			klog.InfoS("Embedded MQTT broker accepts anonymous clients on a non-loopback address", "address", addr)
		}
	}
	klog.InfoS("Embedded MQTT broker listening", "address", addr)
	return &embeddedBroker{addr: addr, srv: srv, ln: ln, onMessage: onMessage}, nil
}

// allowAll admits every client and topic. Without an auth hook mochi
// refuses every client; the broker is meant for local mappers and, like
// KubeEdge's, has no authentication. (mochi's own auth package would pull
// in a YAML library for rule files we do not use.)
type allowAll struct{ mqtt.HookBase }

func (*allowAll) ID() string { return "allow-all" }

func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (b *embeddedBroker) handle(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	b.onMessage(pk.TopicName, pk.Payload)
}

func (b *embeddedBroker) subscribe(filter string) error {
	if err := b.srv.Subscribe(filter, inlineSubID, b.handle); err != nil {
		return fmt.Errorf("embedded broker: subscribe to %q: %w", filter, err)
	}
	return nil
}

func (b *embeddedBroker) unsubscribe(filter string) error {
	if err := b.srv.Unsubscribe(filter, inlineSubID); err != nil {
		return fmt.Errorf("embedded broker: unsubscribe from %q: %w", filter, err)
	}
	return nil
}

func (b *embeddedBroker) publish(topic string, payload []byte, qos byte, retain bool) error {
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("embedded broker: publish to %q: %w", topic, err)
	}
	return nil
}

func (b *embeddedBroker) close() {
	// mochi disconnects its clients before it closes the listener, and drops without closing a connection
	// accepted meanwhile: a mapper reconnecting at once would hang until its connect timeout against an
	// edgecore that restarts in-process. A closed listener refuses it at once instead.
	_ = b.ln.Close()
	if err := b.srv.Close(); err != nil {
		klog.ErrorS(err, "Cannot stop embedded MQTT broker", "address", b.addr)
	}
}
