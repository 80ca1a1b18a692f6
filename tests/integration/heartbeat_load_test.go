//go:build integration

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

// TestNodeStaysReadyUnderTwinLoad is issue #12 item 7, shortened (tests/perf TestHeartbeatUnderTwinLoad is the
// full minute): a mapper publishes 1,000 twin reports a second for 15 s to a whole edge node (Edged on containerd,
// MetaManager, DeviceTwin, embedded broker; EdgeHub at the shipped 30 messages a second): the node stays Ready, its
// lastHeartbeatTime, read every second, never falls more than a few intervals behind, and the last report arrives.
// Device reports used to queue ahead of node status in EdgeHub's single outbox until the status patches timed out:
// the heartbeat age then grew with the backlog (17.7 s 15 s into this load, at a 2 s interval) and the last value
// never arrived. The bounds are loose on purpose (a loaded CI machine under -race is slow); the measurement with
// numbers is tests/perf TestHeartbeatUnderTwinLoad.
func TestNodeStaysReadyUnderTwinLoad(t *testing.T) {
	const (
		rate     = 1000
		duration = 15 * time.Second
	)
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	ctd := framework.StartContainerd(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeNodeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"), ctd)
	freq := cfg.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency.Duration
	if def := edgecfg.NewDefaultEdgeCore().Modules.EdgeHub; cfg.Modules.EdgeHub.MessageQPS != def.MessageQPS {
		t.Fatalf("harness EdgeHub messageQPS %d, want the shipped %d", cfg.Modules.EdgeHub.MessageQPS, def.MessageQPS)
	}
	cfg.Modules.DeviceTwin.Enable = true
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", framework.FreePort(t))
	eb := cfg.Modules.EventBus
	eb.Enable, eb.MQTTMode, eb.MQTTServerInternal = true, edgecfg.MQTTModeInternal, broker
	framework.StartEdgeNode(t, cfg)
	waitNodeReady(t, cp)

	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	for _, f := range []string{"kubeedge-counter-model.yaml", "kubeedge-counter-instance.yaml"} {
		framework.Eventually(t, 30*time.Second, "kubectl create -f "+f, func() bool {
			_, err := cp.Kubectl(ctx, "create", "-f", filepath.Join(crds, f))
			return err == nil
		})
	}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("load-mapper-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetAutoReconnect(true)
	mapper := mqtt.NewClient(opts)
	if tok := mapper.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper cannot connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { mapper.Disconnect(100) })
	reported := func(value string) bool {
		var d devicesv1alpha2.Device
		return cp.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "counter"}, &d) == nil &&
			len(d.Status.Twins) > 0 && d.Status.Twins[0].Reported.Value == value
	}
	// DeviceTwin learns of the Device from the cloud some time after it is created; until then reports are refused.
	var last time.Time
	framework.Eventually(t, 30*time.Second, "a first report in the API server", func() bool {
		if time.Since(last) > time.Second {
			mapper.Publish("$hw/events/device/counter/twin/update", 1, false, framework.TwinReport("status", "warm-up"))
			last = time.Now()
		}
		return reported("warm-up")
	})

	sampler := framework.SampleHeartbeat(t, cp.Client, node, time.Second)
	start := time.Now()
	res, err := framework.TwinLoad{Client: mapper, Device: "counter", Property: "status", PerSecond: rate, Duration: duration}.Run(ctx)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	end := time.Now()
	// One more interval: a status patch held back during the load would show here.
	time.Sleep(freq)
	samples := sampler.Stop()

	sum := framework.SummarizeHeartbeat(samples, start, time.Now())
	t.Logf("%d reports in %.1fs (%.1fs behind schedule); over %d samples: max heartbeat age %.1fs (at +%.0fs), %d not Ready, %d read errors",
		res.Published, end.Sub(start).Seconds(), res.Behind.Seconds(), sum.Samples, sum.MaxAgeSec, sum.MaxAgeAtSec, sum.NotReady, sum.Errors)
	if sum.Samples < int(duration.Seconds()) {
		t.Errorf("only %d heartbeat samples over %s", sum.Samples, duration)
	}
	limit := 6 * freq
	for _, s := range samples {
		if s.At.Before(start) {
			continue
		}
		switch {
		case s.Err != nil:
			t.Errorf("+%.0fs: reading node: %v", s.At.Sub(start).Seconds(), s.Err)
		case s.Age > limit:
			t.Errorf("+%.0fs: lastHeartbeatTime %.1fs old, want at most %s (6 x nodeStatusUpdateFrequency)", s.At.Sub(start).Seconds(), s.Age.Seconds(), limit)
		case s.Ready != corev1.ConditionTrue:
			t.Errorf("+%.0fs: node Ready=%s", s.At.Sub(start).Seconds(), s.Ready)
		}
	}
	// Coalesced on the way, but the last value must arrive.
	framework.Eventually(t, time.Minute, "the last report "+res.Last+" in the API server", func() bool { return reported(res.Last) })
}
