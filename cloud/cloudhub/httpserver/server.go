// Package httpserver is CloudHub's HTTPS service (port 10002): it hands out
// the CA, signs edge node certificates and answers keadm's node lookups, with
// KubeEdge's URLs, headers, bodies and status strings.
package httpserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

const (
	// MaxCSRBytes bounds the /edge.crt body; a P-256 CSR is about 500 bytes
	// and even RSA-4096 stays well below this.
	MaxCSRBytes = 64 << 10

	// Header names are KubeEdge's.
	headerNodeName     = "NodeName"
	headerExtKeyUsages = "ExtKeyUsages"

	// Bodies of GET /node/{name}; keadm compares them.
	nodeFound    = "Node founded"
	nodeNotFound = "Node not found"

	shutdownTimeout = 10 * time.Second
	derContentType  = "application/pkix-cert"
)

// Values of the result label of tether_cloudhub_cert_requests_total.
const (
	resultIssued       = "issued"
	resultBadRequest   = "bad_request"
	resultUnauthorized = "unauthorized"
	resultForbidden    = "forbidden"
	resultTooLarge     = "too_large"
	resultError        = "error"
)

// Options configures a Server. Bundle and Kube are required.
type Options struct {
	// Address is host:port to listen on, e.g. "0.0.0.0:10002".
	Address string
	Bundle  *certificate.Bundle
	Kube    kubernetes.Interface
	// CertValidity is the lifetime of issued edge certificates; <= 0 means
	// certs.DefaultNodeCertValidity.
	CertValidity time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Registerer receives the server's metrics; nil means they are not
	// exported.
	Registerer prometheus.Registerer
}

// Server serves the CloudHub HTTPS routes.
type Server struct {
	opts         Options
	handler      http.Handler
	certRequests *prometheus.CounterVec
	// err records a configuration error; Run returns it and the handler
	// answers 500 rather than dereferencing nil.
	err error
}

// New builds a Server; configuration errors are reported by Run.
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, certRequests: newCertRequests(opts.Registerer)}
	switch {
	case opts.Bundle == nil || opts.Bundle.CA == nil || opts.Bundle.CAKey == nil:
		s.err = errors.New("cloudhub https server: certificate bundle with CA and key is required")
	case opts.Kube == nil:
		s.err = errors.New("cloudhub https server: Kubernetes client is required")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.crt", s.caCert)
	mux.HandleFunc("GET /edge.crt", s.edgeCert)
	mux.HandleFunc("GET /node/{name}", s.node)
	s.handler = mux
	return s
}

func newCertRequests(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tether",
		Subsystem: "cloudhub",
		Name:      "cert_requests_total",
		Help:      "Edge certificate requests (GET /edge.crt) by result.",
	}, []string{"result"})
	// Pre-create every series so rate() works from the first refusal.
	for _, r := range []string{resultIssued, resultBadRequest, resultUnauthorized, resultForbidden, resultTooLarge, resultError} {
		c.WithLabelValues(r)
	}
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		// A second Server on the same registry (tests, restarts within a
		// process) shares the existing counter.
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		klog.ErrorS(err, "Failed to register CloudHub HTTPS metrics")
	}
	return c
}

// Handler returns the routes without TLS, for tests and embedding; /edge.crt
// sees client certificates only when served over TLS.
func (s *Server) Handler() http.Handler {
	if s.err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "server misconfigured", http.StatusInternalServerError)
		})
	}
	return s.handler
}

