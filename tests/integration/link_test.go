//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	edgecerts "github.com/tether-edge/tether/edge/edgehub/certificate"
	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
	"github.com/tether-edge/tether/tests/framework"
)

const node = "edge1"

type linkEnv struct {
	cp    *framework.ControlPlane
	cloud *framework.Cloud
	token string
	dir   string
}

func startLink(t *testing.T) *linkEnv {
	t.Helper()
	cp := framework.StartControlPlane(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	l := &linkEnv{cp: cp, cloud: cloud, token: framework.Token(t, cp), dir: dir}
	// The node joins while its name is free, as keadm join does: a join token cannot claim an existing Node.
	framework.BootstrapEdge(t, l.edgeConfig(t))
	// Edged registers the Node; until it exists here, stand in for it, or SyncController prunes the node's records.
	if err := cp.Client.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *linkEnv) edgeConfig(t *testing.T) *edgecfg.EdgeCore {
	t.Helper()
	return framework.NewEdgeConfig(t, l.cloud, node, l.token, filepath.Join(l.dir, "edge"))
}

func (l *linkEnv) startEdge(t *testing.T, store *framework.EdgeStore) *framework.Edge {
	t.Helper()
	return framework.StartEdge(t, l.edgeConfig(t), store)
}

// waitConnected waits for the n-th "connected" event of the node at the cloud's controllers.
func (l *linkEnv) waitConnected(t *testing.T, n int) {
	t.Helper()
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("connected event #%d of %s", n, node), func() bool {
		count := 0
		for _, m := range l.cloud.Upstream.Messages() {
			if m.GetOperation() == model.ConnectedOperation && m.GetResource() == "node/"+node {
				count++
			}
		}
		return count >= n
	})
}

// sendToEdge plays EdgeController: one downstream message for a ConfigMap. The bus passes content by reference,
// so it gets a copy the test can go on changing.
func (l *linkEnv) sendToEdge(t *testing.T, op string, cm *corev1.ConfigMap) model.Message {
	t.Helper()
	msg := model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource,
		"node/"+node+"/"+cm.Namespace+"/configmap/"+cm.Name, op).SetResourceVersion(cm.ResourceVersion).FillBody(cm.DeepCopy())
	if op == model.DeleteOperation {
		msg.SetResourceVersion("")
	}
	if err := l.cloud.Bus.Send(context.Background(), modules.CloudHub, *msg); err != nil {
		t.Fatalf("sending %s of %s to cloudhub: %v", op, cm.Name, err)
	}
	return *msg
}

func (l *linkEnv) createConfigMap(t *testing.T, name, value string) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Data: map[string]string{"v": value}}
	if err := l.cp.Client.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	l.useOnNode(t, cm.Name)
	return cm
}

// useOnNode binds a pod using ConfigMap name to the node: cloudcore sends a node only what its pods use. The node
// is not an edge node here, so EdgeController leaves the pod alone and the test plays EdgeController.
func (l *linkEnv) useOnNode(t *testing.T, name string) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "uses-" + name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "tether/testapp:v1"}},
			Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}}}}}
	if err := l.cp.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 10*time.Second, "cloudcore to see pod "+p.Name, func() bool {
		return l.cloud.Authorizer.MayHold(node, "configmap", "default", name) == nil
	})
}

func (l *linkEnv) updateConfigMap(t *testing.T, cm *corev1.ConfigMap, value string) {
	t.Helper()
	cm.Data["v"] = value
	if err := l.cp.Client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
}

func edgeKey(name string) string { return "default/configmap/" + name }

