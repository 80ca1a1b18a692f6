//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	edgecerts "github.com/tether-edge/tether/edge/edgehub/certificate"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/revocation"
	"github.com/tether-edge/tether/pkg/security/token"
	"github.com/tether-edge/tether/tests/framework"
)

// TestNodeBoundCredentials runs a real cloudcore against the real API server, with keadm as an administrator runs
// it and edge clients that obtain certificates over the real wire: a join token buys a certificate for a free node
// name only, a re-join token replaces exactly its node and shuts the old one out, and revoked or deleted nodes stay
// out, at the websocket and at certificate renewal alike.
func TestNodeBoundCredentials(t *testing.T) {
	cp := framework.StartControlPlane(t)
	dir := t.TempDir()
	cfg := framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud"))
	monitor := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	cfg.CommonConfig.MonitorServer.BindAddress = monitor
	cloud := framework.StartCloud(t, cfg)
	l := &linkEnv{cp: cp, cloud: cloud, token: framework.Token(t, cp), dir: dir}
	ctx := context.Background()
	caDER, _ := cloudCA(t, cp)
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	nb := &nbEnv{l: l, ca: ca, keadmBin: nbBuildKeadm(t)}

	var edgeA tls.Certificate
	t.Run("a token holder cannot claim an existing node", func(t *testing.T) {
		if err := cp.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker1"}}); err != nil {
			t.Fatal(err)
		}
		_, err := nb.join(t, "worker1", l.token)
		nbWantErr(t, err, "HTTP 403", "node worker1 is a kubelet node, not an edge node")

		// edge-a joins while its name is free, and registers (the test stands in for Edged).
		if edgeA, err = nb.join(t, "edge-a", l.token); err != nil {
			t.Fatal(err)
		}
		nb.registerEdgeNode(t, "edge-a")
		_, err = nb.join(t, "edge-a", l.token)
		nbWantErr(t, err, "HTTP 403", "edge node edge-a has already joined", `keadm gettoken --rejoin edge-a`)
		// The cloud refuses on its own, whatever client asks: the bare JWT, over curl, as KubeEdge's edgecore sends it.
		_, jwtPart, _ := token.Parse(l.token)
		_, csr, _ := certs.NewNodeCSR("edge-a")
		if status, body := requestEdgeCert(t, cloud.HTTPServer(), ca, "edge-a", jwtPart, csr); status != http.StatusForbidden {
			t.Errorf("/edge.crt with a token for an existing edge node = %d %q", status, body)
		}
		// edge-a's own certificate still works: nothing was taken over.
		if status, body := dialHub(t, l, edgeA, "edge-a"); status != http.StatusSwitchingProtocols {
			t.Errorf("edge-a after the refused take-overs: %d %q", status, body)
		}
	})

	t.Run("keadm gettoken --rejoin lets exactly that node re-join", func(t *testing.T) {
		if edgeA.Certificate == nil {
			t.Skip("edge-a did not join")
		}
		open := dialHubConn(t, l, edgeA, "edge-a")
		rejoin := strings.TrimSpace(nb.keadm(t, "gettoken", "--rejoin", "edge-a", "--ttl", "10m"))
		if bound, err := token.BoundNode(rejoin); err != nil || bound != "edge-a" {
			t.Fatalf("keadm gettoken --rejoin printed %q (%q, %v)", rejoin, bound, err)
		}
		if _, err := nb.join(t, "edge-b", rejoin); err == nil {
			t.Fatal("a re-join token for edge-a obtained a certificate for edge-b")
		} else {
			nbWantErr(t, err, "HTTP 403", `the re-join token is for node "edge-a", not "edge-b"`)
		}
		fresh, err := nb.join(t, "edge-a", rejoin)
		if err != nil {
			t.Fatalf("re-join of edge-a: %v", err)
		}
		// The replaced box is shut out: its open session is closed, and it can neither reconnect nor renew.
		nbWantClosed(t, open, "certificate revoked")
		status, body := dialHub(t, l, edgeA, "edge-a")
		if status != http.StatusForbidden || !strings.Contains(body, revocation.RuleNode) {
			t.Errorf("old certificate at the websocket = %d %q, want 403 naming %s", status, body, revocation.RuleNode)
		}
		if status, body := nb.renew(t, edgeA, "edge-a"); status != http.StatusForbidden {
			t.Errorf("old certificate renewing = %d %q, want 403", status, body)
		}
		if status, body := dialHub(t, l, fresh, "edge-a"); status != http.StatusSwitchingProtocols {
			t.Errorf("re-joined certificate at the websocket = %d %q", status, body)
		}
		if status, body := nb.renew(t, fresh, "edge-a"); status != http.StatusOK {
			t.Errorf("re-joined certificate renewing = %d %q", status, body)
		}
		// keadm join --force alone is not enough: an ordinary token still cannot replace edge-a.
		_, err = nb.join(t, "edge-a", l.token)
		nbWantErr(t, err, "has already joined")
	})

	t.Run("keadm revoke disconnects a node that then can neither connect nor renew", func(t *testing.T) {
		cert, err := nb.join(t, "edge-c", l.token)
		if err != nil {
			t.Fatal(err)
		}
		nb.registerEdgeNode(t, "edge-c")
		open := dialHubConn(t, l, cert, "edge-c")
		out := nb.keadm(t, "revoke", "edge-c")
		if !strings.Contains(out, "certificates of node edge-c issued before") {
			t.Errorf("keadm revoke said:\n%s", out)
		}
		nbWantClosed(t, open, "certificate revoked")
		if status, body := dialHub(t, l, cert, "edge-c"); status != http.StatusForbidden || !strings.Contains(body, "keadm revoke") {
			t.Errorf("revoked node at the websocket = %d %q, want 403 naming the reason", status, body)
		}
		if status, body := nb.renew(t, cert, "edge-c"); status != http.StatusForbidden || !strings.Contains(body, revocation.RuleNode) {
			t.Errorf("revoked node renewing = %d %q", status, body)
		}

		// One certificate by serial: only that one is out.
		cert1, err := nb.join(t, "edge-d", l.token)
		if err != nil {
			t.Fatal(err)
		}
		cert2, err := nb.join(t, "edge-d", l.token) // edge-d has no Node yet: its name is still free
		if err != nil {
			t.Fatal(err)
		}
		open = dialHubConn(t, l, cert1, "edge-d")
		leaf, _ := x509.ParseCertificate(cert1.Certificate[0])
		serial := strings.ToUpper(leaf.SerialNumber.Text(16))
		if out := nb.keadm(t, "revoke", "--serial", serial, "--node", "edge-d"); !strings.Contains(out, "is revoked") {
			t.Errorf("keadm revoke --serial said:\n%s", out)
		}
		nbWantClosed(t, open, "certificate revoked")
		if status, body := dialHub(t, l, cert1, "edge-d"); status != http.StatusForbidden || !strings.Contains(body, revocation.RuleSerial) {
			t.Errorf("revoked serial at the websocket = %d %q", status, body)
		}
		if status, _ := nb.renew(t, cert1, "edge-d"); status != http.StatusForbidden {
			t.Errorf("revoked serial renewing = %d", status)
		}
		if status, body := dialHub(t, l, cert2, "edge-d"); status != http.StatusSwitchingProtocols {
			t.Errorf("the node's other certificate = %d %q", status, body)
		}
	})

	t.Run("a deleted Node cannot reconnect with its old certificate but can join again", func(t *testing.T) {
		old, err := nb.join(t, "edge-e", l.token)
		if err != nil {
			t.Fatal(err)
		}
		nb.registerEdgeNode(t, "edge-e")
		open := dialHubConn(t, l, old, "edge-e")
		if err := cp.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-e"}}); err != nil {
			t.Fatal(err)
		}
		nbWantClosed(t, open, "")
		framework.Eventually(t, 10*time.Second, "old certificate of edge-e refused", func() bool {
			status, _ := dialHub(t, l, old, "edge-e")
			return status == http.StatusForbidden
		})
		status, body := dialHub(t, l, old, "edge-e")
		if !strings.Contains(body, "node deleted") {
			t.Errorf("old certificate after deletion = %d %q, want the reason", status, body)
		}
		if status, body := nb.renew(t, old, "edge-e"); status != http.StatusForbidden {
			t.Errorf("old certificate renewing after deletion = %d %q", status, body)
		}
		// Joining again right away (same second as the deletion, give or take) with an ordinary token works.
		fresh, err := nb.join(t, "edge-e", l.token)
		if err != nil {
			t.Fatalf("join again after deletion: %v", err)
		}
		if status, body := dialHub(t, l, fresh, "edge-e"); status != http.StatusSwitchingProtocols {
			t.Errorf("new certificate after deletion = %d %q", status, body)
		}
		if status, body := nb.renew(t, fresh, "edge-e"); status != http.StatusOK {
			t.Errorf("new certificate renewing = %d %q", status, body)
		}
	})

	t.Run("refusals are counted by reason", func(t *testing.T) {
		metrics := scrape(t, monitor)
		for _, series := range []string{
			`tether_cloudhub_cert_refusals_total{reason="kubelet_node"}`,
			`tether_cloudhub_cert_refusals_total{reason="edge_node_exists"}`,
			`tether_cloudhub_cert_refusals_total{reason="rejoin_token_other_node"}`,
			`tether_cloudhub_cert_refusals_total{reason="revoked_node"}`,
			`tether_cloudhub_connections_refused_total{reason="revoked_node"}`,
			`tether_cloudhub_connections_refused_total{reason="revoked_serial"}`,
			`tether_cloudhub_sessions_revoked_total{rule="revoked_node"}`,
			`tether_cloudhub_sessions_revoked_total{rule="revoked_serial"}`,
		} {
			if !strings.Contains(metrics, series+" ") || strings.Contains(metrics, series+" 0\n") {
				t.Errorf("metric %s missing or zero", series)
			}
		}
	})
}

