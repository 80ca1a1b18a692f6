// Package servicebus is edgecore's HTTP bridge (module "servicebus", group
// "bus"), wire-compatible with KubeEdge's.
//
// Cloud to edge: a request from the cloud router names a local app as
// "{port}:{path}" in its resource and carries an HTTPRequest as content;
// the answer goes back to the cloud as an HTTPResponse whose parent is the
// request. Only loopback targets are called, and others the cloud
// allow-listed with the "start" operation.
//
// Edge to cloud: while the allow-list is not empty, a plain HTTP server on
// serviceBus.server:port (loopback only) accepts POSTs of
// {"method","targetURL","payload"} from local apps for allow-listed
// targets, forwards them to the cloud and answers {"code","msg","body"}.
package servicebus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/sqlitedb"
)

const (
	// DefaultMaxBodySize caps request and response bodies in both
	// directions; everything crosses the cloud link in one message.
	DefaultMaxBodySize = 1 << 20
	// maxConcurrent bounds the local calls in flight; more wait in the mailbox.
	maxConcurrent = 8
	// serverHeader marks responses ServiceBus made up itself, as KubeEdge does.
	serverHeader   = "kubeedge-edgecore"
	defaultTimeout = 60 * time.Second
)

var (
	errNotAllowed = errors.New("not on the allow-list; add it with a servicebus rule in the cloud")
	errTooLarge   = errors.New("body too large")
)

// HTTPRequest is the content of a cloud-to-edge request. Body is base64 in
// JSON, as Go encodes []byte.
type HTTPRequest struct {
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
	Method string      `json:"method"`
	URL    string      `json:"url"`
}

// HTTPResponse is the content of the answer to an HTTPRequest.
type HTTPResponse struct {
	Header     http.Header `json:"header"`
	StatusCode int         `json:"status_code"`
	Body       []byte      `json:"body"`
}

// ServiceBus is the "servicebus" module.
type ServiceBus struct {
	bus     *beehive.Bus
	enabled bool
	addr    string
	timeout time.Duration
	maxBody int64
	dbPath  string
	client  *http.Client
	allow   *allowList
}

// Option changes a ServiceBus.
type Option func(*ServiceBus)

// WithDatabase keeps the allow-list in table target_urls of edgecore's
// database (database.dataSource), so it survives restarts.
func WithDatabase(path string) Option {
	return func(sb *ServiceBus) { sb.dbPath = path }
}

// WithMaxBodySize changes DefaultMaxBodySize.
func WithMaxBodySize(n int64) Option {
	return func(sb *ServiceBus) { sb.maxBody = n }
}

// New returns the service bus module. cfg.Timeout (seconds) bounds a call
// to a local app and a wait for the cloud's answer.
func New(bus *beehive.Bus, cfg *v1alpha2.ServiceBus, opts ...Option) (*ServiceBus, error) {
	if bus == nil {
		return nil, errors.New("new servicebus: nil bus")
	}
	if cfg == nil {
		return nil, errors.New("new servicebus: nil config")
	}
	sb := &ServiceBus{
		bus:     bus,
		enabled: cfg.Enable,
		addr:    net.JoinHostPort(cfg.Server, strconv.Itoa(int(cfg.Port))),
		timeout: time.Duration(cfg.Timeout) * time.Second,
		maxBody: DefaultMaxBodySize,
		allow:   newAllowList(),
	}
	for _, o := range opts {
		o(sb)
	}
	sb.client = &http.Client{
		Transport: &http.Transport{
			// Local apps are reached directly, never through a proxy from
			// the environment.
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConnsPerHost: maxConcurrent,
			IdleConnTimeout:     30 * time.Second,
		},
		// A redirect could lead off the allow-list: hand it to the cloud
		// instead of following it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if !sb.enabled {
		return sb, nil
	}
	if sb.timeout <= 0 {
		sb.timeout = defaultTimeout
	}
	if sb.maxBody <= 0 {
		return nil, fmt.Errorf("new servicebus: max body size %d: must be positive", sb.maxBody)
	}
	// The server has no authentication: anyone who reaches it speaks to the
	// cloud as this node.
	if !isLoopback(cfg.Server) {
		return nil, fmt.Errorf("new servicebus: server %q: must be a loopback address", cfg.Server)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("new servicebus: port %d: must be 1-65535", cfg.Port)
	}
	return sb, nil
}

// Name returns "servicebus".
func (sb *ServiceBus) Name() string { return modules.ServiceBus }

// Group returns "bus".
func (sb *ServiceBus) Group() string { return modules.BusGroup }

