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
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestMain(m *testing.M) {
	// klog's flush daemon is process-wide and started by klog itself.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

const waitTimeout = 20 * time.Second

// cloud stands in for EdgeHub: it records what goes to the cloud and
// answers synchronous messages, except those for a target containing "silent".
type cloud struct {
	bus *beehive.Bus
	ch  chan model.Message
}

func (c *cloud) Name() string  { return modules.EdgeHub }
func (c *cloud) Group() string { return modules.EdgeHubGroup }
func (c *cloud) Enable() bool  { return true }
func (c *cloud) Start(ctx context.Context) error {
	for {
		m, err := c.bus.Receive(ctx, modules.EdgeHub)
		if err != nil {
			return nil
		}
		if m.Header.Sync && !strings.Contains(m.Router.Resource, "silent") {
			_ = c.bus.SendResp(*model.NewRespByMessage(&m, "cloud-reply"))
		}
		select {
		case c.ch <- m:
		default:
		}
	}
}

type harness struct {
	sb    *ServiceBus
	bus   *beehive.Bus
	cloud *cloud
	stop  func()
}

func start(t *testing.T, cfg *v1alpha2.ServiceBus, opts ...Option) *harness {
	t.Helper()
	bus := beehive.New(beehive.Options{})
	sb, err := New(bus, cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{sb: sb, bus: bus, cloud: &cloud{bus: bus, ch: make(chan model.Message, 100)}}
	for _, m := range []beehive.Module{h.cloud, sb} {
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
	return h
}

func (h *harness) send(t *testing.T, msg *model.Message) {
	t.Helper()
	if err := h.bus.Send(context.Background(), modules.ServiceBus, *msg); err != nil {
		t.Fatal(err)
	}
}

// request sends a cloud request and returns the answer sent to the cloud.
func (h *harness) request(t *testing.T, msg *model.Message) HTTPResponse {
	t.Helper()
	h.send(t, msg)
	timeout := time.After(waitTimeout)
	for {
		select {
		case m := <-h.cloud.ch:
			if m.Header.ParentID != msg.Header.ID {
				continue
			}
			if m.Router.Source != modules.ServiceBus || m.Router.Group != model.GroupUser || m.Router.Operation != model.UploadOperation {
				t.Fatalf("reply route %+v, want source servicebus, group user, op upload", m.Router)
			}
			resp, ok := m.Content.(HTTPResponse)
			if !ok {
				t.Fatalf("reply content %T, want HTTPResponse", m.Content)
			}
			return resp
		case <-timeout:
			t.Fatalf("no reply to %s within %s", msg.String(), waitTimeout)
		}
	}
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func config(t *testing.T, timeout int32) *v1alpha2.ServiceBus {
	return &v1alpha2.ServiceBus{Enable: true, Server: "127.0.0.1", Port: freePort(t), Timeout: timeout}
}

// localApp is the app on the edge that the cloud calls.
func localApp(t *testing.T) (port string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-App", "echo")
		_, _ = fmt.Fprintf(w, "%s %s %s %s", r.Method, r.URL.RequestURI(), r.Header.Get("X-Test"), body)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), DefaultMaxBodySize+1))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1/elsewhere", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

func TestCloudToEdge(t *testing.T) {
	app := localApp(t)
	closedPort := strconv.Itoa(int(freePort(t)))
	h := start(t, config(t, 1))

	req := func(resource string, content any) *model.Message {
		return model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, resource, "POST").FillBody(content)
	}
	get := HTTPRequest{Method: "GET", Header: http.Header{"X-Test": {"a"}}}
	tests := []struct {
		name     string
		msg      *model.Message
		wantCode int
		wantBody string // substring
	}{
		{"port and path", req(app+":/echo?q=1", get), 200, "GET /echo?q=1 a"},
		{"path without slash", req(app+":echo", get), 200, "GET /echo a"},
		{"POST body", req(app+":/echo", HTTPRequest{Method: "POST", Body: []byte("hello")}), 200, "POST /echo  hello"},
		{"JSON content from the wire", req(app+":/echo", json.RawMessage(`{"method":"PUT","body":"aGk="}`)), 200, "PUT /echo  hi"},
		{"method in operation (old cloud)", req(app+":/echo", nil), 200, "POST /echo"},
		{"absolute loopback URL", req("http://localhost:"+app+"/echo", get), 200, "GET /echo a"},
		{"URL from the request when resource is empty", req("", HTTPRequest{Method: "GET", URL: "http://127.0.0.1:" + app + "/echo"}), 200, "GET /echo"},
		{"not allow-listed host", req("http://192.0.2.1/x", get), 403, "allow-list"},
		{"credentials in URL", req("http://u:p@127.0.0.1:"+app+"/echo", get), 400, "credentials"},
		{"not a target", req("abc", get), 400, "{port}:{path}"},
		{"port out of range", req("70000:/x", get), 400, "{port}:{path}"},
		{"ftp", req("ftp://127.0.0.1/x", get), 400, "http or https"},
		{"content not a request", req(app+":/echo", "not json"), 400, "parse http request"},
		{"bad method", req(app+":/echo", HTTPRequest{Method: "BAD METHOD"}), 400, "build request"},
		{"request body too large", req(app+":/echo", HTTPRequest{Method: "POST", Body: make([]byte, DefaultMaxBodySize+1)}), 413, "too large"},
		{"response body too large", req(app+":/big", get), 502, "too large"},
		{"app too slow", req(app+":/slow", get), 504, "deadline"},
		{"app not running", req(closedPort+":/x", get), 502, "refused"},
		{"redirect handed back", req(app+":/redirect", get), 302, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.request(t, tc.msg)
			if resp.StatusCode != tc.wantCode || !bytes.Contains(resp.Body, []byte(tc.wantBody)) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, resp.Body, tc.wantCode, tc.wantBody)
			}
			if tc.wantCode == 200 && resp.Header.Get("X-App") != "echo" {
				t.Errorf("app's headers not passed on: %v", resp.Header)
			}
			if tc.wantCode >= 400 && resp.Header.Get("Server") != serverHeader {
				t.Errorf("error response without Server: %s: %v", serverHeader, resp.Header)
			}
		})
	}
}

