package revocation

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/security/certs"
)

var testNow = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

type testCA struct {
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, key, err := certs.NewCA(testNow.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, key: key}
}

// issue signs a node certificate exactly as the certificate service does.
func (c *testCA) issue(t *testing.T, node string, at time.Time) *x509.Certificate {
	t.Helper()
	_, csr, err := certs.NewNodeCSR(node)
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.SignNodeCSR(c.ca, c.key, csr, node, nil, time.Hour, at)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func mustEncode(t *testing.T, v any) string {
	t.Helper()
	s, err := encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDecodeIgnoresMalformedEntries(t *testing.T) {
	data := map[string]string{
		"serial.1a2b":      mustEncode(t, SerialEntry{Node: "edge1", RevokedAt: testNow, NotAfter: testNow.Add(time.Hour)}),
		"serial.0x0A:FF":   mustEncode(t, SerialEntry{RevokedAt: testNow}), // another spelling, normalized
		"node.edge1":       mustEncode(t, NodeFloor{Before: testNow, Reason: "node deleted"}),
		"serial.zz":        mustEncode(t, SerialEntry{RevokedAt: testNow}),
		"serial.1234":      `{"revokedAt": "yesterday"}`,
		"serial.5678":      `{}`,
		"serial.9abc":      `{"revokedAt":"2031-01-02T03:04:05Z","extra":1}`,
		"node.Edge_1":      mustEncode(t, NodeFloor{Before: testNow}),
		"node.edge2":       `not json`,
		"node.edge3":       `{"before":"0001-01-01T00:00:00Z"}`,
		"node.edge4":       `{"before":"2031-01-02T03:04:05Z"} trailing`,
		"something-else":   "x",
		"serial.":          mustEncode(t, SerialEntry{RevokedAt: testNow}),
		"node.edge5":       mustEncode(t, NodeFloor{Before: testNow.Add(time.Second)}),
		"serial.deadbeef0": mustEncode(t, SerialEntry{RevokedAt: testNow}),
	}
	l, errs := Decode(data)
	if got := len(errs); got != 10 {
		t.Errorf("%d errors, want 10 (one per malformed entry): %v", got, errs)
	}
	for _, err := range errs {
		var ee *EntryError
		if !errors.As(err, &ee) || !strings.Contains(err.Error(), ee.Key) {
			t.Errorf("error %v does not name its entry", err)
		}
	}
	for _, s := range []string{"1a2b", "aff", "deadbeef0"} {
		if _, ok := l.Serials[s]; !ok {
			t.Errorf("valid serial entry %s dropped: %v", s, l.Serials)
		}
	}
	if len(l.Serials) != 3 || len(l.Nodes) != 2 {
		t.Errorf("list = %+v, want the 3 valid serials and 2 valid floors", l)
	}
	// Malformed entries never switch revocation off for the valid ones.
	ca := newTestCA(t)
	if err := l.Check(ca.issue(t, "edge1", testNow.Add(-time.Minute))); !errors.Is(err, ErrRevoked) {
		t.Errorf("floor of edge1 not applied next to malformed entries: %v", err)
	}
}

func TestCheck(t *testing.T) {
	ca := newTestCA(t)
	floor := testNow
	old := ca.issue(t, "edge1", floor.Add(-10*time.Minute))
	justBefore := ca.issue(t, "edge1", floor.Add(-time.Second))
	atFloor := ca.issue(t, "edge1", floor)
	fresh := ca.issue(t, "edge1", floor.Add(time.Minute))
	other := ca.issue(t, "edge2", floor.Add(-10*time.Minute))
	listed := ca.issue(t, "edge2", floor.Add(time.Hour))

	l := List{
		Serials: map[string]SerialEntry{SerialHex(listed.SerialNumber): {Node: "edge2", RevokedAt: testNow, Reason: "stolen"}},
		Nodes:   map[string]NodeFloor{"edge1": {Before: floor, Reason: "node deleted"}},
	}
	tests := []struct {
		name     string
		cert     *x509.Certificate
		node     string // "" means Check, which reads it from the certificate
		wantRule string // "" means not revoked
	}{
		{"issued long before the floor", old, "", RuleNode},
		{"issued a second before the floor", justBefore, "", RuleNode},
		{"issued at the floor", atFloor, "", ""},
		{"issued after the floor (NotBefore backdated before it)", fresh, "", ""},
		{"other node, no floor", other, "", ""},
		{"listed serial", listed, "", RuleSerial},
		{"legacy use on behalf of edge1", old, "edge1", RuleNode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.node != "" {
				err = l.CheckNode(tt.cert, tt.node)
			} else {
				err = l.Check(tt.cert)
			}
			if tt.wantRule == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var re *RevokedError
			if !errors.As(err, &re) || re.Rule != tt.wantRule || !errors.Is(err, ErrRevoked) {
				t.Fatalf("Check = %v, want a RevokedError with rule %s", err, tt.wantRule)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantRule) || !strings.Contains(msg, "keadm gettoken --rejoin") || strings.Contains(msg, "\n") {
				t.Errorf("message %q should be one line naming the rule and the way back", msg)
			}
		})
	}
	if err := (List{}).Check(old); err != nil {
		t.Errorf("empty list: %v", err)
	}
}

// A node deleted (floor at T) and joined again in the same second must not
// be refused, although its certificate's NotBefore is backdated 5 minutes
// and X.509 times have whole seconds.
func TestIssueTimeBackdating(t *testing.T) {
	ca := newTestCA(t)
	for _, offset := range []time.Duration{0, 1, 300 * time.Millisecond, 999 * time.Millisecond} {
		floor := testNow.Add(offset)
		l := List{Nodes: map[string]NodeFloor{"edge1": {Before: floor}}}
		for _, after := range []time.Duration{0, time.Nanosecond, 200 * time.Millisecond, 700 * time.Millisecond, 2 * time.Second} {
			now := floor.Add(after)
			issued := IssueTime(floor, now)
			if issued.Before(now.Truncate(time.Second)) || issued.After(now.Add(time.Second)) {
				t.Errorf("IssueTime(%v, %v) = %v: more than a second away", floor, now, issued)
			}
			cert := ca.issue(t, "edge1", issued)
			if err := l.Check(cert); err != nil {
				t.Errorf("floor %s, joined %s later: fresh certificate refused: %v", floor.Format(time.RFC3339Nano), after, err)
			}
			if !cert.NotBefore.Before(floor) {
				t.Errorf("NotBefore %v should stay backdated before the floor %v", cert.NotBefore, floor)
			}
		}
		// Without IssueTime, a certificate signed just after the floor but in
		// its second would look older: that is what IssueTime is for.
		if offset > 0 {
			if err := l.Check(ca.issue(t, "edge1", floor.Add(time.Nanosecond))); err == nil {
				t.Errorf("floor %v: a certificate dated within the floor's second should count as older", floor)
			}
		}
	}
	if got := IssueTime(time.Time{}, testNow); !got.Equal(testNow) {
		t.Errorf("no floor: IssueTime = %v", got)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{"1A2B": "1a2b", "0x00ff": "ff", "0A:1B:2C": "a1b2c", " abc ": "abc"} {
		if got, err := NormalizeSerial(in); err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "xyz", "0", "-1", "0x"} {
		if _, err := NormalizeSerial(bad); err == nil {
			t.Errorf("NormalizeSerial(%q): no error", bad)
		}
	}
	if got := SerialHex(big.NewInt(255)); got != "ff" {
		t.Errorf("SerialHex(255) = %q", got)
	}
}

func configMap(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ConfigMapName}, Data: data}
}

