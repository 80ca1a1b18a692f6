// Package eventbus is edgecore's MQTT bridge (module "eventbus", group
// "bus"), wire-compatible with KubeEdge's. Messages that mappers and apps
// publish on the built-in topics, or on topics the cloud subscribed to,
// travel to DeviceTwin ($hw/events/device/..., $hw/events/node/...) or to
// the cloud (everything else); messages from the bus are published to MQTT.
//
// The broker is an external one such as mosquitto (mqttMode 2, default), a
// broker embedded in edgecore (mqttMode 0), or both (mqttMode 1).
//
// Publishing never waits for the external broker: messages queue in memory
// while it is unreachable, up to mqttSessionQueueSize, the oldest dropped
// first, and are sent in order once it is back. Received messages go
// through a bounded queue too, because the MQTT client must keep reading
// to stay connected; when the bus cannot keep up they are dropped and
// counted in the log.
package eventbus

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/sqlitedb"
)

const (
	// MaxPayloadSize caps a message between MQTT and the bus. Twin and
	// upload payloads are small; a bigger one is a misbehaving client, and
	// it would have to cross the cloud link too.
	MaxPayloadSize = 1 << 20
	// inboundQueueSize holds received messages while the bus is busy.
	inboundQueueSize = 1024
	// authInfoResource is the only get_result resource KubeEdge answers.
	authInfoResource = "auth_info"
	defaultQueueSize = 100
)

// EventBus is the "eventbus" module.
type EventBus struct {
	bus      *beehive.Bus
	enabled  bool
	nodeName string
	dbPath   string

	mode         v1alpha2.MQTTMode
	qos          byte
	retain       bool
	queueSize    int
	internalAddr string
	external     string
	tls          *tls.Config
	subClientID  string
	pubClientID  string
	username     string
	password     string
	// minBackoff is the first reconnect delay; tests shorten it.
	minBackoff time.Duration

	// session is the state of the running Start call, nil otherwise.
	session atomic.Pointer[session]
}

// New returns the event bus module. dbPath is edgecore's database
// (database.dataSource), where dynamic subscriptions are kept in table
// sub_topics; empty keeps them in memory only. Configuration errors,
// including unreadable TLS files, are reported here rather than at Start.
func New(bus *beehive.Bus, cfg *v1alpha2.EventBus, dbPath, nodeName string) (*EventBus, error) {
	if bus == nil {
		return nil, errors.New("new eventbus: nil bus")
	}
	if cfg == nil {
		return nil, errors.New("new eventbus: nil config")
	}
	e := &EventBus{
		bus:        bus,
		enabled:    cfg.Enable,
		nodeName:   nodeName,
		dbPath:     dbPath,
		mode:       cfg.MQTTMode,
		retain:     cfg.MQTTRetain,
		queueSize:  int(cfg.MQTTSessionQueueSize),
		username:   cfg.MQTTUsername,
		password:   cfg.MQTTPassword,
		minBackoff: minBackoff,
	}
	if !e.enabled {
		return e, nil
	}
	if e.queueSize <= 0 {
		e.queueSize = defaultQueueSize
	}
	if cfg.MQTTQOS < 0 || cfg.MQTTQOS > 2 {
		return nil, fmt.Errorf("new eventbus: mqttQOS %d: must be 0, 1 or 2", cfg.MQTTQOS)
	}
	e.qos = byte(cfg.MQTTQOS)
	if e.mode < v1alpha2.MQTTModeInternal || e.mode > v1alpha2.MQTTModeExternal {
		return nil, fmt.Errorf("new eventbus: mqttMode %d: must be 0 (internal), 1 (both) or 2 (external)", e.mode)
	}
	if e.usesInternal() {
		addr, err := internalAddress(cfg.MQTTServerInternal)
		if err != nil {
			return nil, fmt.Errorf("new eventbus: %w", err)
		}
		e.internalAddr = addr
	}
	if e.usesExternal() {
		if _, err := brokerURL(cfg.MQTTServerExternal); err != nil {
			return nil, fmt.Errorf("new eventbus: %w", err)
		}
		if t := cfg.TLS; t != nil && t.Enable {
			tc, err := loadTLS(t)
			if err != nil {
				return nil, fmt.Errorf("new eventbus: %w", err)
			}
			e.tls = tc
		}
		e.external = externalURL(cfg.MQTTServerExternal, e.tls != nil)
		// Unique per process start, as KubeEdge's are, so that a restarted
		// edgecore does not collide with its own stale session.
		suffix := time.Now().UnixNano()
		e.subClientID = cmp.Or(cfg.MQTTSubClientID, fmt.Sprintf("hub-client-sub-%d", suffix))
		e.pubClientID = cmp.Or(cfg.MQTTPubClientID, fmt.Sprintf("hub-client-pub-%d", suffix))
	}
	return e, nil
}

