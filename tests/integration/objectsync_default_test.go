//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	cloudcfg "github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/tests/framework"
)

// TestObjectSyncWithDefaultContentType runs cloudcore with the content type keadm init writes (protobuf, the
// default): ObjectSync is a CRD with no protobuf encoding, and with protobuf used for it every record failed
// ("does not implement the protobuf marshalling interface"), so nothing was recorded as delivered. The records
// must be written (what `kubectl get objectsyncs -A` lists), and no log line may mention protobuf.
func TestObjectSyncWithDefaultContentType(t *testing.T) {
	logs := captureKlog(t)
	l := startLink(t)
	if got := l.cloud.Config.KubeAPIConfig.ContentType; got != cloudcfg.NewDefaultCloudCore().KubeAPIConfig.ContentType ||
		got != cloudcfg.ContentTypeProtobuf {
		t.Fatalf("the harness runs cloudcore with contentType %q; want the default, %q", got, cloudcfg.ContentTypeProtobuf)
	}
	l.startEdge(t, framework.NewEdgeStore())
	l.waitConnected(t, 1)

	var cms []string
	for i := range 3 {
		cm := l.createConfigMap(t, fmt.Sprintf("default-content-type-%d", i), "1")
		l.sendToEdge(t, model.InsertOperation, cm)
		assertObjectSync(t, l, cm)
		cms = append(cms, v1alpha1.SyncName(node, cm.UID))
	}
	// kubectl get objectsyncs -A
	var list v1alpha1.ObjectSyncList
	if err := l.cp.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, rec := range list.Items {
		listed[rec.Name] = true
	}
	for _, name := range cms {
		if !listed[name] {
			t.Errorf("objectsyncs -A lists %d records, not %s", len(list.Items), name)
		}
	}
	// SyncController reads the records through the informer cache; let a few of its periods pass (500 ms in
	// tests) so that a failing list or watch would have been logged.
	time.Sleep(2 * time.Second)
	for _, line := range logs.lines() {
		if strings.Contains(strings.ToLower(line), "protobuf") {
			t.Errorf("log line about protobuf: %s", line)
		}
	}
}

// klogCapture keeps every klog line of the process (cloudcore and edgecore run in it) while a test runs, and
// still prints them.
type klogCapture struct {
	mu  sync.Mutex
	all []string
}

func (c *klogCapture) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.all...)
}

func (c *klogCapture) add(line string) {
	c.mu.Lock()
	c.all = append(c.all, line)
	c.mu.Unlock()
	fmt.Fprintln(os.Stderr, line)
}

func captureKlog(t *testing.T) *klogCapture {
	t.Helper()
	c := &klogCapture{}
	klog.SetLogger(logr.New(&captureSink{c: c}))
	t.Cleanup(func() {
		klog.Flush()
		klog.ClearLogger()
	})
	return c
}

type captureSink struct {
	c      *klogCapture
	name   string
	values []any
}

func (s *captureSink) Init(logr.RuntimeInfo)  {}
func (s *captureSink) Enabled(level int) bool { return level <= 2 }
func (s *captureSink) Info(level int, msg string, kv ...any) {
	s.c.add(fmt.Sprintf("I %s%q %s", s.prefix(), msg, s.kv(kv)))
}
func (s *captureSink) Error(err error, msg string, kv ...any) {
	s.c.add(fmt.Sprintf("E %s%q err=%q %s", s.prefix(), msg, fmt.Sprint(err), s.kv(kv)))
}
func (s *captureSink) WithValues(kv ...any) logr.LogSink {
	n := *s
	n.values = append(append([]any(nil), s.values...), kv...)
	return &n
}
func (s *captureSink) WithName(name string) logr.LogSink {
	n := *s
	n.name = strings.Trim(s.name+"/"+name, "/")
	return &n
}
func (s *captureSink) prefix() string {
	if s.name == "" {
		return ""
	}
	return s.name + ": "
}
func (s *captureSink) kv(kv []any) string {
	all := append(append([]any(nil), s.values...), kv...)
	var b strings.Builder
	for i := 0; i+1 < len(all); i += 2 {
		fmt.Fprintf(&b, "%v=%v ", all[i], all[i+1])
	}
	return strings.TrimSpace(b.String())
}
