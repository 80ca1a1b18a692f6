// Package edgehub is edgecore's end of the cloud link (spec §10): it obtains
// the node certificate, keeps a mutual-TLS websocket to cloudhub open for as
// long as the process runs, routes cloud messages onto the bus and forwards
// the "websocket" mailbox to the cloud.
package edgehub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/edge/edgehub/certificate"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// Defaults for values the config leaves at zero and for the options.
const (
	DefaultProjectID      = "e632aba927ea4ac2b575ec1603d56f10"
	DefaultHeartbeat      = 15 * time.Second
	DefaultHandshake      = 30 * time.Second
	DefaultReadTimeout    = 15 * time.Second
	DefaultWriteTimeout   = 15 * time.Second
	DefaultReconnectMin   = time.Second
	DefaultMaxFrameSize   = 16 << 20
	DefaultQueueSize      = 2048
	defaultCloseFrameWait = time.Second
)

// Timing overrides durations the config gives in whole seconds; zero fields
// keep the config's value.
type Timing struct {
	Heartbeat time.Duration
	Handshake time.Duration
	// ReadTimeout is how long after a keepalive the cloud may stay silent
	// (not even answering the websocket ping) before the link is declared
	// dead; config websocket.readDeadline.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// ReconnectMin is the first wait after a failure; waits double up to
	// ReconnectMax (default 2×heartbeat, KubeEdge's fixed wait).
	ReconnectMin time.Duration
	ReconnectMax time.Duration
}

type options struct {
	registerer     prometheus.Registerer
	onBootstrapped func()
	maxFrameSize   int64
	queueSize      int
	timing         Timing
	certConfig     func(*certificate.Config)
}

// Option configures a Hub.
type Option func(*options)

// WithRegisterer registers the hub's metrics with r. Without it the metrics
// are kept but not exported.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithOnBootstrapped sets the hook run once certificates have been obtained
// with the join token, so edgecore can erase the token from its config file.
func WithOnBootstrapped(f func()) Option { return func(o *options) { o.onBootstrapped = f } }

// WithMaxFrameSize sets the largest cloud frame accepted (default 16 MiB).
func WithMaxFrameSize(n int64) Option { return func(o *options) { o.maxFrameSize = n } }

// WithQueueSize bounds the messages kept in each lane of the outbox while
// the cloud is unreachable or slow (default 2048); beyond it the oldest are
// dropped.
func WithQueueSize(n int) Option { return func(o *options) { o.queueSize = n } }

// WithTiming overrides the config's durations.
func WithTiming(t Timing) Option { return func(o *options) { o.timing = t } }

// WithCertificateConfig lets the caller adjust the certificate manager's
// config (clock, rotation schedule, backoff) before it is created.
func WithCertificateConfig(f func(*certificate.Config)) Option {
	return func(o *options) { o.certConfig = f }
}

// Hub is the EdgeHub beehive module.
type Hub struct {
	bus      *beehive.Bus
	enabled  bool
	node     string
	project  string
	server   string
	timing   Timing
	maxFrame int64

	certs *certificate.Manager
	// limiter paces control traffic (messageQPS/messageBurst). bulk paces
	// device reports and events with the same budget, less what control
	// used: control charges it without waiting, so bulk never delays
	// control and both together stay within the configured rate.
	limiter *rate.Limiter
	bulk    *rate.Limiter
	outbox  *outbox
	metrics *metrics

	connected atomic.Bool
}

var _ beehive.Module = (*Hub)(nil)

