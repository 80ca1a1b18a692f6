package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/beego/beego/v2/core/logs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tether-edge/tether/examples/counter-demo/web-controller-app/internal/device"
	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/apis/scheme"
)

var key = types.NamespacedName{Namespace: "default", Name: "counter"}

func counterDevice(desired, reported string) *v1alpha2.Device {
	return &v1alpha2.Device{
		ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
		Spec:       v1alpha2.DeviceSpec{DeviceModelRef: &corev1.LocalObjectReference{Name: "counter-model"}},
		Status: v1alpha2.DeviceStatus{Twins: []v1alpha2.Twin{{PropertyName: "status",
			Desired:  v1alpha2.TwinProperty{Value: desired, Metadata: map[string]string{"type": "string"}},
			Reported: v1alpha2.TwinProperty{Value: reported, Metadata: map[string]string{"type": "string"}},
		}}},
	}
}

// setup serves the app over a fake API holding objs.
func setup(t *testing.T, objs ...client.Object) (*httptest.Server, client.Client) {
	t.Helper()
	s, err := scheme.New()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	tw, err := device.New(c, key.Namespace, key.Name, "status")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(tw, key.String()))
	t.Cleanup(srv.Close)
	return srv, c
}

type response struct {
	code        int
	contentType string
	body        string
	header      http.Header
}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: res.StatusCode, contentType: res.Header.Get("Content-Type"), body: string(b), header: res.Header}
}

func getTwin(t *testing.T, c client.Client) v1alpha2.Twin {
	t.Helper()
	d := &v1alpha2.Device{}
	if err := c.Get(context.Background(), key, d); err != nil {
		t.Fatal(err)
	}
	return d.Status.Twins[0]
}