func readData(t *testing.T, kube *fake.Clientset) map[string]string {
	t.Helper()
	cm, err := kube.CoreV1().ConfigMaps(Namespace).Get(context.Background(), ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	expired := mustEncode(t, SerialEntry{RevokedAt: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(-time.Hour)})
	live := mustEncode(t, SerialEntry{RevokedAt: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(time.Hour)})
	forever := mustEncode(t, SerialEntry{RevokedAt: testNow.Add(-48 * time.Hour)})

	t.Run("creates the ConfigMap", func(t *testing.T) {
		kube := fake.NewClientset()
		f, err := RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow, Reason: ReasonKeadm}, testNow)
		if err != nil || !f.Before.Equal(testNow) {
			t.Fatalf("RevokeNode = %+v, %v", f, err)
		}
		l, errs := Decode(readData(t, kube))
		if len(errs) > 0 || !l.Nodes["edge1"].Before.Equal(testNow) {
			t.Errorf("stored list = %+v, %v", l, errs)
		}
	})
	t.Run("keeps a later floor", func(t *testing.T) {
		later := NodeFloor{Before: testNow.Add(time.Hour), Reason: "later"}
		kube := fake.NewClientset(configMap(map[string]string{NodeKey("edge1"): mustEncode(t, later)}))
		f, err := RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow}, testNow)
		if err != nil || f != later {
			t.Fatalf("RevokeNode = %+v, %v; want the later floor kept", f, err)
		}
	})
	t.Run("one deletion recorded once", func(t *testing.T) {
		first := NodeFloor{Before: testNow, Reason: ReasonNodeDeleted, NodeUID: "uid-1"}
		kube := fake.NewClientset(configMap(map[string]string{NodeKey("edge1"): mustEncode(t, first)}))
		f, err := RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow.Add(time.Second), Reason: ReasonNodeDeleted, NodeUID: "uid-1"}, testNow)
		if err != nil || f != first {
			t.Fatalf("RevokeNode = %+v, %v; want the first record of uid-1 kept", f, err)
		}
		f, err = RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow.Add(time.Second), Reason: ReasonNodeDeleted, NodeUID: "uid-2"}, testNow)
		if err != nil || f.NodeUID != "uid-2" {
			t.Fatalf("a later deletion of another Node: %+v, %v", f, err)
		}
	})
	t.Run("replaces a malformed floor, keeps other malformed entries", func(t *testing.T) {
		kube := fake.NewClientset(configMap(map[string]string{NodeKey("edge1"): "garbage", "serial.zz": "junk"}))
		if _, err := RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow}, testNow); err != nil {
			t.Fatal(err)
		}
		data := readData(t, kube)
		if data["serial.zz"] != "junk" || data[NodeKey("edge1")] == "garbage" {
			t.Errorf("data = %v", data)
		}
	})
	t.Run("serials: first revocation kept, expired pruned", func(t *testing.T) {
		kube := fake.NewClientset(configMap(map[string]string{"serial.a1": expired, "serial.b2": live, "serial.c3": forever, "serial.zz": "junk"}))
		e, err := RevokeSerial(ctx, kube, "B2", SerialEntry{RevokedAt: testNow}, testNow)
		if err != nil || !e.RevokedAt.Equal(testNow.Add(-48*time.Hour)) {
			t.Fatalf("RevokeSerial of a listed serial = %+v, %v; want the first revocation", e, err)
		}
		if _, err := RevokeSerial(ctx, kube, "0xD4", SerialEntry{Node: "edge9", RevokedAt: testNow, NotAfter: testNow.Add(time.Hour)}, testNow); err != nil {
			t.Fatal(err)
		}
		data := readData(t, kube)
		if _, ok := data["serial.a1"]; ok {
			t.Error("expired serial entry not pruned")
		}
		for _, k := range []string{"serial.b2", "serial.c3", "serial.d4", "serial.zz"} {
			if _, ok := data[k]; !ok {
				t.Errorf("%s missing: %v", k, data)
			}
		}
		if _, err := RevokeSerial(ctx, kube, "not hex", SerialEntry{RevokedAt: testNow}, testNow); err == nil {
			t.Error("bad serial accepted")
		}
	})
	t.Run("prune", func(t *testing.T) {
		kube := fake.NewClientset(configMap(map[string]string{"serial.a1": expired, "serial.b2": live, "node.edge1": mustEncode(t, NodeFloor{Before: testNow.Add(-1000 * time.Hour)})}))
		removed, err := Prune(ctx, kube, testNow)
		if err != nil || len(removed) != 1 || removed[0] != "serial.a1" {
			t.Fatalf("Prune = %v, %v", removed, err)
		}
		if data := readData(t, kube); len(data) != 2 {
			t.Errorf("after prune: %v", data)
		}
		// Nothing to do: no write, and no ConfigMap is created.
		empty := fake.NewClientset()
		if removed, err := Prune(ctx, empty, testNow); err != nil || len(removed) != 0 {
			t.Errorf("Prune without a list = %v, %v", removed, err)
		}
		if len(empty.Actions()) != 1 {
			t.Errorf("Prune without a list made %d calls, want only the get", len(empty.Actions()))
		}
	})
	t.Run("retries on conflict", func(t *testing.T) {
		kube := fake.NewClientset(configMap(map[string]string{}))
		conflicts := 2
		kube.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			if conflicts > 0 {
				conflicts--
				return true, nil, errConflict()
			}
			return false, nil, nil
		})
		if _, err := RevokeNode(ctx, kube, "edge1", NodeFloor{Before: testNow}, testNow); err != nil {
			t.Fatal(err)
		}
		if _, ok := readData(t, kube)[NodeKey("edge1")]; !ok || conflicts != 0 {
			t.Errorf("floor not written after conflicts (%d left)", conflicts)
		}
	})
}

func errConflict() error {
	return apierrors.NewConflict(corev1.Resource("configmaps"), ConfigMapName, errors.New("the object has been modified"))
}
