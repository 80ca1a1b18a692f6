// Package cloudhub is the cloud end of the cloud-edge link. It terminates
// the edge nodes' websocket connections (mutual TLS, node identity from the
// client certificate), routes what the edge sends to the cloud controllers,
// and delivers the controllers' messages to the nodes: Kubernetes objects
// reliably (one in-flight message per node, ACK by parent id, resends, and
// the delivered resourceVersion recorded in (Cluster)ObjectSync), everything
// else fire-and-forget.
//
// Unlike KubeEdge, a node's queues outlive its connections: messages for an
// offline node wait, newest version per object, and are delivered when the
// node reconnects.
package cloudhub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/modules"
)

// Defaults for Options fields left zero.
const (
	DefaultReadLimit        = 16 << 20
	DefaultAckTimeout       = 5 * time.Second
	DefaultAckAttempts      = 5
	DefaultRequeueBaseDelay = time.Second
	DefaultRequeueMaxDelay  = 2 * time.Minute
	DefaultMaxNoAckPerNode  = 1024
	// DefaultWorkers is generous because a write to a half-dead node can
	// hold a worker for up to writeTimeout; idle workers cost little.
	DefaultWorkers         = 32
	DefaultSyncResponseTTL = 2 * time.Minute
	DefaultKeepalive       = 30 * time.Second
	DefaultWriteTimeout    = 30 * time.Second
	// DefaultReadBufferSize is small on purpose: frames larger than the
	// buffer are read straight into the message, and every connection keeps
	// its read buffer for life.
	DefaultReadBufferSize = 1024
	// DefaultWriteBufferSize is the size of the pooled write buffers, held
	// only while a message is being written.
	DefaultWriteBufferSize = 4096
)

const (
	readHeaderTimeout = 30 * time.Second
	handshakeTimeout  = 30 * time.Second
	shutdownGrace     = 2 * time.Second
	// closeGrace bounds the close frame write, which must not stall the
	// goroutine closing the session on a peer that stopped reading.
	closeGrace = 100 * time.Millisecond
)

// Options configures CloudHub. Config, Bus and TLSConfig are required.
type Options struct {
	Config v1alpha1.CloudHub
	Bus    *beehive.Bus
	// Client reads and writes ObjectSync and ClusterObjectSync. Nil turns
	// reliable-sync bookkeeping off (messages are still ACKed and resent).
	Client client.Client
	// Reader reads ObjectSyncs for the check before a first delivery. An
	// informer cache keeps the API server off the delivery path (a stale
	// read costs only a duplicate delivery); nil reads through Client.
	Reader client.Reader
	// TLSConfig carries the server certificate and must verify client
	// certificates against the cloud CA (RequireAndVerifyClientCert).
	TLSConfig *tls.Config
	// Registerer receives the metrics; nil means they are not exported.
	Registerer prometheus.Registerer
	// Listener, if set, is served instead of websocket address:port. It is
	// closed when Start returns.
	Listener net.Listener
	// Authorizer vets every object CloudHub delivers: a node is sent only
	// what the pods bound to it reference, whichever module sends it. Nil
	// delivers everything (unit tests of the transport).
	Authorizer Authorizer
	// Revocation, if set, refuses revoked client certificates at the
	// handshake and closes open sessions whose certificate becomes revoked.
	Revocation Revocation

	// The fields below override the config and defaults, mainly for tests.
	KeepaliveTimeout time.Duration
	WriteTimeout     time.Duration
	// AckTimeout is how long one attempt waits for the edge's ACK.
	AckTimeout time.Duration
	// AckAttempts is the number of writes before a message is requeued with
	// backoff.
	AckAttempts      int
	RequeueBaseDelay time.Duration
	RequeueMaxDelay  time.Duration
	// ReadLimit is the largest frame accepted from an edge node; a larger
	// one closes that node's session.
	ReadLimit int64
	// MaxNoAckPerNode bounds the fire-and-forget queue of a node; when
	// full, the oldest message is dropped.
	MaxNoAckPerNode int
	// Workers is the number of goroutines sending to nodes and writing
	// ObjectSyncs, shared by all nodes.
	Workers int
	// SyncResponseTTL is how long a response to a controller's SendSync is
	// expected; after that a response is treated as unsolicited.
	SyncResponseTTL time.Duration
	ReadBufferSize  int
	WriteBufferSize int
	// SyncCallTimeout bounds each ObjectSync read or write.
	SyncCallTimeout time.Duration
}

