package certificate

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
)

const (
	// maxCertBody bounds /ca.crt and /edge.crt answers; a DER certificate
	// is a few hundred bytes.
	maxCertBody = 1 << 20
	// maxErrorBody bounds the error text quoted from cloudcore.
	maxErrorBody = 4 << 10
)

// fetchCA downloads the CA DER without verifying the server: the node does
// not know the CA yet, and the token's hash is what authenticates the answer.
func (m *Manager) fetchCA(ctx context.Context) ([]byte, error) {
	url := m.cfg.HTTPServer + "/ca.crt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", url, err)
	}
	//nolint:gosec // G402: verification is replaced by the token's CA hash.
	der, err := m.do(req, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	return der, nil
}

// fetchEdgeCert sends the CSR to /edge.crt, authenticating with the JWT or,
// when client is set, with that certificate.
func (m *Manager) fetchEdgeCert(ctx context.Context, ca *x509.Certificate, csrDER []byte, jwtPart string, client *tls.Certificate) ([]byte, error) {
	url := m.cfg.HTTPServer + "/edge.crt"
	// GET with a body is what cloudcore's route expects.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, bytes.NewReader(csrDER))
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", url, err)
	}
	req.Header.Set("NodeName", m.cfg.NodeName)
	req.Header.Set("Content-Type", "application/octet-stream")
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if client != nil {
		tc.Certificates = []tls.Certificate{*client}
	} else {
		req.Header.Set("Authorization", "Bearer "+jwtPart)
	}
	return m.do(req, tc)
}

// do runs one request on a throwaway transport, so no idle connection or
// goroutine outlives it.
func (m *Manager) do(req *http.Request, tc *tls.Config) ([]byte, error) {
	// Direct, as in KubeEdge and like the websocket dial, so both requests
	// and the cloud link take the same network path.
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: m.cfg.RequestTimeout}
	url := req.URL.String()
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		err := fmt.Errorf("request %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(msg)))
		if permanentStatus(resp.StatusCode) {
			err = fmt.Errorf("%w: %w", ErrRejected, err)
		}
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCertBody+1))
	if err != nil {
		return nil, fmt.Errorf("read response of %s: %w", url, err)
	}
	if len(body) > maxCertBody {
		return nil, fmt.Errorf("response of %s exceeds %d bytes", url, maxCertBody)
	}
	return body, nil
}

// permanentStatus: a 4xx other than timeout or throttling means this
// request will never be accepted.
func permanentStatus(code int) bool {
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}