type nbEnv struct {
	l        *linkEnv
	ca       *x509.Certificate
	keadmBin string
}

// join obtains a certificate for name with tok over the real wire, as edgecore does on its first start.
func (e *nbEnv) join(t *testing.T, name, tok string) (tls.Certificate, error) {
	t.Helper()
	dir := t.TempDir()
	m, err := edgecerts.New(edgecerts.Config{
		NodeName: name, Token: tok, HTTPServer: e.l.cloud.HTTPServer(),
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "node.crt"), KeyFile: filepath.Join(dir, "node.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Ensure(ctx); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
}

// renew asks for a new certificate with cert, as certificate rotation does.
func (e *nbEnv) renew(t *testing.T, cert tls.Certificate, name string) (int, string) {
	t.Helper()
	_, csr, err := certs.NewNodeCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, e.l.cloud.HTTPServer()+"/edge.crt", bytes.NewReader(csr))
	req.Header.Set("NodeName", name)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("renewing %s: %v", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// registerEdgeNode stands in for Edged registering its Node.
func (e *nbEnv) registerEdgeNode(t *testing.T, name string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"node-role.kubernetes.io/edge": ""}}}
	if err := e.l.cp.Client.Create(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

// keadm runs the keadm binary as the administrator, with the cluster's admin kubeconfig.
func (e *nbEnv) keadm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.keadmBin, append(args, "--kube-config", e.l.cp.Kubeconfig)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("keadm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	t.Logf("keadm %s:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String()
}

func nbBuildKeadm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keadm")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/tether-edge/tether/cmd/keadm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building keadm: %v\n%s", err, out)
	}
	return bin
}

func nbWantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	t.Logf("edge says: %v", err)
}

// nbWantClosed waits for the cloud to close an open session, with a close reason containing want.
func nbWantClosed(t *testing.T, conn *websocket.Conn, want string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue // messages the cloud sent before closing
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("session still open 15s after its certificate was revoked")
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("session ended with %v, want a close reason containing %q", err, want)
		}
		return
	}
}
