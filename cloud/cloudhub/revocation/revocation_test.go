package revocation

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/pkg/security/certs"
	rev "github.com/tether-edge/tether/pkg/security/revocation"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

const waitTimeout = 10 * time.Second

// clock is a settable time for the Manager.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

type env struct {
	t       *testing.T
	kube    *fake.Clientset
	m       *Manager
	clock   *clock
	reg     *prometheus.Registry
	changes atomic.Int64
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
}

func newEnv(t *testing.T, withNodes bool, objs ...runtime.Object) *env {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	e := &env{t: t, kube: fake.NewClientset(objs...), clock: &clock{now: now}, reg: prometheus.NewRegistry()}
	ca, key, err := certs.NewCA(now.Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.ca, e.caKey = ca, key
	opts := Options{Kube: e.kube, Now: e.clock.Now, Registerer: e.reg}
	ctx, cancel := context.WithCancel(context.Background())
	var factory informers.SharedInformerFactory
	if withNodes {
		factory = informers.NewSharedInformerFactory(e.kube, 0)
		opts.NodeInformer = factory.Core().V1().Nodes().Informer()
	}
	e.m, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.m.Subscribe(func() { e.changes.Add(1) })
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	if factory != nil {
		factory.Start(ctx.Done())
		factory.WaitForCacheSync(ctx.Done())
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		if factory != nil {
			factory.Shutdown()
		}
	})
	e.eventually("list loaded", e.m.Ready)
	return e
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) cert(node string, at time.Time) *x509.Certificate {
	e.t.Helper()
	_, csr, err := certs.NewNodeCSR(node)
	if err != nil {
		e.t.Fatal(err)
	}
	der, err := certs.SignNodeCSR(e.ca, e.caKey, csr, node, nil, 30*24*time.Hour, at)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) setData(data map[string]string) {
	e.t.Helper()
	ctx := context.Background()
	cms := e.kube.CoreV1().ConfigMaps(rev.Namespace)
	cm, err := cms.Get(ctx, rev.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: rev.ConfigMapName}, Data: data}, metav1.CreateOptions{})
	} else {
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) data() map[string]string {
	e.t.Helper()
	cm, err := e.kube.CoreV1().ConfigMaps(rev.Namespace).Get(context.Background(), rev.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return cm.Data
}

func encode(t *testing.T, v any) string {
	t.Helper()
	var s string
	var err error
	switch x := v.(type) {
	case rev.SerialEntry:
		s, err = rev.EncodeSerial(x)
	case rev.NodeFloor:
		s, err = rev.EncodeNode(x)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func edgeNode(name, uid string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid), Labels: map[string]string{EdgeRoleLabel: ""}}}
}