// Name returns "eventbus".
func (e *EventBus) Name() string { return modules.EventBus }

// Group returns "bus".
func (e *EventBus) Group() string { return modules.BusGroup }

// Enable reports modules.eventBus.enable.
func (e *EventBus) Enable() bool { return e.enabled }

// Ready reports whether every broker in use is connected (or, embedded,
// listening) and subscribed.
func (e *EventBus) Ready() bool {
	s := e.session.Load()
	return s != nil && (s.sub == nil || s.sub.ready.Load()) && (s.pub == nil || s.pub.ready.Load())
}

func (e *EventBus) usesInternal() bool { return e.mode != v1alpha2.MQTTModeExternal }
func (e *EventBus) usesExternal() bool { return e.mode != v1alpha2.MQTTModeInternal }

// session is the state of one Start call; a restarted module starts afresh.
type session struct {
	eb    *EventBus
	store *sqlitedb.StringSet
	in    chan inbound
	// dropped counts received messages lost to a full inbound queue.
	dropped atomic.Int64

	mu      sync.Mutex
	dynamic map[string]bool

	broker *embeddedBroker
	sub    *mqttConn
	pub    *mqttConn
	pubQ   *publishQueue
}

type inbound struct {
	topic   string
	payload string
}

// Start runs the module until ctx ends.
func (e *EventBus) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	store, err := openTopicStore(ctx, e.dbPath)
	if err != nil {
		cancel()
		return fmt.Errorf("start eventbus: %w", err)
	}
	// Run in reverse: goroutines stop before the database closes.
	defer func() {
		if err := store.Close(); err != nil {
			klog.ErrorS(err, "Closing eventbus database")
		}
	}()
	defer wg.Wait()
	defer cancel()
	if store == nil {
		klog.InfoS("Event bus has no database: dynamic subscriptions will not survive a restart")
	}

	saved, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("start eventbus: %w", err)
	}
	s := &session{eb: e, store: store, in: make(chan inbound, inboundQueueSize), dynamic: make(map[string]bool)}
	for _, t := range saved {
		if err := validTopicFilter(t); err != nil {
			klog.InfoS("Ignoring invalid saved subscription", "filter", t, "err", err)
			continue
		}
		s.dynamic[t] = true
	}
	wg.Go(func() { s.dispatchLoop(ctx) })

	if e.usesInternal() {
		b, err := startBroker(e.internalAddr, e.queueSize, s.receive)
		if err != nil {
			return fmt.Errorf("start eventbus: %w", err)
		}
		defer b.close()
		for _, f := range s.filters() {
			if err := b.subscribe(f); err != nil {
				klog.ErrorS(err, "Cannot subscribe on embedded broker")
			}
		}
		s.broker = b
	}
	if e.usesExternal() {
		common := connOptions{url: e.external, username: e.username, password: e.password, tls: e.tls, minBackoff: e.minBackoff}
		so := common
		so.role, so.clientID, so.filters, so.onMessage = "subscriber", e.subClientID, s.filters, s.receive
		s.sub = newMQTTConn(so)
		s.pubQ = newPublishQueue(e.external, e.queueSize)
		po := common
		po.role, po.clientID, po.onReady = "publisher", e.pubClientID, s.pubQ.signal
		s.pub = newMQTTConn(po)
		wg.Go(func() { s.sub.run(ctx) })
		wg.Go(func() { s.pub.run(ctx) })
		wg.Go(func() { s.pub.publishLoop(ctx, s.pubQ, e.qos, e.retain) })
	}
	e.session.Store(s)
	defer e.session.Store(nil)
	klog.InfoS("Event bus started", "mode", e.mode, "internal", e.internalAddr, "external", e.external,
		"subscriptions", len(s.filters()))

	err = e.bus.Serve(ctx, e.Name(), func(msg model.Message) { s.handle(ctx, &msg) })
	if err == nil && s.pubQ != nil {
		if n := s.pubQ.len(); n > 0 {
			klog.InfoS("Discarding unsent MQTT messages", "count", n)
		}
	}
	return err
}

