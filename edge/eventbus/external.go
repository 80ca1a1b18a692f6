package eventbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"k8s.io/klog/v2"
)

// External broker client settings.
const (
	connectTimeout = 10 * time.Second
	// opTimeout bounds the wait for the broker to acknowledge a subscribe,
	// an unsubscribe or a publish.
	opTimeout    = 10 * time.Second
	keepAlive    = 30 * time.Second
	pingTimeout  = 10 * time.Second
	minBackoff   = time.Second
	maxBackoff   = 30 * time.Second
	subscribeQoS = 1
	// subackFailure is the SUBACK return code of a refused filter.
	subackFailure = 0x80
)

var errNoAck = errors.New("no acknowledgement from the MQTT broker in time")

type connOptions struct {
	// role names the connection in logs: "subscriber" or "publisher".
	role     string
	url      string
	clientID string
	username string
	password string
	tls      *tls.Config
	// filters, when set, returns what to subscribe to on every connect.
	filters func() []string
	// onMessage receives every message; it must not block.
	onMessage func(topic string, payload []byte)
	// onReady runs after each (re)connect, once subscribed.
	onReady    func()
	minBackoff time.Duration
}

// mqttConn is one client connection to the external broker that reconnects
// until its context ends. Paho's own auto-reconnect is off: its retry
// sleeps cannot be interrupted, so shutdown would leave goroutines behind.
type mqttConn struct {
	opts   connOptions
	client paho.Client
	// lost carries the reason the current connection ended.
	lost chan error
	// ready means connected and, for the subscriber, subscribed.
	ready atomic.Bool

	// handlers tracks paho's OnConnect goroutines, which paho starts but
	// does not wait for; closing stops new ones from being added.
	hmu      sync.Mutex
	closing  bool
	handlers sync.WaitGroup
}

func newMQTTConn(o connOptions) *mqttConn {
	if o.minBackoff <= 0 {
		o.minBackoff = minBackoff
	}
	c := &mqttConn{opts: o, lost: make(chan error, 1)}
	po := paho.NewClientOptions().
		AddBroker(o.url).
		SetClientID(o.clientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(connectTimeout).
		SetDialer(&net.Dialer{Timeout: connectTimeout}).
		SetKeepAlive(keepAlive).
		SetPingTimeout(pingTimeout).
		SetWriteTimeout(opTimeout).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.signalLost(err) })
	if o.username != "" {
		po.SetUsername(o.username).SetPassword(o.password)
	}
	if o.tls != nil {
		po.SetTLSConfig(o.tls)
	}
	if o.onMessage != nil {
		// Subscriptions carry no callback, so every message lands here once,
		// however many of our filters it matches.
		po.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { o.onMessage(m.Topic(), m.Payload()) })
	}
	c.client = paho.NewClient(po)
	return c
}

func (c *mqttConn) signalLost(err error) {
	select {
	case c.lost <- err:
	default:
	}
}