func TestControl(t *testing.T) {
	for _, tc := range []struct {
		name         string
		method, path string
		device       *v1alpha2.Device
		wantCode     int
		wantBody     string // exact JSON, or "" to check wantErr
		wantErr      string // substring of ResultString.error
		wantDesired  string // after the call; "" = no device to check
		wantReported string
	}{
		{name: "ON by POST", method: "POST", path: "/track/control/ON", device: counterDevice("OFF", "0"),
			wantCode: 200, wantBody: `{"Result":1,"ResultString":{},"ResultObject":null}`, wantDesired: "ON", wantReported: "0"},
		{name: "ON by GET, lower case", method: "GET", path: "/track/control/on", device: counterDevice("OFF", "0"),
			wantCode: 200, wantBody: `{"Result":1,"ResultString":{},"ResultObject":null}`, wantDesired: "ON", wantReported: "0"},
		{name: "OFF keeps the count", method: "POST", path: "/track/control/OFF", device: counterDevice("ON", "17"),
			wantCode: 200, wantBody: `{"Result":2,"ResultString":{},"ResultObject":null}`, wantDesired: "OFF", wantReported: "17"},
		{name: "STATUS", method: "POST", path: "/track/control/STATUS", device: counterDevice("ON", "42"),
			wantCode: 200, wantBody: `{"Result":3,"ResultString":{"status":"ON","value":"42"},"ResultObject":null}`,
			wantDesired: "ON", wantReported: "42"},
		{name: "STATUS by GET", method: "GET", path: "/track/control/STATUS", device: counterDevice("OFF", "0"),
			wantCode: 200, wantBody: `{"Result":3,"ResultString":{"status":"OFF","value":"0"},"ResultObject":null}`},
		{name: "bad id", method: "POST", path: "/track/control/PLAY", device: counterDevice("OFF", "0"),
			wantCode: 400, wantErr: `unknown trackId "PLAY": want ON, OFF or STATUS`, wantDesired: "OFF", wantReported: "0"},
		{name: "empty id", method: "GET", path: "/track/control/", device: counterDevice("OFF", "0"),
			wantCode: 400, wantErr: `unknown trackId ""`},
		{name: "nested id", method: "GET", path: "/track/control/ON/x", device: counterDevice("OFF", "0"),
			wantCode: 400, wantErr: `unknown trackId "ON/x"`, wantDesired: "OFF", wantReported: "0"},
		// beego's :splat would read "ON" here; the id is taken from the path.
		{name: "trailing slash", method: "POST", path: "/track/control/ON/", device: counterDevice("OFF", "0"),
			wantCode: 400, wantErr: `unknown trackId "ON/"`, wantDesired: "OFF", wantReported: "0"},
		{name: "escaped slash", method: "GET", path: "/track/control/a%2Fb", device: counterDevice("OFF", "0"),
			wantCode: 400, wantErr: `unknown trackId "a/b"`},
		{name: "escaped letters", method: "POST", path: "/track/control/O%4E", device: counterDevice("OFF", "0"),
			wantCode: 200, wantBody: `{"Result":1,"ResultString":{},"ResultObject":null}`, wantDesired: "ON", wantReported: "0"},
		{name: "ON without device", method: "POST", path: "/track/control/ON",
			wantCode: 404, wantErr: "device not found: default/counter"},
		{name: "STATUS without device", method: "GET", path: "/track/control/STATUS",
			wantCode: 404, wantErr: "device not found: default/counter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			if tc.device != nil {
				objs = append(objs, tc.device)
			}
			srv, c := setup(t, objs...)
			res := do(t, tc.method, srv.URL+tc.path)
			if res.code != tc.wantCode {
				t.Errorf("code = %d, want %d (body %s)", res.code, tc.wantCode, res.body)
			}
			if !strings.HasPrefix(res.contentType, "application/json") {
				t.Errorf("Content-Type = %q", res.contentType)
			}
			if tc.wantBody != "" {
				if got := strings.TrimSpace(res.body); got != tc.wantBody {
					t.Errorf("body = %s, want %s", got, tc.wantBody)
				}
			} else {
				var r struct {
					Result       int
					ResultString map[string]string
					ResultObject any
				}
				if err := json.Unmarshal([]byte(res.body), &r); err != nil {
					t.Fatalf("body %q: %v", res.body, err)
				}
				if r.Result != ResultError || !strings.Contains(r.ResultString["error"], tc.wantErr) || r.ResultObject != nil {
					t.Errorf("body = %s, want Result 0 and an error containing %q", res.body, tc.wantErr)
				}
			}
			if tc.wantDesired != "" {
				tw := getTwin(t, c)
				if tw.Desired.Value != tc.wantDesired || tw.Reported.Value != tc.wantReported {
					t.Errorf("twin = %+v, want desired %s, reported %s", tw, tc.wantDesired, tc.wantReported)
				}
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	srv, c := setup(t, counterDevice("OFF", "0"))
	for _, m := range []string{"PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"} {
		res := do(t, m, srv.URL+"/track/control/ON")
		if res.code != http.StatusMethodNotAllowed || res.header.Get("Allow") != "GET, HEAD, POST" {
			t.Errorf("%s: code = %d, Allow %q; want 405, GET, HEAD, POST", m, res.code, res.header.Get("Allow"))
		}
	}
	// beego refuses methods it does not know before routing, with a bare 405 (net/http's mux said 405 here
	// too, 404 on unknown paths).
	if res := do(t, "FOO", srv.URL+"/track/control/ON"); res.code != http.StatusMethodNotAllowed {
		t.Errorf("FOO: code = %d, want 405", res.code)
	}
	if tw := getTwin(t, c); tw.Desired.Value != "OFF" {
		t.Errorf("desired = %q after refused requests, want OFF", tw.Desired.Value)
	}
}

// TestRouting pins the edges where beego's router is more lenient than net/http's mux, on which the app was
// first written: trailing slashes, unclean paths, HEAD, 404 and 405.
func TestRouting(t *testing.T) {
	srv, c := setup(t, counterDevice("OFF", "0"))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		method, path string
		code         int
		location     string // for 307
		allow        string // for 405
		contentType  string // prefix, if set
		body         string // substring, if set
	}{
		{method: "HEAD", path: "/", code: 200, contentType: "text/html"},
		{method: "HEAD", path: "/healthz", code: 200, contentType: "text/plain"},
		{method: "HEAD", path: "/static/app.js", code: 200, contentType: "text/javascript"},
		{method: "HEAD", path: "/track/control/STATUS", code: 200, contentType: "application/json"},
		{method: "GET", path: "/healthz/", code: 404, body: "404 page not found"},
		{method: "GET", path: "/HEALTHZ", code: 404},
		{method: "GET", path: "/Static/app.js", code: 404},
		{method: "GET", path: "/index.html", code: 404},
		{method: "GET", path: "/track", code: 404},
		{method: "GET", path: "/track/", code: 404},
		{method: "GET", path: "/static/app.js/", code: 404},
		{method: "PUT", path: "/nope", code: 404, body: "404 page not found"},
		{method: "PUT", path: "/healthz/", code: 404},
		{method: "GET", path: "/favicon.ico", code: 404},
		{method: "GET", path: "/robots.txt", code: 404},
		{method: "GET", path: "//", code: 307, location: "/"},
		{method: "GET", path: "/static", code: 307, location: "/static/"},
		{method: "GET", path: "/static//app.js", code: 307, location: "/static/app.js"},
		{method: "GET", path: "/static/./app.js", code: 307, location: "/static/app.js"},
		{method: "GET", path: "/static/../healthz?x=1", code: 307, location: "/healthz?x=1"},
		{method: "GET", path: "/track/control", code: 307, location: "/track/control/"},
		{method: "POST", path: "/track/control?x=1", code: 307, location: "/track/control/?x=1"},
		{method: "POST", path: "/track/control//ON", code: 307, location: "/track/control/ON"},
		{method: "POST", path: "/", code: 405, allow: "GET, HEAD", body: "Method Not Allowed"},
		{method: "DELETE", path: "/healthz", code: 405, allow: "GET, HEAD"},
		{method: "POST", path: "/static/app.js", code: 405, allow: "GET, HEAD"},
		{method: "POST", path: "/static", code: 405, allow: "GET, HEAD"},
		{method: "PUT", path: "/track/control", code: 405, allow: "GET, HEAD, POST"},
		{method: "PATCH", path: "/track/control/", code: 405, allow: "GET, HEAD, POST"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.code || res.Header.Get("Location") != tc.location || res.Header.Get("Allow") != tc.allow {
				t.Errorf("= %d, Location %q, Allow %q; want %d, %q, %q",
					res.StatusCode, res.Header.Get("Location"), res.Header.Get("Allow"), tc.code, tc.location, tc.allow)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type = %q, want %s...", ct, tc.contentType)
			}
			if !strings.Contains(string(b), tc.body) {
				t.Errorf("body = %q, want it to contain %q", b, tc.body)
			}
			if tc.method == "HEAD" && (len(b) != 0 || res.ContentLength <= 0) {
				t.Errorf("HEAD: body %d bytes, Content-Length %d; want none and the length of GET's", len(b), res.ContentLength)
			}
			// Every answer, errors and redirects too, carries the security headers.
			if res.Header.Get("Content-Security-Policy") != contentSecurityPolicy || res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("security headers missing: %v", res.Header)
			}
		})
	}
	if tw := getTwin(t, c); tw.Desired.Value != "OFF" {
		t.Errorf("desired = %q, want OFF: a redirect or refusal changed it", tw.Desired.Value)
	}
}