// The reply must keep KubeEdge's wire shape: status_code, body in base64.
func TestResponseWireFormat(t *testing.T) {
	data, err := json.Marshal(HTTPResponse{StatusCode: 200, Body: []byte("hi"), Header: http.Header{"A": {"b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"header":{"A":["b"]},"status_code":200,"body":"aGk="}`; string(data) != want {
		t.Fatalf("wire form %s, want %s", data, want)
	}
}

func TestAllowList(t *testing.T) {
	a := newAllowList()
	a.add("http://cloud.example/api")
	a.add("https://10.0.0.5:8443")
	a.add("not a url")
	tests := []struct {
		url  string
		want bool
	}{
		{"http://cloud.example/api", true},
		{"http://cloud.example/api/v1?x=1", true},
		{"http://CLOUD.example:80/api/", true},
		{"http://cloud.example/apiv1", false},
		{"http://cloud.example/", false},
		{"https://cloud.example/api", false},
		{"https://10.0.0.5:8443/anything", true},
		{"https://10.0.0.5/anything", false},
		{"not a url", true},
		{"not a url/below", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := a.permits(tc.url); got != tc.want {
			t.Errorf("permits(%q) = %v, want %v", tc.url, got, tc.want)
		}
	}
	// Loopback needs no entry; anything else does.
	for raw, wantErr := range map[string]error{
		"8080:/x":                   nil,
		"http://[::1]:8080/x":       nil,
		"http://127.0.0.2:8080/x":   nil,
		"http://10.0.0.5:8443/x":    errNotAllowed,
		"https://10.0.0.5:8443/x":   nil,
		"http://cloud.example/api2": errNotAllowed,
	} {
		if _, err := a.target(raw, ""); !errors.Is(err, wantErr) {
			t.Errorf("target(%q) error = %v, want %v", raw, err, wantErr)
		}
	}
	a.remove("https://10.0.0.5:8443")
	if _, err := a.target("https://10.0.0.5:8443/x", ""); !errors.Is(err, errNotAllowed) {
		t.Errorf("after remove, target error = %v, want %v", err, errNotAllowed)
	}
}

// A host that is not loopback becomes reachable once the cloud allow-lists it.
func TestStartAllowsTarget(t *testing.T) {
	ip := hostIP(t)
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "remote")
	}))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	base := srv.URL // http://{ip}:{port}

	h := start(t, config(t, 5))
	msg := func() *model.Message {
		return model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, base+"/x", "GET").FillBody(HTTPRequest{Method: "GET"})
	}
	if resp := h.request(t, msg()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("before start: %d %q, want 403", resp.StatusCode, resp.Body)
	}
	h.send(t, model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, base, model.StartOperation))
	if resp := h.request(t, msg()); resp.StatusCode != 200 || string(resp.Body) != "remote" {
		t.Fatalf("after start: %d %q, want 200 remote", resp.StatusCode, resp.Body)
	}
	h.send(t, model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, base, model.StopOperation))
	if resp := h.request(t, msg()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("after stop: %d %q, want 403", resp.StatusCode, resp.Body)
	}
}

func hostIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address on this host")
	return ""
}

type upstreamResult struct {
	status int
	resp   upstreamResponse
}

func post(t *testing.T, addr, method string, body []byte) (upstreamResult, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitTimeout}
	req, err := http.NewRequest(method, "http://"+addr+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Do(req)
	if err != nil {
		return upstreamResult{}, err
	}
	defer func() { _ = r.Body.Close() }()
	var res upstreamResult
	res.status = r.StatusCode
	if err := json.NewDecoder(r.Body).Decode(&res.resp); err != nil {
		t.Fatalf("decode server answer: %v", err)
	}
	return res, nil
}

func waitListening(t *testing.T, addr string, want bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on %s listening=%v, want %v", addr, err == nil, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEdgeToCloud(t *testing.T) {
	cfg := config(t, 1)
	db := filepath.Join(t.TempDir(), "edgecore.db")
	h := start(t, cfg, WithDatabase(db))
	addr := h.sb.Addr()
	// No allow-list, no server.
	waitListening(t, addr, false)

	const target = "http://cloud.example/api"
	h.send(t, model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, target, model.StartOperation))
	waitListening(t, addr, true)

	body := []byte(`{"method":"POST","targetURL":"http://cloud.example/api/v1","payload":{"a":1}}`)
	tests := []struct {
		name       string
		method     string
		body       []byte
		wantStatus int
		wantBody   string
	}{
		{"allowed", "POST", body, 200, "cloud-reply"},
		{"not allowed", "POST", []byte(`{"targetURL":"http://evil.example/x"}`), 403, ""},
		{"not JSON", "POST", []byte("{"), 400, ""},
		{"GET", "GET", nil, 405, ""},
		{"too large", "POST", make([]byte, DefaultMaxBodySize+1), 413, ""},
		{"cloud does not answer", "POST", []byte(`{"targetURL":"http://cloud.example/api/silent"}`), 504, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := post(t, addr, tc.method, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if res.status != tc.wantStatus || res.resp.Code != tc.wantStatus || res.resp.Body != tc.wantBody {
				t.Fatalf("got %d %+v, want %d with body %q", res.status, res.resp, tc.wantStatus, tc.wantBody)
			}
		})
	}
	// What went to the cloud for the allowed request.
	var up model.Message
	for up.Router.Resource != "http://cloud.example/api/v1" {
		up = <-h.cloud.ch
	}
	if up.Router.Source != modules.ServiceBus || up.Router.Operation != model.UploadOperation || up.Router.Group != model.GroupUser {
		t.Errorf("upstream route %+v", up.Router)
	}
	if got, _ := up.GetContentData(); !bytes.Equal(got, body) {
		t.Errorf("upstream content %q, want the posted body", got)
	}

	// The allow-list survives a restart, and so does the server.
	h.stop()
	waitListening(t, addr, false)
	h2 := start(t, cfg, WithDatabase(db))
	waitListening(t, addr, true)
	if res, err := post(t, addr, "POST", body); err != nil || res.status != 200 {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
	h2.send(t, model.NewMessage("").BuildRouter("router_servicebus", model.GroupUser, target, model.StopOperation))
	waitListening(t, addr, false)
}

func TestNewValidation(t *testing.T) {
	bus := beehive.New(beehive.Options{})
	tests := []struct {
		name    string
		cfg     *v1alpha2.ServiceBus
		wantErr string
	}{
		{"defaults", &v1alpha2.ServiceBus{Enable: true, Server: "127.0.0.1", Port: 9060, Timeout: 60}, ""},
		{"disabled", &v1alpha2.ServiceBus{}, ""},
		{"public address", &v1alpha2.ServiceBus{Enable: true, Server: "0.0.0.0", Port: 9060}, "loopback"},
		{"bad port", &v1alpha2.ServiceBus{Enable: true, Server: "localhost", Port: 0}, "port"},
		{"nil", nil, "nil config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(bus, tc.cfg)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("New error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