// run connects, and reconnects after every loss with exponential backoff,
// until ctx ends. Each outage is logged once when it starts and once when
// it ends.
func (c *mqttConn) run(ctx context.Context) {
	defer c.shutdown()
	log := klog.Background().WithValues("broker", c.opts.url, "client", c.opts.role)
	backoff := c.opts.minBackoff
	var downSince time.Time
	attempts := 0
	for ctx.Err() == nil {
		select {
		case <-c.lost: // a stale signal must not end the new connection
		default:
		}
		tok := c.client.Connect()
		<-tok.Done() // bounded by connectTimeout
		if err := tok.Error(); err != nil {
			attempts++
			if downSince.IsZero() {
				downSince = time.Now()
				log.Error(err, "Cannot connect to MQTT broker; retrying until it is reachable")
			} else {
				log.V(4).Info("MQTT broker still unreachable", "attempts", attempts, "err", err)
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		if downSince.IsZero() {
			log.Info("Connected to MQTT broker")
		} else {
			log.Info("Reconnected to MQTT broker", "down", time.Since(downSince).Round(time.Millisecond), "attempts", attempts)
		}
		downSince, attempts = time.Time{}, 0
		up := time.Now()

		select {
		case <-ctx.Done():
			return
		case err := <-c.lost:
			c.ready.Store(false)
			// Needed when we asked for the reconnect ourselves; a no-op after a real loss.
			c.client.Disconnect(0)
			downSince = time.Now()
			log.Error(err, "Lost connection to MQTT broker; reconnecting")
		}
		// A connection that keeps dropping at once (another client taking
		// our client ID, a broker refusing our subscriptions) must not turn
		// into a busy loop: back off unless it had been up for a while.
		if time.Since(up) >= maxBackoff {
			backoff = c.opts.minBackoff
			continue
		}
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (c *mqttConn) shutdown() {
	c.ready.Store(false)
	c.hmu.Lock()
	c.closing = true
	c.hmu.Unlock()
	// Disconnecting completes pending tokens, which lets handlers return.
	c.client.Disconnect(250)
	c.handlers.Wait()
}

// onConnect subscribes on every connect, because with a clean session the
// broker forgets our subscriptions whenever the connection drops.
func (c *mqttConn) onConnect(paho.Client) {
	c.hmu.Lock()
	if c.closing {
		c.hmu.Unlock()
		return
	}
	c.handlers.Add(1)
	c.hmu.Unlock()
	defer c.handlers.Done()

	if c.opts.filters != nil {
		if err := c.subscribe(c.opts.filters()...); err != nil {
			// Connected but deaf would silently lose device messages:
			// start over instead.
			c.signalLost(fmt.Errorf("subscribe after connect: %w", err))
			return
		}
	}
	c.ready.Store(true)
	if c.opts.onReady != nil {
		c.opts.onReady()
	}
}

func (c *mqttConn) subscribe(filters ...string) error {
	if len(filters) == 0 {
		return nil
	}
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = subscribeQoS
	}
	tok := c.client.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(opTimeout) {
		return fmt.Errorf("subscribe to %q: %w", filters, errNoAck)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe to %q: %w", filters, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		var refused []string
		for f, code := range st.Result() {
			if code == subackFailure {
				refused = append(refused, f)
			}
		}
		if len(refused) > 0 {
			// Retrying would be refused again (ACLs, broker limits).
			klog.ErrorS(nil, "MQTT broker refused subscriptions", "broker", c.opts.url, "filters", refused)
		}
	}
	return nil
}

// subscribeNow subscribes on the current connection, if any; otherwise
// the next connect does it.
func (c *mqttConn) subscribeNow(filter string) {
	if !c.client.IsConnectionOpen() {
		return
	}
	if err := c.subscribe(filter); err != nil {
		klog.ErrorS(err, "Cannot subscribe; will retry on reconnect", "broker", c.opts.url)
	}
}

func (c *mqttConn) unsubscribeNow(filter string) {
	if !c.client.IsConnectionOpen() {
		return
	}
	tok := c.client.Unsubscribe(filter)
	err := errNoAck
	if tok.WaitTimeout(opTimeout) {
		err = tok.Error()
	}
	if err != nil {
		klog.ErrorS(err, "Cannot unsubscribe", "broker", c.opts.url, "filter", filter)
	}
}

// publishLoop sends queued messages in order whenever the connection is up.
// A message that fails because the connection went down stays queued for
// the next connection; one refused on a live connection is dropped, so it
// cannot block the queue.
func (c *mqttConn) publishLoop(ctx context.Context, q *publishQueue, qos byte, retain bool) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
		for c.ready.Load() {
			m, ok := q.peek()
			if !ok {
				break
			}
			tok := c.client.Publish(m.topic, qos, retain, m.payload)
			timer.Reset(opTimeout)
			var err error
			select {
			case <-ctx.Done():
				return
			case <-tok.Done():
				err = tok.Error()
			case <-timer.C:
				err = errNoAck
			}
			if err != nil && !c.client.IsConnectionOpen() {
				break
			}
			if err != nil {
				klog.ErrorS(err, "Dropping MQTT message the broker did not accept", "broker", c.opts.url, "topic", m.topic)
			}
			q.pop(m.seq)
		}
	}
}

// maxQueuedBytes bounds the memory of a publish queue, whatever its
// message limit.
const maxQueuedBytes = 8 << 20

// publishQueue holds outgoing messages for the external broker, so that
// the bus never waits for it. While the broker is unreachable it keeps the
// newest messages, up to its message limit and maxQueuedBytes, and drops
// the oldest.
type publishQueue struct {
	broker string
	wake   chan struct{}

	mu      sync.Mutex
	items   []outMsg
	bytes   int
	limit   int
	seq     uint64
	dropped int
}

type outMsg struct {
	seq     uint64
	topic   string
	payload []byte
}

func newPublishQueue(broker string, limit int) *publishQueue {
	return &publishQueue{broker: broker, limit: max(limit, 1), wake: make(chan struct{}, 1)}
}

func (q *publishQueue) push(topic string, payload []byte) {
	q.mu.Lock()
	for len(q.items) > 0 && (len(q.items) >= q.limit || q.bytes+len(payload) > maxQueuedBytes) {
		if q.dropped == 0 {
			klog.InfoS("MQTT publish queue full while the broker is unreachable; dropping the oldest messages",
				"broker", q.broker, "limit", q.limit, "limitBytes", maxQueuedBytes)
		}
		q.dropped++
		q.removeHead()
	}
	q.seq++
	q.items = append(q.items, outMsg{seq: q.seq, topic: topic, payload: payload})
	q.bytes += len(payload)
	q.mu.Unlock()
	q.signal()
}

func (q *publishQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *publishQueue) peek() (outMsg, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dropped > 0 {
		klog.InfoS("Dropped MQTT messages while the broker was unreachable", "broker", q.broker, "count", q.dropped)
		q.dropped = 0
	}
	if len(q.items) == 0 {
		return outMsg{}, false
	}
	return q.items[0], true
}

// pop removes the message with seq if it is still at the head; push may
// have dropped it meanwhile.
func (q *publishQueue) pop(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && q.items[0].seq == seq {
		q.removeHead()
	}
}

func (q *publishQueue) removeHead() {
	q.bytes -= len(q.items[0].payload)
	q.items[0] = outMsg{}
	q.items = q.items[1:]
}

func (q *publishQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// sleep waits for d or until ctx ends, reporting whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// externalURL returns the broker URL paho should dial: with TLS configured,
// a plain tcp:// or mqtt:// URL is switched to TLS rather than silently
// ignoring the TLS settings.
func externalURL(raw string, useTLS bool) string {
	if !useTLS {
		return raw
	}
	for _, p := range []string{"tcp://", "mqtt://"} {
		if strings.HasPrefix(strings.ToLower(raw), p) {
			return "ssl://" + raw[len(p):]
		}
	}
	return raw
}
