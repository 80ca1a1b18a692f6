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
	"github.com/tether-edge/tether/pkg/metrics"
	"github.com/tether-edge/tether/pkg/security/certs"
	rev "github.com/tether-edge/tether/pkg/security/revocation"
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
	resultUnavailable  = "unavailable"
	resultError        = "error"
)

// Values of the reason label of tether_cloudhub_cert_refusals_total: why a
// request was refused, finer than the result.
const (
	reasonBadRequest      = "bad_request"
	reasonNoCredentials   = "no_credentials"
	reasonBadToken        = "bad_token"
	reasonBadCert         = "bad_certificate"
	reasonKubeletNode     = "kubelet_node"
	reasonEdgeNodeExists  = "edge_node_exists"
	reasonRejoinOtherNode = "rejoin_token_other_node"
	reasonRevokedSerial   = rev.RuleSerial
	reasonRevokedNode     = rev.RuleNode
	reasonCSRRejected     = "csr_rejected"
	reasonTooLarge        = "too_large"
	reasonUnavailable     = "unavailable"
)

var refusalReasons = []string{reasonBadRequest, reasonNoCredentials, reasonBadToken, reasonBadCert, reasonKubeletNode,
	reasonEdgeNodeExists, reasonRejoinOtherNode, reasonRevokedSerial, reasonRevokedNode, reasonCSRRejected, reasonTooLarge,
	reasonUnavailable}

// EdgeRoleLabel marks the Nodes of edge nodes; a Node without it is an
// ordinary kubelet node, which no join token may claim.
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// Revocation is the certificate deny-list (cloud/cloudhub/revocation).
type Revocation interface {
	// CheckNode returns nil, an error wrapping rev.ErrRevoked, or another
	// error when it cannot tell.
	CheckNode(cert *x509.Certificate, node string) error
	// IssueTime is when to date a certificate of node signed at now.
	IssueTime(node string, now time.Time) time.Time
	// RevokeNode revokes node's certificates issued before `before` and
	// returns once every cloudcore will see it.
	RevokeNode(ctx context.Context, node string, before time.Time, reason string) error
	// NodeGone says the API server has no Node called node.
	NodeGone(node string)
}

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
	// Revocation refuses revoked certificates for rotation and records
	// re-joins. Without it nothing is revoked and re-join tokens are
	// refused, since the node they replace could not be shut out.
	Revocation Revocation
}

// Server serves the CloudHub HTTPS routes.
type Server struct {
	opts         Options
	handler      http.Handler
	certRequests *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	// err records a configuration error; Run returns it and the handler
	// answers 500 rather than dereferencing nil.
	err error
}

// New builds a Server; configuration errors are reported by Run.
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, certRequests: newCertRequests(opts.Registerer), refusals: newRefusals(opts.Registerer)}
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
	return newCounter(reg, "cert_requests_total", "Edge certificate requests (GET /edge.crt) by result.", "result",
		[]string{resultIssued, resultBadRequest, resultUnauthorized, resultForbidden, resultTooLarge, resultUnavailable, resultError})
}

func newRefusals(reg prometheus.Registerer) *prometheus.CounterVec {
	return newCounter(reg, "cert_refusals_total",
		"Edge certificate requests (GET /edge.crt) refused, by reason (kubelet_node, edge_node_exists, revoked_node, ...).",
		"reason", refusalReasons)
}

func newCounter(reg prometheus.Registerer, name, help, label string, values []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tether",
		Subsystem: "cloudhub",
		Name:      name,
		Help:      help,
	}, []string{label})
	// Pre-create every series so rate() works from the first refusal.
	for _, r := range values {
		c.WithLabelValues(r)
	}
	return metrics.Shared(reg, c)
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

// refusal is why /edge.crt says no.
type refusal struct {
	status int
	reason string // label of tether_cloudhub_cert_refusals_total
	err    error
}

func refuseWith(status int, reason string, err error) *refusal {
	return &refusal{status: status, reason: reason, err: err}
}

// result maps a status to the label of tether_cloudhub_cert_requests_total.
func result(status int) string {
	switch status {
	case http.StatusBadRequest:
		return resultBadRequest
	case http.StatusUnauthorized:
		return resultUnauthorized
	case http.StatusForbidden:
		return resultForbidden
	case http.StatusRequestEntityTooLarge:
		return resultTooLarge
	case http.StatusServiceUnavailable:
		return resultUnavailable
	}
	return resultError
}

// grant is how a request proved it may obtain a certificate for its node.
type grant struct {
	method string // for the log: client-certificate, token, re-join-token, legacy-certificate
	// rejoin: a re-join token replaces an existing edge node, whose older
	// certificates are then revoked.
	rejoin bool
}