// New builds the hub from the edgeHub config. nodeName is the node's name
// (edged.hostnameOverride). It does no I/O.
func New(cfg *v1alpha2.EdgeHub, nodeName string, bus *beehive.Bus, opts ...Option) (*Hub, error) {
	switch {
	case cfg == nil:
		return nil, errors.New("new edgehub: nil config")
	case bus == nil:
		return nil, errors.New("new edgehub: nil bus")
	case nodeName == "":
		return nil, errors.New("new edgehub: empty node name")
	case cfg.WebSocket == nil || cfg.WebSocket.Server == "":
		return nil, errors.New("new edgehub: websocket.server is not set")
	}
	o := options{maxFrameSize: DefaultMaxFrameSize, queueSize: DefaultQueueSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxFrameSize <= 0 {
		o.maxFrameSize = DefaultMaxFrameSize
	}
	if o.queueSize <= 0 {
		o.queueSize = DefaultQueueSize
	}
	ws := cfg.WebSocket
	t := o.timing
	t.Heartbeat = pick(t.Heartbeat, cfg.Heartbeat, DefaultHeartbeat)
	t.Handshake = pick(t.Handshake, ws.HandshakeTimeout, DefaultHandshake)
	t.ReadTimeout = pick(t.ReadTimeout, ws.ReadDeadline, DefaultReadTimeout)
	t.WriteTimeout = pick(t.WriteTimeout, ws.WriteDeadline, DefaultWriteTimeout)
	if t.ReconnectMax <= 0 {
		t.ReconnectMax = 2 * t.Heartbeat
	}
	if t.ReconnectMin <= 0 {
		t.ReconnectMin = min(DefaultReconnectMin, t.ReconnectMax)
	}

	cc := certificate.Config{
		NodeName:       nodeName,
		CAFile:         cfg.TLSCAFile,
		CertFile:       cfg.TLSCertFile,
		KeyFile:        cfg.TLSPrivateKeyFile,
		Token:          cfg.Token,
		HTTPServer:     cfg.HTTPServer,
		Rotate:         cfg.RotateCertificates,
		OnBootstrapped: o.onBootstrapped,
	}
	if o.certConfig != nil {
		o.certConfig(&cc)
	}
	cm, err := certificate.New(cc)
	if err != nil {
		return nil, fmt.Errorf("new edgehub: %w", err)
	}
	q := newOutbox(o.queueSize)
	m, err := newMetrics(o.registerer, q)
	if err != nil {
		return nil, fmt.Errorf("new edgehub: %w", err)
	}
	project := cfg.ProjectID
	if project == "" {
		project = DefaultProjectID
	}
	return &Hub{
		bus:      bus,
		enabled:  cfg.Enable,
		node:     nodeName,
		project:  project,
		server:   ws.Server,
		timing:   t,
		maxFrame: o.maxFrameSize,
		certs:    cm,
		limiter:  newLimiter(cfg.MessageQPS, cfg.MessageBurst),
		bulk:     newLimiter(cfg.MessageQPS, cfg.MessageBurst),
		outbox:   q,
		metrics:  m,
	}, nil
}

func pick(override time.Duration, seconds int32, def time.Duration) time.Duration {
	switch {
	case override > 0:
		return override
	case seconds > 0:
		return time.Duration(seconds) * time.Second
	default:
		return def
	}
}

// newLimiter: a non-positive QPS means unlimited; the burst is at least 1,
// since a zero burst would make every Wait fail.
func newLimiter(qps, burst int32) *rate.Limiter {
	if qps <= 0 {
		return rate.NewLimiter(rate.Inf, 1)
	}
	return rate.NewLimiter(rate.Limit(qps), max(int(burst), 1))
}

// Name is the mailbox other modules send cloud-bound messages to.
func (h *Hub) Name() string { return modules.EdgeHub }

// Group is the hub group.
func (h *Hub) Group() string { return modules.EdgeHubGroup }

// Enable reports edgeHub.enable.
func (h *Hub) Enable() bool { return h.enabled }

// Connected reports whether the websocket to the cloud is currently up.
func (h *Hub) Connected() bool { return h.connected.Load() }

// Start obtains certificates, then keeps the cloud link up until ctx is
// done. It returns early only for certificate problems no retry can fix
// (bad or expired token, CA mismatch, request rejected).
func (h *Hub) Start(ctx context.Context) error {
	if err := h.ensureCertificates(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("edgehub: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { h.certs.RunRotation(ctx) })
	wg.Go(func() { h.collect(ctx) })
	h.connectLoop(ctx)
	return nil
}

// ensureCertificates retries what may be transient, such as cloudcore not
// being reachable yet when the node boots.
func (h *Hub) ensureCertificates(ctx context.Context) error {
	b := h.newBackoff()
	for {
		err := h.certs.Ensure(ctx)
		if err == nil || certificate.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		d := b.step()
		klog.ErrorS(err, "Cannot obtain node certificate, retrying", "node", h.node, "retryIn", d)
		if !sleep(ctx, d) {
			return context.Cause(ctx)
		}
	}
}

// collect moves the mailbox into the outbox for the whole life of the hub,
// so messages sent while the link is down are kept rather than left to
// block their senders.
func (h *Hub) collect(ctx context.Context) {
	for {
		msg, err := h.bus.Receive(ctx, modules.EdgeHub)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, beehive.ErrStopped) {
				klog.ErrorS(err, "EdgeHub stopped taking messages for the cloud")
			}
			return
		}
		res := h.outbox.push(msg)
		switch {
		case res.coalesced:
			h.metrics.dropped.WithLabelValues(dropCoalesced).Inc()
		case res.evicted != nil && res.lane == laneBulk:
			h.metrics.dropped.WithLabelValues(dropBulkFull).Inc()
			klog.V(2).InfoS("Cloud queue for device reports and events full, dropping the oldest", "limit", h.outbox.max, "message", res.evicted.String())
		case res.evicted != nil:
			h.metrics.dropped.WithLabelValues(dropQueueFull).Inc()
			klog.InfoS("Cloud queue full, dropping the oldest message", "limit", h.outbox.max, "message", res.evicted.String())
		}
	}
}

func (h *Hub) connectLoop(ctx context.Context) {
	b := h.newBackoff()
	established := false
	for {
		// A rotation signalled while disconnected is already honoured by
		// the next dial, which presents the current certificate.
		select {
		case <-h.certs.Rotated():
		default:
		}
		conn, err := h.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := b.step()
			klog.ErrorS(err, "Cannot connect to cloud, retrying", "server", h.server, "retryIn", d)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if established {
			h.metrics.reconnects.Inc()
		}
		established = true
		began := time.Now()
		cause := h.serve(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(cause, errRotated) {
			b.reset()
			continue
		}
		// Reset only after a link that held for a while, so a cloud that
		// accepts and drops at once is not hammered at the minimum interval.
		if time.Since(began) >= h.timing.Heartbeat {
			b.reset()
		}
		d := b.step()
		klog.ErrorS(cause, "Lost connection to cloud, reconnecting", "server", h.server, "retryIn", d)
		if !sleep(ctx, d) {
			return
		}
	}
}

func (h *Hub) setConnected(up bool) {
	h.connected.Store(up)
	if up {
		h.metrics.connected.Set(1)
	} else {
		h.metrics.connected.Set(0)
	}
}

// broadcast tells the local modules about the link state. Groups without
// modules are skipped: edgecore may run with some modules disabled.
func (h *Hub) broadcast(ctx context.Context, content string) {
	// Edged is told too (KubeEdge does not): it holds pod status while offline and flushes it on reconnect.
	for _, g := range []string{modules.TwinGroup, modules.MetaGroup, modules.BusGroup, modules.TaskManagerGroup, modules.EdgedGroup} {
		msg := model.NewMessage("").
			BuildRouter(model.SourceEdgeHub, g, model.ResourceNodeConnection, model.ConnectOperation).
			FillBody(content)
		err := h.bus.SendToGroup(ctx, g, *msg)
		switch {
		case err == nil, errors.Is(err, beehive.ErrUnknownGroup):
		case ctx.Err() != nil:
			return
		default:
			klog.ErrorS(err, "Cannot deliver connection event", "group", g, "event", content)
		}
	}
}

func (h *Hub) newBackoff() *backoff {
	return &backoff{min: h.timing.ReconnectMin, max: h.timing.ReconnectMax}
}

// backoff doubles from min to max.
type backoff struct {
	min, max, next time.Duration
}

func (b *backoff) step() time.Duration {
	d := b.next
	if d <= 0 {
		d = b.min
	}
	b.next = min(2*d, b.max)
	// Up to 20% shorter, so a fleet that lost the cloud at the same moment
	// does not come back in lockstep.
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func (b *backoff) reset() { b.next = 0 }

// sleep waits d and reports whether ctx is still live.
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