// Enable reports modules.serviceBus.enable.
func (sb *ServiceBus) Enable() bool { return sb.enabled }

// Addr is the edge-to-cloud server's address.
func (sb *ServiceBus) Addr() string { return sb.addr }

// Start runs the module until ctx ends.
func (sb *ServiceBus) Start(ctx context.Context) error {
	store, err := sqlitedb.OpenStringSet(ctx, sb.dbPath, "target_urls", "url", "target url")
	if err != nil {
		return fmt.Errorf("start servicebus: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			klog.ErrorS(err, "Closing servicebus database")
		}
	}()
	saved, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("start servicebus: %w", err)
	}
	for _, u := range saved {
		sb.allow.add(u)
	}

	srv := &localServer{addr: sb.addr, handler: sb.upstreamHandler()}
	defer srv.stop()
	if sb.allow.len() > 0 {
		srv.start(ctx)
	}
	var wg sync.WaitGroup
	defer sb.client.CloseIdleConnections()
	defer wg.Wait()
	sem := make(chan struct{}, maxConcurrent)
	klog.InfoS("Service bus started", "server", sb.addr, "allowList", sb.allow.list())

	return sb.bus.Serve(ctx, modules.ServiceBus, func(msg model.Message) {
		res := msg.GetResource()
		switch msg.GetOperation() {
		case model.StartOperation:
			if err := checkEntry(res); err != nil {
				klog.InfoS("Ignoring bad allow-list entry", "msg", msg.String(), "err", err)
				return
			}
			if err := store.Add(ctx, res); err != nil {
				klog.ErrorS(err, "Allow-listing only until restart")
			}
			if sb.allow.add(res) {
				klog.InfoS("Allow-listed target", "url", res)
			}
			srv.start(ctx)
		case model.StopOperation:
			if err := store.Remove(ctx, res); err != nil {
				klog.ErrorS(err, "Cannot remove target from the database")
			}
			sb.allow.remove(res)
			klog.InfoS("Removed target from allow-list", "url", res)
			if sb.allow.len() == 0 {
				srv.stop()
			}
		default:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return // the next receive ends Serve
			}
			wg.Go(func() {
				defer func() { <-sem }()
				sb.serve(ctx, &msg)
			})
		}
	})
}

// serve calls the local app for one cloud request and sends the answer,
// or an error response, back to the cloud.
func (sb *ServiceBus) serve(ctx context.Context, msg *model.Message) {
	resp := sb.call(ctx, msg)
	if ctx.Err() != nil {
		return
	}
	reply := model.NewMessage(msg.GetID()).
		BuildRouter(modules.ServiceBus, model.GroupUser, msg.GetResource(), model.UploadOperation).
		FillBody(resp)
	if err := sb.bus.SendToGroup(ctx, modules.EdgeHubGroup, *reply); err != nil && ctx.Err() == nil {
		klog.ErrorS(err, "Cannot send service bus response to the cloud", "request", msg.String())
	}
}

func (sb *ServiceBus) call(ctx context.Context, msg *model.Message) (resp HTTPResponse) {
	defer func() {
		// One malformed request must not stop the module for good.
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered panic while serving request", "msg", msg.String(), "panic", r)
			resp = errorResponse(http.StatusInternalServerError, "internal error")
		}
	}()
	var req HTTPRequest
	if msg.Content != nil {
		if err := msg.UnmarshalContent(&req); err != nil {
			return sb.fail(msg, http.StatusBadRequest, fmt.Errorf("parse http request: %w", err))
		}
	}
	target, err := sb.allow.target(msg.GetResource(), req.URL)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, errNotAllowed) {
			code = http.StatusForbidden
		}
		return sb.fail(msg, code, err)
	}
	if int64(len(req.Body)) > sb.maxBody {
		return sb.fail(msg, http.StatusRequestEntityTooLarge,
			fmt.Errorf("request body of %d bytes: %w (limit %d)", len(req.Body), errTooLarge, sb.maxBody))
	}
	method := strings.ToUpper(req.Method)
	if method == "" {
		// KubeEdge before v1.12 put the method in the operation.
		method = strings.ToUpper(msg.GetOperation())
	}
	ctx, cancel := context.WithTimeout(ctx, sb.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, method, target.String(), bytes.NewReader(req.Body))
	if err != nil {
		return sb.fail(msg, http.StatusBadRequest, fmt.Errorf("build request: %w", err))
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	hresp, err := sb.client.Do(hreq)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		return sb.fail(msg, code, fmt.Errorf("call %s %s: %w", method, target.Redacted(), err))
	}
	defer func() { _ = hresp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, sb.maxBody+1))
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return sb.fail(msg, http.StatusGatewayTimeout, fmt.Errorf("read response of %s: %w", target.Redacted(), err))
	case err != nil:
		return sb.fail(msg, http.StatusBadGateway, fmt.Errorf("read response of %s: %w", target.Redacted(), err))
	case int64(len(body)) > sb.maxBody:
		return sb.fail(msg, http.StatusBadGateway,
			fmt.Errorf("response of %s: %w (limit %d)", target.Redacted(), errTooLarge, sb.maxBody))
	}
	return HTTPResponse{Header: hresp.Header, StatusCode: hresp.StatusCode, Body: body}
}