func TestTokenJoinAndRefusals(t *testing.T) {
	l := startLink(t)
	ctx := context.Background()

	t.Run("valid token joins", func(t *testing.T) {
		edge := l.startEdge(t, framework.NewEdgeStore())
		l.waitConnected(t, 1)
		edge.Stop()
	})

	caDER, caKeyDER := cloudCA(t, l.cp)
	hash, jwtPart, err := token.Parse(l.token)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, otherKey, _ := certs.NewCA(time.Now())
	otherKeyDER, _ := certs.MarshalKeyDER(otherKey)
	foreign, _ := token.Create(otherCA.Raw, otherKeyDER, time.Hour, time.Now())
	_, foreignJWT, _ := token.Parse(foreign)
	expired, _ := token.Create(caDER, caKeyDER, time.Hour, time.Now().Add(-2*time.Hour))
	tampered := hash + "." + jwtPart[:len(jwtPart)-4] + "AAAA"

	tests := []struct {
		name, token, wantEdge string
	}{
		{"wrong CA hash", strings.Repeat("ab", 32) + "." + jwtPart, "does not match"},
		{"bad signature", tampered, "signature"},
		{"signed by another CA key", hash + "." + foreignJWT, "signature"},
		{"expired", expired, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m, err := edgecerts.New(edgecerts.Config{
				NodeName: "edge-bad", Token: tt.token, HTTPServer: l.cloud.HTTPServer(),
				CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "node.crt"), KeyFile: filepath.Join(dir, "node.key"),
			})
			if err == nil {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				err = m.Ensure(ctx)
				cancel()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantEdge) {
				t.Fatalf("edge error = %v; want one containing %q", err, tt.wantEdge)
			}
			t.Logf("edge says: %v", err)
		})
	}

	// The cloud refuses on its own, whatever the edge checked first.
	ca, _ := x509.ParseCertificate(caDER)
	_, expiredJWT, _ := token.Parse(expired)
	for _, tt := range []struct {
		name, nodeHeader, csrNode, jwt string
		wantStatus                     int
		wantBody                       string
	}{
		{"expired token", "edge-x", "edge-x", expiredJWT, http.StatusUnauthorized, "expired"},
		{"bad signature", "edge-x", "edge-x", tampered[len(hash)+1:], http.StatusUnauthorized, "signature"},
		{"CSR for another node", "edge-x", "edge-y", jwtPart, http.StatusForbidden, "edge-y"},
		{"malformed CSR", "edge-x", "", jwtPart, http.StatusBadRequest, "malformed certificate signing request"},
	} {
		t.Run("cloud refuses "+tt.name, func(t *testing.T) {
			var body []byte = []byte("not a CSR")
			if tt.csrNode != "" {
				_, body, _ = certs.NewNodeCSR(tt.csrNode)
			}
			status, text := requestEdgeCert(t, l.cloud.HTTPServer(), ca, tt.nodeHeader, tt.jwt, body)
			if status != tt.wantStatus || !strings.Contains(text, tt.wantBody) {
				t.Fatalf("/edge.crt = %d %q; want %d containing %q", status, text, tt.wantStatus, tt.wantBody)
			}
		})
	}

	t.Run("node name must match the certificate", func(t *testing.T) {
		clientCert := nodeCertificate(t, l, "edge-a")
		status, text := dialHub(t, l, clientCert, "edge-b")
		if status != http.StatusUnauthorized && status != http.StatusForbidden {
			t.Fatalf("dial as edge-b with edge-a's certificate = %d %q; want 401/403", status, text)
		}
		t.Logf("cloud says: %d %s", status, strings.TrimSpace(text))
	})
}

func TestMessagesRoundTripBothWays(t *testing.T) {
	l := startLink(t)
	store := framework.NewEdgeStore()
	edge := l.startEdge(t, store)
	l.waitConnected(t, 1)

	// Downstream: the edge gets the same envelope, with the node prefix stripped.
	cm := l.createConfigMap(t, "round-trip", "1")
	sent := l.sendToEdge(t, model.InsertOperation, cm)
	framework.Eventually(t, 20*time.Second, "downstream message at the edge", func() bool { return len(store.Received()) > 0 })
	got := store.Received()[0]
	want := sent
	want.Router.Resource = edgeKey("round-trip")
	want.Header.Sync = false
	if g, w := mustJSON(t, got), mustJSON(t, want); !bytes.Equal(g, w) {
		t.Errorf("edge received\n%s\nwant\n%s", g, w)
	}

	// Upstream: the cloud's controllers get the same envelope, with the node prefix added.
	up := model.NewMessage("").BuildRouter(modules.Edged, model.GroupMeta, "default/podstatus/p1", model.UpdateOperation).
		FillBody(map[string]any{"phase": "Running"})
	if err := edge.Bus.Send(context.Background(), modules.EdgeHub, *up); err != nil {
		t.Fatal(err)
	}
	var arrived *model.Message
	framework.Eventually(t, 20*time.Second, "upstream message at the cloud", func() bool {
		for _, m := range l.cloud.Upstream.Messages() {
			if m.GetID() == up.GetID() {
				arrived = &m
				return true
			}
		}
		return false
	})
	wantUp := *up
	wantUp.Router.Resource = "node/" + node + "/default/podstatus/p1"
	if g, w := mustJSON(t, *arrived), mustJSON(t, wantUp); !bytes.Equal(g, w) {
		t.Errorf("cloud received\n%s\nwant\n%s", g, w)
	}
}