func TestNotReadyRefuses(t *testing.T) {
	m, err := New(Options{Kube: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(&x509.Certificate{}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Check before the list is read = %v, want %v", err, ErrNotReady)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a client: no error")
	}
}

func TestConfigMapChanges(t *testing.T) {
	e := newEnv(t, false)
	now := e.clock.Now()
	victim := e.cert("edge1", now.Add(-time.Hour))
	stolen := e.cert("edge2", now.Add(-time.Hour))
	bystander := e.cert("edge3", now.Add(-time.Hour))
	for _, c := range []*x509.Certificate{victim, stolen, bystander} {
		if err := e.m.Check(c); err != nil {
			t.Fatalf("no list yet: Check = %v", err)
		}
	}

	before := e.changes.Load()
	e.setData(map[string]string{
		rev.NodeKey("edge1"):                              encode(t, rev.NodeFloor{Before: now, Reason: "keadm revoke"}),
		rev.SerialKey(rev.SerialHex(stolen.SerialNumber)): encode(t, rev.SerialEntry{RevokedAt: now, NotAfter: stolen.NotAfter}),
		"node.edge3":    "{broken",
		"serial.nothex": encode(t, rev.SerialEntry{RevokedAt: now}),
	})
	e.eventually("revocations applied", func() bool { return e.m.Check(victim) != nil && e.m.Check(stolen) != nil })
	var re *rev.RevokedError
	if err := e.m.Check(victim); !errors.As(err, &re) || re.Rule != rev.RuleNode {
		t.Errorf("victim: %v, want rule %s", err, rev.RuleNode)
	}
	if err := e.m.Check(stolen); !errors.As(err, &re) || re.Rule != rev.RuleSerial {
		t.Errorf("stolen: %v, want rule %s", err, rev.RuleSerial)
	}
	// The malformed floor of edge3 is ignored: edge3 is neither cut off nor
	// does the bad entry spoil the others.
	if err := e.m.Check(bystander); err != nil {
		t.Errorf("bystander with a malformed entry: %v", err)
	}
	if e.changes.Load() == before {
		t.Error("subscribers were not told")
	}
	if got := testutil.ToFloat64(e.m.entries.WithLabelValues("malformed")); got != 2 {
		t.Errorf("malformed entries gauge = %v, want 2", got)
	}
	if err := e.m.Check(e.cert("edge1", e.m.IssueTime("edge1", now))); err != nil {
		t.Errorf("a certificate dated by IssueTime after the floor: %v", err)
	}

	// Deleting the list is an administrator's choice: nothing is revoked.
	if err := e.kube.CoreV1().ConfigMaps(rev.Namespace).Delete(context.Background(), rev.ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("list cleared", func() bool { return e.m.Check(victim) == nil })
}

func TestNodeDeletion(t *testing.T) {
	kubelet := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker1", UID: "uid-w"}}
	gone := edgeNode("edge1", "uid-1")
	racing := edgeNode("edge2", "uid-2")
	e := newEnv(t, true, gone, racing, kubelet)
	ctx := context.Background()
	old := e.cert("edge1", e.clock.Now().Add(-time.Minute))
	oldKubelet := e.cert("worker1", e.clock.Now().Add(-time.Minute))

	e.clock.Set(e.clock.Now().Add(10 * time.Second))
	if err := e.kube.CoreV1().Nodes().Delete(ctx, "edge1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.kube.CoreV1().Nodes().Delete(ctx, "worker1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("old certificate of the deleted node refused", func() bool { return errors.Is(e.m.Check(old), rev.ErrRevoked) })
	e.eventually("floor written to the ConfigMap", func() bool {
		l, _ := rev.Decode(e.data())
		f, ok := l.Nodes["edge1"]
		return ok && f.NodeUID == "uid-1" && f.Reason == rev.ReasonNodeDeleted
	})
	if _, ok := e.data()[rev.NodeKey("worker1")]; ok {
		t.Error("deleting a kubelet node wrote a floor")
	}
	if err := e.m.Check(oldKubelet); err != nil {
		t.Errorf("kubelet node: %v", err)
	}
	// The node joins again right after, in the same second: not refused.
	fresh := e.cert("edge1", e.m.IssueTime("edge1", e.clock.Now()))
	if err := e.m.Check(fresh); err != nil {
		t.Errorf("fresh certificate after deletion: %v", err)
	}

	// NodeGone: the API server no longer has edge2 but the watch has not
	// told yet (the cache still holds it); the deletion is recorded at once,
	// and the later event does not move the floor past a certificate issued
	// in between.
	e.clock.Set(e.clock.Now().Add(10 * time.Second))
	e.m.NodeGone("edge2")
	e.m.mu.RLock()
	f, ok := e.m.effective.Nodes["edge2"]
	e.m.mu.RUnlock()
	if !ok || f.NodeUID != "uid-2" {
		t.Fatalf("NodeGone did not record the deletion: %+v", f)
	}
	issued := e.m.IssueTime("edge2", e.clock.Now())
	between := e.cert("edge2", issued)
	e.clock.Set(e.clock.Now().Add(10 * time.Second))
	if err := e.kube.CoreV1().Nodes().Delete(ctx, "edge2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("edge2 floor written", func() bool {
		l, _ := rev.Decode(e.data())
		return l.Nodes["edge2"].NodeUID == "uid-2"
	})
	time.Sleep(50 * time.Millisecond) // let the delete event through
	if err := e.m.Check(between); err != nil {
		t.Errorf("certificate issued between NodeGone and the delete event: %v", err)
	}
	l, _ := rev.Decode(e.data())
	if !l.Nodes["edge2"].Before.Equal(f.Before) {
		t.Errorf("floor moved from %v to %v by the late delete event", f.Before, l.Nodes["edge2"].Before)
	}
	// Unknown node: nothing happens.
	e.m.NodeGone("never-existed")
	if _, ok := e.data()[rev.NodeKey("never-existed")]; ok {
		t.Error("NodeGone for an unknown node wrote a floor")
	}
}

func TestRevokeNode(t *testing.T) {
	e := newEnv(t, false)
	now := e.clock.Now()
	old := e.cert("edge1", now.Add(-time.Minute))
	if err := e.m.RevokeNode(context.Background(), "edge1", now, rev.ReasonRejoined); err != nil {
		t.Fatal(err)
	}
	// Applied at once, before the watch brings the write back.
	if err := e.m.Check(old); !errors.Is(err, rev.ErrRevoked) {
		t.Errorf("Check right after RevokeNode = %v", err)
	}
	l, _ := rev.Decode(e.data())
	if f := l.Nodes["edge1"]; !f.Before.Equal(now) || f.Reason != rev.ReasonRejoined {
		t.Errorf("stored floor = %+v", f)
	}

	failing := newEnv(t, false)
	failing.kube.PrependReactor("*", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver down")
	})
	if err := failing.m.RevokeNode(context.Background(), "edge1", now, rev.ReasonRejoined); err == nil {
		t.Error("RevokeNode with a failing API server: no error")
	}
	if err := failing.m.Check(failing.cert("edge1", now.Add(-time.Minute))); err != nil {
		t.Errorf("a failed RevokeNode must not revoke locally either: %v", err)
	}
}

func TestPrune(t *testing.T) {
	now := time.Now()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: rev.ConfigMapName}, Data: map[string]string{}}
	cm.Data["serial.a1"] = encode(t, rev.SerialEntry{RevokedAt: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)})
	cm.Data["serial.b2"] = encode(t, rev.SerialEntry{RevokedAt: now.Add(-72 * time.Hour), NotAfter: now.Add(time.Hour)})
	cm.Data["node.edge1"] = encode(t, rev.NodeFloor{Before: now.Add(-72 * time.Hour)})
	e := newEnv(t, false, cm)
	e.eventually("expired serial pruned", func() bool { _, ok := e.data()["serial.a1"]; return !ok })
	if d := e.data(); len(d) != 2 {
		t.Errorf("after pruning: %v", d)
	}
}