func (sb *ServiceBus) fail(msg *model.Message, code int, err error) HTTPResponse {
	klog.InfoS("Service bus request failed", "msg", msg.String(), "code", code, "err", err)
	return errorResponse(code, err.Error())
}

func errorResponse(code int, text string) HTTPResponse {
	return HTTPResponse{Header: http.Header{"Server": {serverHeader}}, StatusCode: code, Body: []byte(text)}
}

// upstreamRequest is what a local app posts to reach the cloud.
type upstreamRequest struct {
	Method    string          `json:"method"`
	TargetURL string          `json:"targetURL"`
	Payload   json.RawMessage `json:"payload"`
}

// upstreamResponse is the server's answer; body is the cloud's reply.
type upstreamResponse struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Body string `json:"body"`
}

func (sb *ServiceBus) upstreamHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeUpstream(w, http.StatusMethodNotAllowed, "use POST", "")
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, sb.maxBody))
		if err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				writeUpstream(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", sb.maxBody), "")
				return
			}
			writeUpstream(w, http.StatusBadRequest, "cannot read body: "+err.Error(), "")
			return
		}
		var req upstreamRequest
		if err := json.Unmarshal(data, &req); err != nil {
			writeUpstream(w, http.StatusBadRequest, "invalid params: "+err.Error(), "")
			return
		}
		if !sb.allow.permits(req.TargetURL) {
			writeUpstream(w, http.StatusForbidden, fmt.Sprintf("url %q is %v", req.TargetURL, errNotAllowed), "")
			return
		}
		// The whole body goes to the cloud, as KubeEdge sends it.
		msg := model.NewMessage("").
			BuildRouter(modules.ServiceBus, model.GroupUser, req.TargetURL, model.UploadOperation).
			FillBody(data)
		resp, err := sb.bus.SendSync(r.Context(), modules.EdgeHub, *msg, sb.timeout)
		if err != nil {
			code := http.StatusBadGateway
			if errors.Is(err, beehive.ErrTimeout) {
				code = http.StatusGatewayTimeout
			}
			writeUpstream(w, code, err.Error(), "")
			return
		}
		body, err := resp.GetContentData()
		if err != nil {
			writeUpstream(w, http.StatusBadGateway, err.Error(), "")
			return
		}
		writeUpstream(w, http.StatusOK, "receive response from cloud successfully", string(body))
	})
}

func writeUpstream(w http.ResponseWriter, code int, text, body string) {
	data, err := json.Marshal(upstreamResponse{Code: code, Msg: text, Body: body})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Server", serverHeader)
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

// localServer is the edge-to-cloud HTTP server; it runs only while the
// allow-list has entries. Only the module's goroutine calls start and stop.
type localServer struct {
	addr    string
	handler http.Handler

	srv    *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *localServer) start(ctx context.Context) {
	if l.srv != nil {
		return
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		// The next "start" from the cloud, or a restart, tries again.
		klog.ErrorS(err, "Cannot start service bus server", "address", l.addr)
		return
	}
	// Cancelled on stop, so that requests waiting for the cloud end at once.
	sctx, cancel := context.WithCancel(ctx)
	l.srv = &http.Server{
		Handler:           l.handler,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return sctx },
	}
	l.cancel = cancel
	l.done = make(chan struct{})
	srv, done := l.srv, l.done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Service bus server failed", "address", ln.Addr())
		}
	}()
	klog.InfoS("Service bus server listening", "address", ln.Addr())
}

func (l *localServer) stop() {
	if l.srv == nil {
		return
	}
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		_ = l.srv.Close()
	}
	<-l.done
	l.srv, l.cancel, l.done = nil, nil, nil
	klog.InfoS("Service bus server stopped", "address", l.addr)
}