// filters returns every filter to subscribe to: built-in, then dynamic.
func (s *session) filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := BuiltinFilters()
	for f := range s.dynamic {
		if !isBuiltin(f) {
			out = append(out, f)
		}
	}
	slices.Sort(out[len(builtinFilters):])
	return out
}

// receive takes a message from either broker. It runs on the broker's or
// the MQTT client's goroutine, so it never blocks.
func (s *session) receive(topic string, payload []byte) {
	if len(payload) > MaxPayloadSize {
		klog.InfoS("Dropping oversized MQTT message", "topic", topic, "bytes", len(payload), "limit", MaxPayloadSize)
		return
	}
	select {
	case s.in <- inbound{topic: topic, payload: string(payload)}:
	default:
		if s.dropped.Add(1) == 1 {
			klog.InfoS("Event bus cannot keep up; dropping received MQTT messages", "queue", inboundQueueSize)
		}
	}
}

// dispatchLoop forwards received messages in arrival order.
func (s *session) dispatchLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.in:
			s.dispatch(ctx, m)
		}
		if n := s.dropped.Swap(0); n > 0 {
			klog.InfoS("Dropped received MQTT messages: event bus queue was full", "count", n)
		}
	}
}

func (s *session) dispatch(ctx context.Context, m inbound) {
	group, msg := Route(m.topic, m.payload)
	err := s.eb.bus.SendToGroup(ctx, group, *msg)
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, beehive.ErrUnknownGroup):
		klog.V(2).InfoS("Dropping MQTT message: no module in its group", "topic", m.topic, "group", group)
	default:
		klog.ErrorS(err, "Cannot forward MQTT message", "topic", m.topic, "group", group)
	}
}

// handle runs one mailbox message. Bad input is logged and dropped; a
// panic is contained here because the module would otherwise stop for good.
func (s *session) handle(ctx context.Context, msg *model.Message) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered panic while handling message", "msg", msg.String(), "panic", r)
		}
	}()
	res := msg.GetResource()
	var err error
	switch op := msg.GetOperation(); op {
	case model.SubscribeOperation:
		err = s.subscribe(ctx, res)
	case model.UnsubscribeOperation:
		err = s.unsubscribe(ctx, res)
	case model.PublishOperation:
		var payload []byte
		if payload, err = msg.GetContentData(); err == nil {
			err = s.publish(res, payload)
		}
	case model.MessageOperation:
		var topic string
		var payload []byte
		if topic, payload, err = innerMessage(msg); err == nil {
			err = s.publish(topic, payload)
		}
	case model.GetResultOperation:
		if res != authInfoResource {
			klog.V(2).InfoS("Ignoring get_result for a resource other than auth_info", "msg", msg.String())
			return
		}
		var payload []byte
		if payload, err = json.Marshal(msg.Content); err == nil {
			err = s.publish("$hw/events/node/"+s.eb.nodeName+"/authInfo/get/result", payload)
		}
	default:
		klog.V(2).InfoS("Ignoring message with unknown operation", "msg", msg.String())
		return
	}
	if err != nil {
		klog.InfoS("Dropping bad eventbus message", "msg", msg.String(), "err", err)
	}
}

// innerMessage reads {"message":{"topic":T,...}}: the inner object, as
// received, is the payload for T.
func innerMessage(msg *model.Message) (string, []byte, error) {
	var outer struct {
		Message json.RawMessage `json:"message"`
	}
	if err := msg.UnmarshalContent(&outer); err != nil {
		return "", nil, err
	}
	var inner struct {
		Topic string `json:"topic"`
	}
	if len(outer.Message) == 0 {
		return "", nil, errors.New("content has no \"message\" object")
	}
	if err := json.Unmarshal(outer.Message, &inner); err != nil {
		return "", nil, fmt.Errorf("read topic of inner message: %w", err)
	}
	return inner.Topic, outer.Message, nil
}

