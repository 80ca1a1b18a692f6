package mapper

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"k8s.io/klog/v2"
)

// Config configures Run.
type Config struct {
	// Broker is the edge broker edgecore's EventBus uses, e.g. tcp://127.0.0.1:1883.
	Broker             string
	ClientID           string
	Username, Password string
	// DeviceID names the device in topics: the Device's name ("counter"), or namespace/name for v1.17+ edges.
	DeviceID string
	// Property is the twin that carries ON/OFF (desired) and the count (actual).
	Property string
	// Interval between counts (1s).
	Interval time.Duration
	// RetryInterval is the first delay between connection attempts; they back off to 10 times it (default 1s).
	RetryInterval time.Duration
	// ResyncInterval is how often /twin/get is asked again until the desired value is known (default 5s).
	ResyncInterval time.Duration
	// Now stamps reports; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	switch {
	case c.Broker == "":
		return errors.New("mapper: no broker")
	case c.DeviceID == "":
		return errors.New("mapper: no device id")
	case c.Property == "":
		return errors.New("mapper: no twin property")
	case c.ClientID == "":
		return errors.New("mapper: no client id")
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// subscribeTimeout bounds one SUBSCRIBE round trip.
const subscribeTimeout = 10 * time.Second

// Run connects to the broker (retrying forever), counts as the twin says until ctx ends, then disconnects.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	topics := TopicsFor(cfg.DeviceID)
	var client mqtt.Client
	var publishFailing atomic.Bool
	counter := NewCounter(cfg.Interval, func(value string, reset bool) {
		// Counts go at QoS 0 (a lost one is replaced a second later), the final "0" at QoS 1. Never wait here:
		// this runs under the counter's lock.
		qos := byte(0)
		if reset {
			qos = 1
		}
		tok := client.Publish(topics.Update, qos, false, encodeActual(cfg.Property, value, cfg.Now().UnixMilli()))
		go func() {
			if !tok.WaitTimeout(subscribeTimeout) {
				return
			}
			if err := tok.Error(); err != nil {
				if !publishFailing.Swap(true) {
					klog.InfoS("Cannot publish the count; will keep trying", "value", value, "err", err)
				}
				return
			}
			if publishFailing.Swap(false) {
				klog.InfoS("Publishing counts again", "value", value)
			}
		}()
		klog.V(1).InfoS("Counter value", "value", value)
	})
	defer counter.Close()
	m := New(cfg.Property, counter)

	askTwin := func(c mqtt.Client) {
		// QoS 1: a request lost in a reconnect would otherwise wait for the next resync tick.
		c.Publish(topics.Get, 1, false, getRequest("", cfg.Now().UnixMilli()))
	}
	onMessage := func(_ mqtt.Client, msg mqtt.Message) {
		switch msg.Topic() {
		case topics.Delta:
			m.HandleDelta(msg.Payload())
		case topics.GetResult:
			m.HandleGetResult(msg.Payload())
		case topics.UpdateResult:
			m.HandleUpdateResult(msg.Payload())
		default:
			klog.V(2).InfoS("Ignoring message on an unexpected topic", "topic", msg.Topic())
		}
	}
	filters := map[string]byte{topics.Delta: 1, topics.GetResult: 1, topics.UpdateResult: 0}

	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(cfg.RetryInterval).
		SetMaxReconnectInterval(10 * cfg.RetryInterval).
		// In order: an ON followed by an OFF must not be applied the other way round.
		SetOrderMatters(true).
		SetDefaultPublishHandler(onMessage).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			klog.InfoS("Lost the broker; reconnecting", "broker", cfg.Broker, "err", err)
		}).
		SetReconnectingHandler(func(_ mqtt.Client, _ *mqtt.ClientOptions) {
			klog.V(1).InfoS("Reconnecting to the broker", "broker", cfg.Broker)
		}).
		// Subscribing here, on every connect, is what makes commands survive a broker restart: the session is
		// clean, so the broker forgets the subscriptions (the original demo subscribed once, counter-demo.md §4.1).
		SetOnConnectHandler(func(c mqtt.Client) {
			m.Unsync()
			if !subscribe(ctx, c, filters, onMessage, cfg.RetryInterval) {
				return
			}
			klog.InfoS("Connected and subscribed; asking for the twin", "broker", cfg.Broker, "device", cfg.DeviceID)
			askTwin(c)
		})
	client = mqtt.NewClient(opts)

	klog.InfoS("Connecting", "broker", cfg.Broker, "clientID", cfg.ClientID, "device", cfg.DeviceID, "property", cfg.Property)
	// With ConnectRetry the token completes only once connected; the OnConnect handler does the rest.
	connecting := client.Connect()
	go func() {
		<-connecting.Done()
		if err := connecting.Error(); err != nil {
			klog.ErrorS(err, "Connecting to the broker failed", "broker", cfg.Broker)
		}
	}()

	// Until the twin is known (edgecore may not know the device yet, or a reply was lost), ask again.
	resync := time.NewTicker(cfg.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			counter.Close()
			client.Disconnect(250)
			klog.InfoS("Stopped")
			return nil
		case <-resync.C:
			if client.IsConnectionOpen() && !m.Synced() {
				klog.V(1).InfoS("Desired value still unknown; asking for the twin again")
				askTwin(client)
			}
		}
	}
}

// subscribe subscribes to filters, retrying while the connection stays open. It reports success.
func subscribe(ctx context.Context, c mqtt.Client, filters map[string]byte, cb mqtt.MessageHandler, retry time.Duration) bool {
	for {
		err := trySubscribe(c, filters, cb)
		if err == nil {
			return true
		}
		klog.ErrorS(err, "Cannot subscribe; retrying")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(retry):
		}
		if !c.IsConnectionOpen() {
			return false // the next connect subscribes again
		}
	}
}

func trySubscribe(c mqtt.Client, filters map[string]byte, cb mqtt.MessageHandler) error {
	tok := c.SubscribeMultiple(filters, cb)
	if !tok.WaitTimeout(subscribeTimeout) {
		return errors.New("subscribe timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("broker refused the subscription to %s", topic)
			}
		}
	}
	return nil
}