// edgeCert signs an edge node CSR. Bootstrapping nodes authenticate with the
// JWT of their join token; rotating nodes with their current certificate.
//
// A token (or a legacy KubeEdge certificate, which names no node) only buys
// a certificate for a node name that is free: never for a kubelet node, and
// for an edge node that exists only with a re-join token bound to it.
func (s *Server) edgeCert(w http.ResponseWriter, r *http.Request) {
	nodeName := r.Header.Get(headerNodeName)
	refuse := func(f *refusal) {
		// One line: clients such as keadm print the body verbatim. Info, not
		// Error: a refusal is the system working.
		msg := strings.NewReplacer("\r", " ", "\n", " ").Replace(f.err.Error())
		klog.InfoS("Refused edge certificate request", "node", truncate(nodeName), "remoteAddr", r.RemoteAddr, "status", f.status,
			"reason", f.reason, "err", msg)
		s.certRequests.WithLabelValues(result(f.status)).Inc()
		s.refusals.WithLabelValues(f.reason).Inc()
		http.Error(w, msg, f.status)
	}

	if nodeName == "" {
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, errors.New("missing NodeName header")))
		return
	}
	if errs := validation.IsDNS1123Subdomain(nodeName); len(errs) > 0 {
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, fmt.Errorf("invalid NodeName header %q: %s", truncate(nodeName), strings.Join(errs, "; "))))
		return
	}
	now := s.opts.Now()
	g, f := s.authenticate(r, nodeName, now)
	if f != nil {
		refuse(f)
		return
	}
	usages, err := parseUsages(r.Header.Get(headerExtKeyUsages))
	if err != nil {
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, err))
		return
	}
	csr, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCSRBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		refuse(refuseWith(http.StatusRequestEntityTooLarge, reasonTooLarge, fmt.Errorf("CSR larger than %d bytes", MaxCSRBytes)))
		return
	case err != nil:
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, fmt.Errorf("read CSR: %w", err)))
		return
	case len(csr) == 0:
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, errors.New("empty body: want a DER certificate signing request")))
		return
	}

	// The certificate is dated no earlier than the node's revocation floor,
	// nor than the floor a re-join writes below, so that it survives them.
	issue := now
	if s.opts.Revocation != nil {
		issue = s.opts.Revocation.IssueTime(nodeName, now)
	}
	if g.rejoin {
		issue = rev.IssueTime(now, issue)
	}
	der, err := certs.SignNodeCSR(s.opts.Bundle.CA, s.opts.Bundle.CAKey, csr, nodeName, usages, s.opts.CertValidity, issue)
	switch {
	case errors.Is(err, certs.ErrMalformedCSR):
		refuse(refuseWith(http.StatusBadRequest, reasonBadRequest, err))
		return
	case errors.Is(err, certs.ErrCSRRejected):
		refuse(refuseWith(http.StatusForbidden, reasonCSRRejected, err))
		return
	case err != nil:
		klog.ErrorS(err, "Failed to sign edge certificate", "node", nodeName, "remoteAddr", r.RemoteAddr)
		s.certRequests.WithLabelValues(resultError).Inc()
		http.Error(w, "failed to sign certificate", http.StatusInternalServerError)
		return
	}
	if g.rejoin {
		// The old node is shut out before the new one gets its certificate:
		// if this fails, neither changes.
		if err := s.opts.Revocation.RevokeNode(r.Context(), nodeName, now, rev.ReasonRejoined); err != nil {
			refuse(refuseWith(http.StatusServiceUnavailable, reasonUnavailable,
				fmt.Errorf("re-join of node %q: cannot revoke its older certificates, try again: %w", nodeName, err)))
			return
		}
	}
	klog.InfoS("Issued edge certificate", "node", nodeName, "remoteAddr", r.RemoteAddr, "auth", g.method, "usages", usages,
		"issuedAt", issue.UTC().Format(time.RFC3339))
	s.certRequests.WithLabelValues(resultIssued).Inc()
	w.Header().Set("Content-Type", derContentType)
	w.Write(der)
}

// authenticate decides whether the request may obtain a certificate for
// nodeName. A node certificate for nodeName that is not revoked is enough
// (rotation). Otherwise a bearer token is needed, checked against the Node
// rules; a failing client certificate falls back to it, which lets a node
// whose certificate expired while offline re-join with a fresh token.
func (s *Server) authenticate(r *http.Request, nodeName string, now time.Time) (grant, *refusal) {
	var certFail *refusal
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		g, f := s.certGrant(r, cert, nodeName, now)
		if f == nil {
			return g, nil
		}
		if f.status == http.StatusServiceUnavailable {
			return grant{}, f // cannot tell yet; a token would be judged on other grounds
		}
		certFail = f
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if certFail != nil {
			return grant{}, certFail
		}
		return grant{}, refuseWith(http.StatusUnauthorized, reasonNoCredentials,
			errors.New("missing Authorization: Bearer token (get one with keadm gettoken) or client certificate"))
	}
	claims, f := s.verifyToken(authz, now)
	if f != nil {
		return grant{}, f
	}
	if claims.Node != "" && claims.Node != nodeName {
		return grant{}, refuseWith(http.StatusForbidden, reasonRejoinOtherNode,
			fmt.Errorf("the re-join token is for node %q, not %q: create one for %q with keadm gettoken --rejoin %s", claims.Node, nodeName, nodeName, nodeName))
	}
	method := "token"
	if claims.Node != "" {
		method = "re-join-token"
	}
	return s.nodeRules(r.Context(), nodeName, method, claims.Node == nodeName)
}