func TestAckRecordsResourceVersion(t *testing.T) {
	l := startLink(t)
	l.startEdge(t, framework.NewEdgeStore())
	l.waitConnected(t, 1)

	cm := l.createConfigMap(t, "acked", "1")
	l.sendToEdge(t, model.InsertOperation, cm)
	assertObjectSync(t, l, cm)

	l.updateConfigMap(t, cm, "2")
	l.sendToEdge(t, model.UpdateOperation, cm)
	assertObjectSync(t, l, cm)
}

func assertObjectSync(t *testing.T, l *linkEnv, cm *corev1.ConfigMap) {
	t.Helper()
	key := client.ObjectKey{Namespace: cm.Namespace, Name: v1alpha1.SyncName(node, cm.UID)}
	framework.Eventually(t, 20*time.Second, "ObjectSync "+key.String()+" at "+cm.ResourceVersion, func() bool {
		var os v1alpha1.ObjectSync
		return l.cp.Client.Get(context.Background(), key, &os) == nil && os.Status.ObjectResourceVersion == cm.ResourceVersion
	})
}

// Changes made while the node is offline reach it after reconnect: the newest version only, deletes included.
func TestOfflineChangesDeliveredAfterReconnect(t *testing.T) {
	l := startLink(t)
	store := framework.NewEdgeStore()
	edge := l.startEdge(t, store)
	l.waitConnected(t, 1)

	doomed := l.createConfigMap(t, "doomed", "1")
	l.sendToEdge(t, model.InsertOperation, doomed)
	framework.Eventually(t, 20*time.Second, "doomed at the edge", func() bool { _, ok := store.Objects()[edgeKey("doomed")]; return ok })
	assertObjectSync(t, l, doomed)

	edge.Stop()
	before := len(store.Received())

	a := l.createConfigMap(t, "a", "1")
	l.sendToEdge(t, model.InsertOperation, a)
	for _, v := range []string{"2", "3"} {
		l.updateConfigMap(t, a, v)
		l.sendToEdge(t, model.UpdateOperation, a)
	}
	b := l.createConfigMap(t, "b", "1")
	l.sendToEdge(t, model.InsertOperation, b)
	if err := l.cp.Client.Delete(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	l.sendToEdge(t, model.DeleteOperation, b)
	if err := l.cp.Client.Delete(context.Background(), doomed); err != nil {
		t.Fatal(err)
	}
	l.sendToEdge(t, model.DeleteOperation, doomed)

	l.startEdge(t, store)
	l.waitConnected(t, 2)
	framework.Eventually(t, 30*time.Second, "edge state converges", func() bool {
		objs := store.Objects()
		_, hasB := objs[edgeKey("b")]
		_, hasDoomed := objs[edgeKey("doomed")]
		return objs[edgeKey("a")].ResourceVersion == a.ResourceVersion && !hasB && !hasDoomed
	})
	// Newest only: "a" arrived once, at its last version.
	var deliveriesOfA []string
	for _, m := range store.Received()[before:] {
		if m.GetResource() == edgeKey("a") {
			deliveriesOfA = append(deliveriesOfA, m.GetOperation()+"@"+m.GetResourceVersion())
		}
	}
	if len(deliveriesOfA) != 1 {
		t.Errorf("deliveries of a after reconnect = %v; want exactly one, at %s", deliveriesOfA, a.ResourceVersion)
	}
	assertObjectSync(t, l, a)
}

// A cloudcore restart loses its in-memory queues; ObjectSync and SyncController still get everything to the edge,
// and the edge reconnects by itself.
func TestCloudCoreRestartLosesNothing(t *testing.T) {
	l := startLink(t)
	store := framework.NewEdgeStore()
	edge := l.startEdge(t, store)
	l.waitConnected(t, 1)

	gone := l.createConfigMap(t, "gone", "1")
	l.sendToEdge(t, model.InsertOperation, gone)
	assertObjectSync(t, l, gone)

	// Queue work for an offline edge, then lose the queue with the process.
	edge.Stop()
	pending := l.createConfigMap(t, "pending", "1")
	l.sendToEdge(t, model.InsertOperation, pending)
	framework.Eventually(t, 20*time.Second, "ObjectSync of pending created", func() bool {
		var os v1alpha1.ObjectSync
		return l.cp.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: v1alpha1.SyncName(node, pending.UID)}, &os) == nil
	})
	if err := l.cp.Client.Delete(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	l.cloud.Stop()

	edge = l.startEdge(t, store)
	l.cloud = framework.StartCloud(t, l.cloud.Config)
	l.waitConnected(t, 1) // the new cloudcore's recorder starts empty
	framework.Eventually(t, 30*time.Second, "pending delivered and gone deleted after the restart", func() bool {
		objs := store.Objects()
		_, hasGone := objs[edgeKey("gone")]
		return objs[edgeKey("pending")].UID == string(pending.UID) && !hasGone
	})

	// The edge reconnects by itself across another restart, with no help.
	l.cloud.Stop()
	l.cloud = framework.StartCloud(t, l.cloud.Config)
	l.waitConnected(t, 1)
	late := l.createConfigMap(t, "late", "1")
	l.sendToEdge(t, model.InsertOperation, late)
	framework.Eventually(t, 20*time.Second, "late at the edge", func() bool { _, ok := store.Objects()[edgeKey("late")]; return ok })
	_ = edge
}