// TestNothingFromWorkingDirectory: beego serves /static/* (and /favicon.ico, /robots.txt) from ./static and ./
// unless told otherwise; the app serves its embedded files only.
func TestNothingFromWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"static/app.js": "from disk", "static/disk.js": "from disk", "favicon.ico": "from disk", "robots.txt": "from disk",
		"static/favicon.ico": "from disk", "static/static/x.js": "from disk",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	srv, _ := setup(t)
	if res := do(t, "GET", srv.URL+"/static/app.js"); res.code != 200 || !strings.Contains(res.body, "track/control/") {
		t.Errorf("/static/app.js = %d %.40q, want the embedded script", res.code, res.body)
	}
	for _, p := range []string{"/static/disk.js", "/favicon.ico", "/robots.txt", "/favicon.ico/", "/abcdef/static/x.js"} {
		if res := do(t, "GET", srv.URL+p); res.code != 404 || strings.Contains(res.body, "from disk") {
			t.Errorf("%s = %d %q, want 404", p, res.code, res.body)
		}
	}
}

// beegoLog records what beego writes on its package-level logger.
type beegoLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *beegoLog) Init(string) error              { return nil }
func (l *beegoLog) Destroy()                       {}
func (l *beegoLog) Flush()                         {}
func (l *beegoLog) SetFormatter(logs.LogFormatter) {}
func (l *beegoLog) WriteMsg(m *logs.LogMsg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m.Msg)
	return nil
}

