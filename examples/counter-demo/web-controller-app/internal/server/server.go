// Package server is the counter demo's HTTP interface, on beego v2: the page (embedded, no CDN) and the
// tutorial's /track/control/{ON|OFF|STATUS} API.
//
// New returns a beego router (web.ControllerRegister) of its own, wrapped in plain net/http middleware; the
// caller serves it with its own http.Server. The app never calls web.Run and leaves web.BeeApp unused, and
// the one beego global it sets (see init) is about files on disk. The routes answer as net/http's ServeMux
// did when the app was written on it: beego's router matches leniently ("/healthz/" as "/healthz", "//" as
// "/", no 405 for a known path), so the wrappers below restore exact paths, 405 with Allow and the clean-path
// redirects.
//
// Importing beego has effects this package cannot avoid: at init it reads ./conf/app.conf and, when there is
// none, prints one line about it to stderr before main runs (beego/bee#838). An empty file silences it; one
// with settings would configure beego's logger and access log, and a malformed one panics.
package server

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/beego/beego/v2/server/web"
	beecontext "github.com/beego/beego/v2/server/web/context"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/examples/counter-demo/web-controller-app/internal/device"
)

// Result codes of the tutorial's reply envelope.
const (
	ResultError  = 0
	ResultOn     = 1
	ResultOff    = 2
	ResultStatus = 3
)

// Reply is the tutorial's AjaxResponse: {"Result":n,"ResultString":{...},"ResultObject":null}. Errors use
// Result 0 and carry {"error": message} in ResultString.
type Reply struct {
	Result       int `json:"Result"`
	ResultString any `json:"ResultString"`
	ResultObject any `json:"ResultObject"`
}

// Twin is what the handlers need of the Device twin.
type Twin interface {
	Status(ctx context.Context) (device.Status, error)
	SetDesired(ctx context.Context, value string) error
}

//go:embed assets
var assets embed.FS

// apiTimeout bounds the API server calls of one request.
const apiTimeout = 10 * time.Second

// contentSecurityPolicy lets the page load nothing but its own files.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// indexPage is the page; its one parameter is the device's name as shown to the user.
var indexPage = template.Must(template.ParseFS(assets, "assets/index.html"))

var (
	readMethods    = []string{http.MethodGet, http.MethodHead}
	controlMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost}
)

func init() {
	// beego forces this global: before routing, its router looks every GET and HEAD up in the directories of
	// the package-level BConfig.WebConfig.StaticDir ({"/static": "static"} by default, relative to the working
	// directory) and serves whatever it finds there, whatever the server's own Config says. The assets are
	// embedded, so no directory may shadow them.
	web.BConfig.WebConfig.StaticDir = map[string]string{}
}

// config is beego's configuration for this app, built here rather than copied from web.BConfig, which beego
// fills at init from ./conf/app.conf and $BEEGO_RUNMODE.
func config() *web.Config {
	return &web.Config{
		AppName: "web-controller-app",
		// DEV would add a Server header and log every request on beego's own logger.
		RunMode: web.PROD,
		// As net/http: /HEALTHZ is not /healthz.
		RouterCaseSensitive: true,
		// No RecoverFunc: a panic reaches net/http's server, as before.
		// Bounds beego's reading of a request body; formParsed leaves it nothing to read.
		MaxMemory: 1 << 20,
	}
}

// New returns the app's handler for twin, which belongs to the device called deviceName on the page.
func New(twin Twin, deviceName string) http.Handler {
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	var page bytes.Buffer
	if err := indexPage.Execute(&page, struct{ Device string }{deviceName}); err != nil {
		panic(err) // the template is fixed at build time and takes one string
	}
	app := web.NewHttpServerWithCfg(config())
	r := app.Handlers
	// Even without static directories beego serves these two from the working directory.
	for _, p := range []string{"/favicon.ico", "/robots.txt"} {
		if err := r.InsertFilter(p, web.BeforeStatic, notFound); err != nil {
			panic(err) // only for a position out of range
		}
	}
	// Any, with the methods checked by the handler: beego keeps one tree per method, so a route for GET alone
	// would make PUT a 404 rather than a 405, and HEAD would not be served.
	r.Any("/", exact("/", methods(readMethods, func(ctx *beecontext.Context) {
		w := ctx.ResponseWriter
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page.Bytes())
	})))
	r.Any("/healthz", exact("/healthz", methods(readMethods, func(ctx *beecontext.Context) {
		ctx.ResponseWriter.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = ctx.ResponseWriter.Write([]byte("ok\n"))
	})))
	files := http.StripPrefix("/static/", noCache(http.FileServerFS(static)))
	r.Any("/static/*", methods(readMethods, subtree("/static", func(ctx *beecontext.Context) {
		files.ServeHTTP(ctx.ResponseWriter, ctx.Request)
	})))
	// "" and "a/b" reach the control handler too, so they get the 400 of a bad id rather than a bare 404.
	r.Any("/track/control/*", methods(controlMethods, subtree("/track/control", control(twin))))
	// beego's own 404 is a bare "404"; this one reads as net/http's did.
	r.Any("/*", notFound)
	r.Init() // builds the filter chains, which web.Run would do
	// Browsers may not POST commands from other sites' pages (Sec-Fetch-Site / Origin checks); curl and the
	// page itself are unaffected. GET commands stay open, as the tutorial's API has them.
	return securityHeaders(http.NewCrossOriginProtection().Handler(canonical(formParsed(r))))
}