func (s *session) subscribe(ctx context.Context, filter string) error {
	if err := validTopicFilter(filter); err != nil {
		return fmt.Errorf("subscribe to %q: %w", filter, err)
	}
	// Saved first: if the broker is down, the next connect subscribes it.
	if err := s.store.Add(ctx, filter); err != nil {
		return err
	}
	s.mu.Lock()
	s.dynamic[filter] = true
	s.mu.Unlock()
	if isBuiltin(filter) {
		return nil
	}
	if s.broker != nil {
		if err := s.broker.subscribe(filter); err != nil {
			return err
		}
	}
	if s.sub != nil {
		s.sub.subscribeNow(filter)
	}
	klog.InfoS("Subscribed", "filter", filter)
	return nil
}

func (s *session) unsubscribe(ctx context.Context, filter string) error {
	if err := validTopicFilter(filter); err != nil {
		return fmt.Errorf("unsubscribe from %q: %w", filter, err)
	}
	if err := s.store.Remove(ctx, filter); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.dynamic, filter)
	s.mu.Unlock()
	if isBuiltin(filter) {
		// DeviceTwin and the cloud rely on the built-in topics.
		klog.InfoS("Keeping built-in subscription", "filter", filter)
		return nil
	}
	if s.broker != nil {
		if err := s.broker.unsubscribe(filter); err != nil {
			return err
		}
	}
	if s.sub != nil {
		s.sub.unsubscribeNow(filter)
	}
	klog.InfoS("Unsubscribed", "filter", filter)
	return nil
}

// publish sends payload to every broker in use, as is.
func (s *session) publish(topic string, payload []byte) error {
	if err := validTopicName(topic); err != nil {
		return fmt.Errorf("publish to %q: %w", topic, err)
	}
	if len(payload) > MaxPayloadSize {
		return fmt.Errorf("publish to %q: payload of %d bytes exceeds %d", topic, len(payload), MaxPayloadSize)
	}
	if s.pubQ != nil {
		s.pubQ.push(topic, payload)
	}
	if s.broker != nil {
		return s.broker.publish(topic, payload, s.eb.qos, s.eb.retain)
	}
	return nil
}

// brokerURL checks scheme://host:port.
func brokerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("MQTT server %q: %w", raw, err)
	}
	if u.Scheme == "" || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("MQTT server %q: want scheme://host:port", raw)
	}
	return u, nil
}

// internalAddress is the listen address of the embedded broker, which
// speaks plain MQTT over TCP only.
func internalAddress(raw string) (string, error) {
	u, err := brokerURL(raw)
	if err != nil {
		return "", err
	}
	if s := strings.ToLower(u.Scheme); s != "tcp" && s != "mqtt" {
		return "", fmt.Errorf("MQTT server %q: the embedded broker supports tcp:// only", raw)
	}
	return u.Host, nil
}

func loadTLS(t *v1alpha2.EventBusTLS) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLSMQTTCAFile != "" {
		pem, err := os.ReadFile(t.TLSMQTTCAFile)
		if err != nil {
			return nil, fmt.Errorf("eventBusTLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("eventBusTLS CA %q: no PEM certificate found", t.TLSMQTTCAFile)
		}
		c.RootCAs = pool
	}
	if t.TLSMQTTCertFile != "" || t.TLSMQTTPrivateKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.TLSMQTTCertFile, t.TLSMQTTPrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("eventBusTLS client certificate %q, key %q: %w", t.TLSMQTTCertFile, t.TLSMQTTPrivateKeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// openTopicStore keeps dynamic subscriptions in KubeEdge's sub_topics table, so an existing edgecore.db keeps its
// subscriptions. With no path it is nil and subscriptions last until the module stops.
func openTopicStore(ctx context.Context, path string) (*sqlitedb.StringSet, error) {
	return sqlitedb.OpenStringSet(ctx, path, "sub_topics", "topic", "subscription")
}