// certGrant authorizes rotation with a client certificate.
func (s *Server) certGrant(r *http.Request, cert *x509.Certificate, nodeName string, now time.Time) (grant, *refusal) {
	if err := certs.VerifyNodeClientCert(s.opts.Bundle.CA, cert, nodeName, now); err != nil {
		return grant{}, refuseWith(http.StatusUnauthorized, reasonBadCert, err)
	}
	if s.opts.Revocation != nil {
		err := s.opts.Revocation.CheckNode(cert, nodeName)
		var revoked *rev.RevokedError
		switch {
		case errors.As(err, &revoked):
			return grant{}, refuseWith(http.StatusForbidden, revoked.Rule, err)
		case errors.Is(err, rev.ErrRevoked):
			return grant{}, refuseWith(http.StatusForbidden, reasonRevokedSerial, err)
		case err != nil:
			return grant{}, refuseWith(http.StatusServiceUnavailable, reasonUnavailable, err)
		}
	}
	if _, err := certs.NodeNameFromCert(cert); err != nil {
		// A legacy KubeEdge certificate names no node: like a token, it buys
		// a certificate for a free name only.
		return s.nodeRules(r.Context(), nodeName, "legacy-certificate", false)
	}
	return grant{method: "client-certificate"}, nil
}

// verifyToken checks a bearer token (JWT, or the full keadm token) and
// returns its claims.
func (s *Server) verifyToken(authz string, now time.Time) (*token.Claims, *refusal) {
	bad := func(err error) (*token.Claims, *refusal) {
		return nil, refuseWith(http.StatusUnauthorized, reasonBadToken, err)
	}
	jwtPart, err := bearer(authz)
	if err != nil {
		return bad(err)
	}
	// Accept the full keadm token too, as people paste it into curl; its CA
	// hash must then match ours.
	if strings.Count(jwtPart, ".") == 3 {
		if err := token.VerifyCAHash(jwtPart, s.opts.Bundle.CA.Raw); err != nil {
			return bad(err)
		}
		if _, jwtPart, err = token.Parse(jwtPart); err != nil {
			return bad(err)
		}
	}
	keyDER, err := s.opts.Bundle.CAKeyDER()
	if err != nil {
		return bad(fmt.Errorf("verify token: %w", err))
	}
	claims, err := token.VerifyClaims(jwtPart, keyDER, now)
	if err != nil {
		return bad(err)
	}
	return claims, nil
}

// nodeRules lets a token (or legacy certificate) holder have a certificate
// for nodeName: a new node, or, with rejoin, an existing edge node.
func (s *Server) nodeRules(ctx context.Context, nodeName, method string, rejoin bool) (grant, *refusal) {
	n, err := s.opts.Kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if s.opts.Revocation == nil {
			return grant{method: method}, nil
		}
		s.opts.Revocation.NodeGone(nodeName)
		// A re-join token still shuts out whatever certificates the name
		// had, even if its Node never registered.
		return grant{method: method, rejoin: rejoin}, nil
	case err != nil:
		return grant{}, refuseWith(http.StatusServiceUnavailable, reasonUnavailable, fmt.Errorf("look up node %q: %w", nodeName, err))
	}
	if _, edge := n.Labels[EdgeRoleLabel]; !edge {
		return grant{}, refuseWith(http.StatusForbidden, reasonKubeletNode,
			fmt.Errorf("node %s is a kubelet node, not an edge node: choose another name for the edge node", nodeName))
	}
	if !rejoin {
		return grant{}, refuseWith(http.StatusForbidden, reasonEdgeNodeExists,
			fmt.Errorf("edge node %s has already joined; to replace it, run \"keadm gettoken --rejoin %s\" on the cloud and join with that token (or delete the node: kubectl delete node %s)",
				nodeName, nodeName, nodeName))
	}
	if s.opts.Revocation == nil {
		return grant{}, refuseWith(http.StatusServiceUnavailable, reasonUnavailable,
			fmt.Errorf("re-join of node %q: certificate revocation is not configured on this cloudcore", nodeName))
	}
	return grant{method: method, rejoin: true}, nil
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