// Authorizer decides whether node may hold an object; the node authorizer
// (pkg/security/nodeauthz) implements it.
type Authorizer interface {
	MayHold(node, resourceType, namespace, name string) error
}

// CloudHub is the "cloudhub" beehive module.
type CloudHub struct {
	opts         Options
	keepalive    time.Duration
	writeTimeout time.Duration
	nodeLimit    int
	metrics      *metrics
	upgrader     websocket.Upgrader
	readBufs     sync.Pool
	limiter      workqueue.TypedRateLimiter[string]

	// queue holds node ids with work: new messages, a connect, an ACK or a
	// due deadline. The workqueue never hands one node to two workers, which
	// is what keeps one in-flight message per node.
	queue workqueue.TypedDelayingInterface[string]

	// mu guards nodes, connected, closing and the Add side of sessions.
	// Lock order: node.evMu, then mu, then node.mu.
	mu        sync.Mutex
	nodes     map[string]*node
	connected int
	closing   bool
	sessions  sync.WaitGroup

	syncMu      sync.Mutex
	syncWaiting map[string]syncWait
	lastSweep   time.Time

	// records writes ObjectSyncs off the delivery path.
	records *recorder

	// ackHook, if set, is called after an ACK has been recorded; tests and
	// benchmarks use it to observe delivery.
	ackHook func(nodeID, msgID string)
}

type syncWait struct {
	nodeID   string
	deadline time.Time
}

var _ beehive.Module = (*CloudHub)(nil)

// New returns the module; options are validated by Start.
func New(opts Options) *CloudHub {
	opts = withDefaults(opts)
	h := &CloudHub{
		opts:         opts,
		keepalive:    opts.KeepaliveTimeout,
		writeTimeout: opts.WriteTimeout,
		nodeLimit:    int(opts.Config.NodeLimit),
		limiter:      workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RequeueBaseDelay, opts.RequeueMaxDelay),
		nodes:        make(map[string]*node),
		syncWaiting:  make(map[string]syncWait),
	}
	h.metrics = newMetrics(h)
	h.records = newRecorder(h)
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   opts.ReadBufferSize,
		WriteBufferSize:  opts.WriteBufferSize,
		WriteBufferPool:  &sync.Pool{},
		// Edge nodes are not browsers; they are authenticated by their
		// client certificate, so the Origin header means nothing here.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return h
}

func withDefaults(o Options) Options {
	setDur := func(d *time.Duration, seconds int32, def time.Duration) {
		if *d > 0 {
			return
		}
		if seconds > 0 {
			*d = time.Duration(seconds) * time.Second
			return
		}
		*d = def
	}
	setDur(&o.KeepaliveTimeout, o.Config.KeepaliveInterval, DefaultKeepalive)
	setDur(&o.WriteTimeout, o.Config.WriteTimeout, DefaultWriteTimeout)
	setDur(&o.AckTimeout, 0, DefaultAckTimeout)
	setDur(&o.RequeueBaseDelay, 0, DefaultRequeueBaseDelay)
	setDur(&o.RequeueMaxDelay, 0, DefaultRequeueMaxDelay)
	setDur(&o.SyncResponseTTL, 0, DefaultSyncResponseTTL)
	setDur(&o.SyncCallTimeout, 0, DefaultSyncCallTimeout)
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&o.AckAttempts, DefaultAckAttempts)
	setInt(&o.MaxNoAckPerNode, DefaultMaxNoAckPerNode)
	setInt(&o.Workers, DefaultWorkers)
	setInt(&o.ReadBufferSize, DefaultReadBufferSize)
	setInt(&o.WriteBufferSize, DefaultWriteBufferSize)
	if o.ReadLimit <= 0 {
		o.ReadLimit = DefaultReadLimit
	}
	return o
}