// Run listens on Options.Address and serves until ctx is done, then shuts
// down gracefully and returns nil.
func (s *Server) Run(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.opts.Address)
	if err != nil {
		return fmt.Errorf("cloudhub https server: listen on %q: %w", s.opts.Address, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener, which it closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.err != nil {
		ln.Close()
		return s.err
	}
	srv := &http.Server{
		Handler: s.handler,
		// Edges without a certificate must still bootstrap, so the
		// certificate is requested but verified per route.
		TLSConfig:         s.opts.Bundle.ServerTLSConfig(tls.RequestClientCert),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Handshake failures from probes and port scanners would flood the
		// default logger.
		ErrorLog: log.New(klogWriter{}, "", 0),
	}
	klog.InfoS("CloudHub HTTPS server listening", "address", ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()

	select {
	case err := <-served:
		return fmt.Errorf("cloudhub https server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("cloudhub https server: graceful shutdown: %w", err), srv.Close())
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("cloudhub https server: %w", serr))
	}
	klog.InfoS("CloudHub HTTPS server stopped", "address", ln.Addr().String())
	return err
}

type klogWriter struct{}

func (klogWriter) Write(p []byte) (int, error) {
	klog.V(1).InfoS("CloudHub HTTPS server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// caCert serves the CA in DER; edges fetch it unverified and pin it with
// the hash in their join token.
func (s *Server) caCert(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", derContentType)
	w.Write(s.opts.Bundle.CA.Raw)
}

// edgeCert signs an edge node CSR. Bootstrapping nodes authenticate with the
// JWT of their join token; rotating nodes with their current certificate.
func (s *Server) edgeCert(w http.ResponseWriter, r *http.Request) {
	nodeName := r.Header.Get(headerNodeName)
	refuse := func(status int, result string, err error) {
		// One line: clients such as keadm print the body verbatim.
		msg := strings.NewReplacer("\r", " ", "\n", " ").Replace(err.Error())
		klog.InfoS("Refused edge certificate request", "node", truncate(nodeName), "remoteAddr", r.RemoteAddr, "status", status, "reason", msg)
		s.certRequests.WithLabelValues(result).Inc()
		http.Error(w, msg, status)
	}

	if nodeName == "" {
		refuse(http.StatusBadRequest, resultBadRequest, errors.New("missing NodeName header"))
		return
	}
	if errs := validation.IsDNS1123Subdomain(nodeName); len(errs) > 0 {
		refuse(http.StatusBadRequest, resultBadRequest, fmt.Errorf("invalid NodeName header %q: %s", truncate(nodeName), strings.Join(errs, "; ")))
		return
	}
	now := s.opts.Now()
	auth, err := s.authenticate(r, nodeName, now)
	if err != nil {
		refuse(http.StatusUnauthorized, resultUnauthorized, err)
		return
	}
	usages, err := parseUsages(r.Header.Get(headerExtKeyUsages))
	if err != nil {
		refuse(http.StatusBadRequest, resultBadRequest, err)
		return
	}
	csr, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCSRBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		refuse(http.StatusRequestEntityTooLarge, resultTooLarge, fmt.Errorf("CSR larger than %d bytes", MaxCSRBytes))
		return
	case err != nil:
		refuse(http.StatusBadRequest, resultBadRequest, fmt.Errorf("read CSR: %w", err))
		return
	case len(csr) == 0:
		refuse(http.StatusBadRequest, resultBadRequest, errors.New("empty body: want a DER certificate signing request"))
		return
	}

	der, err := certs.SignNodeCSR(s.opts.Bundle.CA, s.opts.Bundle.CAKey, csr, nodeName, usages, s.opts.CertValidity, now)
	switch {
	case errors.Is(err, certs.ErrMalformedCSR):
		refuse(http.StatusBadRequest, resultBadRequest, err)
		return
	case errors.Is(err, certs.ErrCSRRejected):
		refuse(http.StatusForbidden, resultForbidden, err)
		return
	case err != nil:
		klog.ErrorS(err, "Failed to sign edge certificate", "node", nodeName, "remoteAddr", r.RemoteAddr)
		s.certRequests.WithLabelValues(resultError).Inc()
		http.Error(w, "failed to sign certificate", http.StatusInternalServerError)
		return
	}
	klog.InfoS("Issued edge certificate", "node", nodeName, "remoteAddr", r.RemoteAddr, "auth", auth, "usages", usages)
	s.certRequests.WithLabelValues(resultIssued).Inc()
	w.Header().Set("Content-Type", derContentType)
	w.Write(der)
}

// authenticate returns how the request proved it may obtain a certificate
// for nodeName. A failing client certificate falls back to a bearer token
// when one is sent: a token authorizes any node anyway, and it lets a node
// whose certificate expired while offline re-join with a fresh token.
func (s *Server) authenticate(r *http.Request, nodeName string, now time.Time) (string, error) {
	var certErr error
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		certErr = certs.VerifyNodeClientCert(s.opts.Bundle.CA, r.TLS.PeerCertificates[0], nodeName, now)
		if certErr == nil {
			return "client-certificate", nil
		}
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if certErr != nil {
			return "", certErr
		}
		return "", errors.New("missing Authorization: Bearer token (get one with keadm gettoken) or client certificate")
	}
	jwtPart, err := bearer(authz)
	if err != nil {
		return "", err
	}
	// Accept the full keadm token too, as people paste it into curl; its CA
	// hash must then match ours.
	if strings.Count(jwtPart, ".") == 3 {
		if err := token.VerifyCAHash(jwtPart, s.opts.Bundle.CA.Raw); err != nil {
			return "", err
		}
		if _, jwtPart, err = token.Parse(jwtPart); err != nil {
			return "", err
		}
	}
	keyDER, err := s.opts.Bundle.CAKeyDER()
	if err != nil {
		return "", fmt.Errorf("verify token: %w", err)
	}
	if err := token.VerifyJWT(jwtPart, keyDER, now); err != nil {
		return "", err
	}
	return "token", nil
}

func bearer(h string) (string, error) {
	scheme, cred, _ := strings.Cut(strings.TrimSpace(h), " ")
	cred = strings.TrimSpace(cred)
	if !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return "", errors.New(`Authorization header must be "Bearer <token>"`)
	}
	return cred, nil
}

// parseUsages reads KubeEdge's ExtKeyUsages header, a JSON array of
// x509.ExtKeyUsage numbers; absent means SignNodeCSR's default (ClientAuth).
func parseUsages(h string) ([]x509.ExtKeyUsage, error) {
	if strings.TrimSpace(h) == "" {
		return nil, nil
	}
	var usages []x509.ExtKeyUsage
	if err := json.Unmarshal([]byte(h), &usages); err != nil {
		return nil, fmt.Errorf("invalid ExtKeyUsages header: want a JSON array of integers: %w", err)
	}
	return usages, nil
}

// node tells keadm join whether a node name is taken.
func (s *Server) node(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// No Node can have an invalid name; asking the API would only yield a
	// confusing 500.
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, nodeNotFound)
		return
	}
	_, err := s.opts.Kube.CoreV1().Nodes().Get(r.Context(), name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, nodeNotFound)
	case err != nil:
		klog.ErrorS(err, "Failed to look up node", "node", name, "remoteAddr", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("look up node %q: %v", name, err), http.StatusInternalServerError)
	default:
		io.WriteString(w, nodeFound)
	}
}

// truncate keeps hostile header values from bloating logs and responses.
func truncate(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