func notFound(ctx *beecontext.Context) {
	http.NotFound(ctx.ResponseWriter, ctx.Request)
}

// exact answers 404 for other paths than p, which beego's router also matches with a trailing slash.
func exact(p string, h web.HandleFunc) web.HandleFunc {
	return func(ctx *beecontext.Context) {
		if ctx.Request.URL.Path != p {
			notFound(ctx)
			return
		}
		h(ctx)
	}
}

// methods answers 405 with an Allow header, as net/http's mux does, for methods other than allowed.
func methods(allowed []string, h web.HandleFunc) web.HandleFunc {
	allow := strings.Join(allowed, ", ")
	return func(ctx *beecontext.Context) {
		if !slices.Contains(allowed, ctx.Request.Method) {
			ctx.ResponseWriter.Header().Set("Allow", allow)
			http.Error(ctx.ResponseWriter, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		h(ctx)
	}
}

// subtree redirects root, which beego's root+"/*" also matches, to root+"/" as net/http's mux does.
func subtree(root string, h web.HandleFunc) web.HandleFunc {
	return func(ctx *beecontext.Context) {
		if ctx.Request.URL.Path == root {
			u := &url.URL{Path: root + "/", RawQuery: ctx.Request.URL.RawQuery}
			http.Redirect(ctx.ResponseWriter, ctx.Request, u.String(), http.StatusTemporaryRedirect)
			return
		}
		h(ctx)
	}
}

// canonical redirects paths with empty, "." or ".." elements to their clean form, as net/http's mux does,
// where beego's router would match them as if clean.
func canonical(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		// A CONNECT names a host, not a path.
		if c := cleanPath(p); c != p && r.Method != http.MethodConnect {
			if r.URL.RawQuery != "" {
				c += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, c, http.StatusTemporaryRedirect)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// cleanPath is path.Clean keeping a trailing slash, as net/http's mux cleans request paths.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// formParsed hands beego requests whose form counts as parsed, and empty. beego parses the query and body of
// every request but GET and HEAD before routing: it answers malformed ones with 413 or 500 and a line on its
// own logger, and spools big multipart uploads to temporary files. Nothing here reads a form, and the body
// stays unread, as before.
func formParsed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r = r.WithContext(r.Context()) // a copy: the server's request stays as it came
			r.Form, r.PostForm, r.MultipartForm = url.Values{}, url.Values{}, &multipart.Form{}
		}
		h.ServeHTTP(w, r)
	})
}

// noCache makes browsers revalidate (the files change with the binary) and lists no directories.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func control(twin Twin) web.HandleFunc {
	return func(bctx *beecontext.Context) {
		w, r := bctx.ResponseWriter, bctx.Request
		// From the path rather than beego's :splat, which drops a trailing slash and empty elements: "ON/" is
		// not a command.
		id := strings.TrimPrefix(r.URL.Path, "/track/control/")
		ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
		defer cancel()
		// Case does not matter: "on" is as clear as "ON".
		switch cmd := strings.ToUpper(id); cmd {
		case device.On, device.Off:
			if err := twin.SetDesired(ctx, cmd); err != nil {
				klog.ErrorS(err, "Cannot set the desired value", "command", cmd)
				writeError(w, apiErrorCode(err), err.Error())
				return
			}
			klog.InfoS("Desired value set", "command", cmd, "remote", r.RemoteAddr)
			code := ResultOn
			if cmd == device.Off {
				code = ResultOff
			}
			writeReply(w, http.StatusOK, Reply{Result: code, ResultString: struct{}{}})
		case "STATUS":
			st, err := twin.Status(ctx)
			if err != nil {
				klog.ErrorS(err, "Cannot read the device status")
				writeError(w, apiErrorCode(err), err.Error())
				return
			}
			writeReply(w, http.StatusOK, Reply{Result: ResultStatus, ResultString: st})
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown trackId %q: want ON, OFF or STATUS", id))
		}
	}
}

// apiErrorCode maps a device error to the reply's HTTP status: the Device is missing (404), or the API
// server failed us (502).
func apiErrorCode(err error) int {
	if errors.Is(err, device.ErrNotFound) {
		return http.StatusNotFound
	}
	return http.StatusBadGateway
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeReply(w, code, Reply{Result: ResultError, ResultString: map[string]string{"error": msg}})
}

func writeReply(w http.ResponseWriter, code int, reply Reply) {
	body, err := json.Marshal(reply)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
