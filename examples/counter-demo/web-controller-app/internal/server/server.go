// Package server is the counter demo's HTTP interface: the page (embedded, no CDN) and the tutorial's
// /track/control/{ON|OFF|STATUS} API.
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
	"net/http"
	"strings"
	"time"

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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page.Bytes())
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", noCache(http.FileServerFS(static))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	control := controlHandler(twin)
	// {trackId...} also matches "" and "a/b", so those get the 400 of a bad id rather than a bare 404.
	mux.Handle("GET /track/control/{trackId...}", control)
	mux.Handle("POST /track/control/{trackId...}", control)
	// Browsers may not POST commands from other sites' pages (Sec-Fetch-Site / Origin checks); curl and the
	// page itself are unaffected. GET commands stay open, as the tutorial's API has them.
	return securityHeaders(http.NewCrossOriginProtection().Handler(mux))
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

func controlHandler(twin Twin) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("trackId")
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
	})
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