func (l *beegoLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}

var (
	recordBeegoOnce sync.Once
	beegoLogged     = &beegoLog{}
)

// recordBeego adds beegoLogged to beego's logger, once per process: beego's registry of adapters is global.
func recordBeego(t *testing.T) *beegoLog {
	t.Helper()
	recordBeegoOnce.Do(func() {
		logs.Register("server-test", func() logs.Logger { return beegoLogged })
		if err := logs.GetBeeLogger().SetLogger("server-test"); err != nil {
			t.Fatal(err)
		}
	})
	logs.Error("probe")
	if got := beegoLogged.take(); len(got) != 1 {
		t.Fatalf("beego's logger is not recorded: %q", got)
	}
	return beegoLogged
}

// TestBodiesAndQueriesIgnored: the API reads no form. beego would parse one for every POST before routing and
// answer a malformed one with 500 (and a big multipart one by spooling it to temporary files).
func TestBodiesAndQueriesIgnored(t *testing.T) {
	rec := recordBeego(t)
	srv, c := setup(t, counterDevice("OFF", "0"))
	for _, tc := range []struct {
		name, query, contentType, body string
	}{
		{"bad query", "?%zz;a=1", "", ""},
		{"bad multipart", "", "multipart/form-data; boundary=x", "--y\r\nnot multipart"},
		{"multipart without boundary", "", "multipart/form-data", "x"},
		{"big form", "", "application/x-www-form-urlencoded", "a=" + strings.Repeat("b", 3<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", srv.URL+"/track/control/ON"+tc.query, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("= %d %s, want 200", res.StatusCode, b)
			}
		})
	}
	if tw := getTwin(t, c); tw.Desired.Value != "ON" {
		t.Errorf("desired = %q, want ON", tw.Desired.Value)
	}
	// Nor did any request above, or these, make beego write on its own logger.
	for _, m := range []string{"GET", "FOO", "PUT"} {
		do(t, m, srv.URL+"/nope")
	}
	if got := rec.take(); len(got) > 0 {
		t.Errorf("beego logged %q", got)
	}
}

// TestSequence walks the tutorial: ON, the edge reports counts, STATUS, OFF, the instance is re-applied,
// ON again (the original ignored it: kubeedge/examples#92).
func TestSequence(t *testing.T) {
	srv, c := setup(t, counterDevice("OFF", "0"))
	ctx := context.Background()
	report := func(v string) {
		d := &v1alpha2.Device{}
		if err := c.Get(ctx, key, d); err != nil {
			t.Fatal(err)
		}
		d.Status.Twins[0].Reported.Value = v
		if err := c.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	status := func() string {
		return strings.TrimSpace(do(t, "GET", srv.URL+"/track/control/STATUS").body)
	}
	do(t, "POST", srv.URL+"/track/control/ON")
	report("3")
	if got, want := status(), `{"Result":3,"ResultString":{"status":"ON","value":"3"},"ResultObject":null}`; got != want {
		t.Fatalf("STATUS = %s, want %s", got, want)
	}
	do(t, "POST", srv.URL+"/track/control/OFF")
	report("0")
	do(t, "POST", srv.URL+"/track/control/ON")
	// kubectl apply -f kubeedge-counter-instance.yaml: desired back to OFF.
	d := &v1alpha2.Device{}
	if err := c.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	d.Status = counterDevice("OFF", "0").Status
	if err := c.Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got, want := status(), `{"Result":3,"ResultString":{"status":"OFF","value":"0"},"ResultObject":null}`; got != want {
		t.Fatalf("STATUS after re-apply = %s, want %s", got, want)
	}
	if res := do(t, "POST", srv.URL+"/track/control/ON"); res.code != 200 {
		t.Fatalf("ON after re-apply: %d %s", res.code, res.body)
	}
	if tw := getTwin(t, c); tw.Desired.Value != "ON" {
		t.Fatalf("desired after re-apply and ON = %q, want ON", tw.Desired.Value)
	}
}

var (
	srcHrefRE = regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']([^"']*)["']`)
	cssURLRE  = regexp.MustCompile(`(?i)url\(|@import`)
)