// Name implements beehive.Module.
func (h *CloudHub) Name() string { return modules.CloudHub }

// Group implements beehive.Module.
func (h *CloudHub) Group() string { return modules.CloudHub }

// Enable implements beehive.Module.
func (h *CloudHub) Enable() bool { return h.opts.Config.Enable }

// Start serves edge connections and delivers the cloudhub mailbox until ctx
// ends, then closes every session and returns once all its goroutines have.
// Queued messages are kept, so a restarted Start resumes delivery.
func (h *CloudHub) Start(ctx context.Context) error {
	if h.opts.Bus == nil {
		return errors.New("start cloudhub: no message bus")
	}
	if h.opts.TLSConfig == nil {
		return errors.New("start cloudhub: no TLS config; edge connections require mutual TLS")
	}
	ln := h.opts.Listener
	if ln == nil {
		ws := h.opts.Config.WebSocket
		if ws == nil || !ws.Enable {
			return errors.New("start cloudhub: websocket server disabled, and it is the only transport supported")
		}
		addr := net.JoinHostPort(ws.Address, strconv.Itoa(int(ws.Port)))
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("start cloudhub: listen on %s: %w", addr, err)
		}
	}
	if err := h.metrics.register(h.opts.Registerer); err != nil {
		_ = ln.Close()
		return fmt.Errorf("start cloudhub: %w", err)
	}
	defer h.metrics.unregister(h.opts.Registerer)

	tlsCfg := h.opts.TLSConfig.Clone()
	tlsCfg.MinVersion = max(tlsCfg.MinVersion, tls.VersionTLS12)
	// The websocket upgrade needs HTTP/1.1; never negotiate h2.
	tlsCfg.NextProtos = []string{"http/1.1"}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.queue = workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{})
	h.mu.Lock()
	h.closing = false
	for id := range h.nodes {
		h.queue.Add(id) // work queued before a restart
	}
	h.mu.Unlock()

	srv := &http.Server{
		Handler:           h.handler(ctx),
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          klog.NewStandardLogger("INFO"),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	klog.InfoS("CloudHub serving edge nodes", "address", ln.Addr().String(), "nodeLimit", h.nodeLimit,
		"keepalive", h.keepalive, "ackTimeout", h.opts.AckTimeout, "workers", h.opts.Workers)

	var wg sync.WaitGroup
	fatal := make(chan error, 2)
	wg.Go(func() {
		if err := srv.Serve(tls.NewListener(ln, tlsCfg)); !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("serve websocket on %s: %w", ln.Addr(), err)
		}
	})
	wg.Go(func() {
		// The mailbox only moves into the node queues: it never blocks on a node or on the API server, so one slow
		// node cannot hold up the others.
		if err := h.opts.Bus.Serve(ctx, modules.CloudHub, h.downstream); err != nil {
			fatal <- err
		}
	})
	for range h.opts.Workers {
		wg.Go(func() { h.worker(ctx) })
	}
	if h.opts.Client != nil {
		wg.Go(func() { h.records.run(ctx) })
	}
	wg.Go(func() { h.watchRevocations(ctx) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-fatal:
		klog.ErrorS(err, "CloudHub failed")
	}
	cancel()
	h.shutdown(srv)
	wg.Wait()
	klog.InfoS("CloudHub stopped")
	return err
}

// shutdown stops accepting, closes every session, waits for their readers
// and then stops the workers. Hijacked connections are not tracked by
// http.Server, hence the separate session wait group.
func (h *CloudHub) shutdown(srv *http.Server) {
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	h.mu.Lock()
	h.closing = true
	var open []*session
	for _, n := range h.nodes {
		n.mu.Lock()
		if n.sess != nil {
			open = append(open, n.sess)
		}
		n.mu.Unlock()
	}
	h.mu.Unlock()
	for _, s := range open {
		s.close("cloudhub shutting down", websocket.CloseGoingAway)
	}
	h.sessions.Wait()
	h.queue.ShutDown()
}

func (h *CloudHub) worker(ctx context.Context) {
	for {
		id, shutdown := h.queue.Get()
		if shutdown {
			return
		}
		h.process(ctx, id)
		h.queue.Done(id)
	}
}
