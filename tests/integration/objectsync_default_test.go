//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
	logs := framework.FailOnErrorLogs(t)
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
	for _, line := range logs.Lines() {
		if strings.Contains(strings.ToLower(line), "protobuf") {
			t.Errorf("log line about protobuf: %s", line)
		}
	}
}