func TestPage(t *testing.T) {
	srv, _ := setup(t, counterDevice("OFF", "0"))
	res := do(t, "GET", srv.URL+"/")
	if res.code != 200 || res.contentType != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q", res.code, res.contentType)
	}
	page := res.body
	for _, want := range []string{
		`<meta charset="utf-8">`,
		`<select id="track"`,
		`<option value="ON" selected>`, `<option value="OFF">`, `<option value="STATUS">`,
		`id="track-play-button"`, `>Execute</button>`,
		`id="stations-view-json"`, `id="counter-value"`, `id="counter-state"`,
		`<code id="device-name">default/counter</code>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	refs := srcHrefRE.FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("page references %d assets, want the script and the stylesheet", len(refs))
	}
	for _, m := range refs {
		ref := m[1]
		if strings.Contains(ref, "//") || strings.Contains(ref, ":") {
			t.Errorf("page references a non-local asset %q", ref)
			continue
		}
		// Every reference resolves on this server.
		if r := do(t, "GET", srv.URL+"/"+ref); r.code != 200 {
			t.Errorf("asset %s: %d", ref, r.code)
		}
	}
	if csp := res.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") ||
		!strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}

func TestAssets(t *testing.T) {
	srv, _ := setup(t)
	for _, tc := range []struct {
		path, contentType string
		code              int
		contains          []string
	}{
		{"/static/app.js", "text/javascript; charset=utf-8", 200,
			[]string{"track/control/", "'STATUS'", "setTimeout(poll, POLL_MS)", "POLL_MS = 1000", "fetch("}},
		{"/static/app.css", "text/css; charset=utf-8", 200, nil},
		{"/static/", "", 404, nil},
		{"/static/missing.js", "", 404, nil},
		{"/healthz", "text/plain; charset=utf-8", 200, []string{"ok"}},
		{"/nope", "", 404, nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := do(t, "GET", srv.URL+tc.path)
			if res.code != tc.code || (tc.contentType != "" && res.contentType != tc.contentType) {
				t.Fatalf("GET %s = %d %q, want %d %q", tc.path, res.code, res.contentType, tc.code, tc.contentType)
			}
			for _, want := range tc.contains {
				if !strings.Contains(res.body, want) {
					t.Errorf("%s lacks %q", tc.path, want)
				}
			}
			// No asset pulls anything from elsewhere.
			if strings.Contains(res.body, "http://") || strings.Contains(res.body, "https://") || cssURLRE.MatchString(res.body) {
				t.Errorf("%s references a remote resource", tc.path)
			}
		})
	}
}

func TestCrossSitePostRefused(t *testing.T) {
	srv, c := setup(t, counterDevice("OFF", "0"))
	for _, tc := range []struct {
		site string
		want int
	}{{"cross-site", http.StatusForbidden}, {"same-origin", http.StatusOK}} {
		req, err := http.NewRequest("POST", srv.URL+"/track/control/ON", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Sec-Fetch-Site", tc.site)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("POST with Sec-Fetch-Site %s = %d, want %d", tc.site, res.StatusCode, tc.want)
		}
		if tc.want == http.StatusForbidden && getTwin(t, c).Desired.Value != "OFF" {
			t.Errorf("refused request changed desired")
		}
	}
}