// Garbage from one node is dropped without disturbing another node's session.
func TestMalformedFramesDoNotHurtOtherNodes(t *testing.T) {
	l := startLink(t)
	store := framework.NewEdgeStore()
	l.startEdge(t, store)
	l.waitConnected(t, 1)

	conn := dialHubConn(t, l, nodeCertificate(t, l, "noisy"), "noisy")
	for _, frame := range [][]byte{[]byte("{not json"), []byte(`{"header":{"msg_id":1}}`), []byte(`{"route":{"operation":"bogus-op","resource":"x/y/z"}}`)} {
		if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			t.Fatalf("writing a malformed frame: %v", err)
		}
	}
	// Oversized: more than CloudHub's read limit.
	_ = conn.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 20<<20))
	conn.Close()

	cm := l.createConfigMap(t, "still-works", "1")
	l.sendToEdge(t, model.InsertOperation, cm)
	framework.Eventually(t, 20*time.Second, "edge1 still served", func() bool { _, ok := store.Objects()[edgeKey("still-works")]; return ok })
}

func mustJSON(t *testing.T, m model.Message) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cloudCA reads the CA cloudcore saved in kubeedge/casecret.
func cloudCA(t *testing.T, cp *framework.ControlPlane) (caDER, caKeyDER []byte) {
	t.Helper()
	var s corev1.Secret
	if err := cp.Client.Get(context.Background(), client.ObjectKey{Namespace: certificate.Namespace, Name: certificate.CASecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data[certificate.CADataKey], s.Data[certificate.CAKeyDataKey]
}

func requestEdgeCert(t *testing.T, server string, ca *x509.Certificate, nodeName, jwt string, csr []byte) (int, string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, server+"/edge.crt", bytes.NewReader(csr))
	req.Header.Set("NodeName", nodeName)
	req.Header.Set("Authorization", "Bearer "+jwt)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /edge.crt: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// nodeCertificate gets a real node certificate for name from the certificate service.
func nodeCertificate(t *testing.T, l *linkEnv, name string) tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	m, err := edgecerts.New(edgecerts.Config{
		NodeName: name, Token: l.token, HTTPServer: l.cloud.HTTPServer(),
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "node.crt"), KeyFile: filepath.Join(dir, "node.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatalf("getting a certificate for %s: %v", name, err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func hubDialer(t *testing.T, l *linkEnv, cert tls.Certificate) *websocket.Dialer {
	caDER, _ := cloudCA(t, l.cp)
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &websocket.Dialer{HandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
}

func hubHeaders(nodeID string) http.Header {
	h := http.Header{}
	h.Set("node_id", nodeID)
	h.Set("project_id", "e632aba927ea4ac2b575ec1603d56f10")
	return h
}

// dialHub attempts a connection and returns the refusal's status and body.
func dialHub(t *testing.T, l *linkEnv, cert tls.Certificate, nodeID string) (int, string) {
	t.Helper()
	conn, resp, err := hubDialer(t, l, cert).Dial("wss://"+l.cloud.WebSocketAddress()+"/p/"+nodeID+"/events", hubHeaders(nodeID))
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial failed without an HTTP answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func dialHubConn(t *testing.T, l *linkEnv, cert tls.Certificate, nodeID string) *websocket.Conn {
	t.Helper()
	conn, _, err := hubDialer(t, l, cert).Dial("wss://"+l.cloud.WebSocketAddress()+"/p/"+nodeID+"/events", hubHeaders(nodeID))
	if err != nil {
		t.Fatalf("dialing cloudhub as %s: %v", nodeID, err)
	}
	return conn
}
