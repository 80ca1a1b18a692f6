//go:build perf

package perf

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

const (
	loadRate     = 1000 // twin reports per second
	loadDuration = 60 * time.Second
	loadBaseline = 10 * time.Second // sampled before the load
	loadAfter    = 60 * time.Second // sampled after the load
)

type heartbeatRun struct {
	Machine *machine `json:"machine"`
	Note    string   `json:"note"`
	Config  struct {
		NodeStatusUpdateFrequencyS float64 `json:"node_status_update_frequency_s"`
		EdgeHubHeartbeatS          float64 `json:"edgehub_heartbeat_s"`
		MessageQPS                 int32   `json:"edgehub_message_qps"`
		MessageBurst               int32   `json:"edgehub_message_burst"`
		ReportsPerSecond           int     `json:"reports_per_second"`
		LoadSeconds                float64 `json:"load_s"`
	} `json:"config"`
	Published        int                                   `json:"reports_published"`
	PublisherBehindS float64                               `json:"publisher_behind_schedule_s"`
	FinalValueLanded bool                                  `json:"final_value_in_api"`
	FinalValueAfterS float64                               `json:"final_value_in_api_after_load_s"`
	Phases           map[string]framework.HeartbeatSummary `json:"phases"`
	CPU              cpuUse                                `json:"cpu_during_load"`
	AgeSeries        []float64                             `json:"heartbeat_age_every_second_s"`
	ReadySeries      string                                `json:"ready_every_second"`
}

// TestHeartbeatUnderTwinLoad is issue #12 item 7: a mapper publishes 1,000 twin reports per second for 60 s to a
// whole edge node (Edged on containerd, MetaManager, DeviceTwin, embedded broker) with the shipped EdgeHub and
// node-status settings, while kube-controller-manager watches the node. Every second the test reads the Node's
// Ready condition and the age of its lastHeartbeatTime, from 10 s before the load to 60 s after it, and checks the
// last report reaches the API server. It writes $OUTPUT/perf/heartbeat-under-twin-load.json:
//
//	go test -tags perf -run TestHeartbeatUnderTwinLoad -v -timeout 15m ./tests/perf/
func TestHeartbeatUnderTwinLoad(t *testing.T) {
	began := time.Now()
	ctx := context.Background()
	run := heartbeatRun{Machine: newMachine(), Phases: map[string]framework.HeartbeatSummary{},
		Note: "one machine runs API server, etcd, controller-manager, cloudcore, edgecore, containerd and the mapper"}

	cp := framework.StartControlPlane(t)
	framework.StartKubeControllers(t, cp)
	ctd := framework.StartContainerd(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeNodeConfig(t, cloud, deviceNode, framework.Token(t, cp), filepath.Join(dir, "edge"), ctd)
	// The shipped timing, not the harness's 2 s: the node-status interval and EdgeHub keepalive decide how soon
	// a starved node goes stale.
	defaults := edgecfg.NewDefaultEdgeCore()
	cfg.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency = defaults.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency
	cfg.Modules.EdgeHub.Heartbeat = defaults.Modules.EdgeHub.Heartbeat
	cfg.Modules.DeviceTwin.Enable = true
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", framework.FreePort(t))
	eb := cfg.Modules.EventBus
	eb.Enable, eb.MQTTMode, eb.MQTTServerInternal = true, edgecfg.MQTTModeInternal, broker
	hub := cfg.Modules.EdgeHub
	run.Config.NodeStatusUpdateFrequencyS = cfg.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency.Seconds()
	run.Config.EdgeHubHeartbeatS = float64(hub.Heartbeat)
	run.Config.MessageQPS, run.Config.MessageBurst = hub.MessageQPS, hub.MessageBurst
	run.Config.ReportsPerSecond, run.Config.LoadSeconds = loadRate, loadDuration.Seconds()
	framework.StartEdgeNode(t, cfg)

	waitReady(t, cp.Client, 90*time.Second)
	applyCounter(t, cp)
	mapper := connectLoadMapper(t, broker)
	waitReported(t, cp.Client, mapper, "warm-up", 60*time.Second)

	sampler := framework.SampleHeartbeat(t, cp.Client, deviceNode, time.Second)
	time.Sleep(loadBaseline)
	loadStart := time.Now()
	cpu := takeCPU(ctd.Dir)
	res, err := framework.TwinLoad{Client: mapper, Device: "counter", Property: "status", PerSecond: loadRate,
		Duration: loadDuration}.Run(ctx)
	if err != nil {
		t.Errorf("load: %v", err)
	}
	loadEnd := time.Now()
	run.CPU = cpuBetween(cpu, takeCPU(ctd.Dir))
	run.Published, run.PublisherBehindS = res.Published, res.Behind.Seconds()
	landed := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(loadAfter)
		for time.Now().Before(deadline) {
			var d devicesv1alpha2.Device
			if cp.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "counter"}, &d) == nil &&
				len(d.Status.Twins) > 0 && d.Status.Twins[0].Reported.Value == res.Last {
				landed <- time.Now()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		close(landed)
	}()
	time.Sleep(time.Until(loadEnd.Add(loadAfter)))
	samples := sampler.Stop()
	if at, ok := <-landed; ok {
		run.FinalValueLanded, run.FinalValueAfterS = true, ms(at.Sub(loadEnd))/1000
	}

	run.Phases["before"] = framework.SummarizeHeartbeat(samples, loadStart.Add(-loadBaseline), loadStart)
	run.Phases["load"] = framework.SummarizeHeartbeat(samples, loadStart, loadEnd)
	run.Phases["after"] = framework.SummarizeHeartbeat(samples, loadEnd, loadEnd.Add(loadAfter))
	for _, s := range samples {
		run.AgeSeries = append(run.AgeSeries, float64(s.Age.Milliseconds()/100)/10)
		switch s.Ready {
		case corev1.ConditionTrue:
			run.ReadySeries += "R"
		case "":
			run.ReadySeries += "?"
		default:
			run.ReadySeries += "N"
		}
	}
	run.Machine.finish(began)
	writeSummary(t, "heartbeat-under-twin-load", run)
	t.Logf("published %d reports in %.1fs (behind schedule %.1fs); last value in the API: %v after %.1fs",
		run.Published, res.Elapsed.Seconds(), run.PublisherBehindS, run.FinalValueLanded, run.FinalValueAfterS)
	for _, p := range []string{"before", "load", "after"} {
		s := run.Phases[p]
		t.Logf("%-6s samples %3d  max heartbeat age %5.1fs (at +%.0fs)  not Ready %3d (first at +%.0fs)  errors %d",
			p, s.Samples, s.MaxAgeSec, s.MaxAgeAtSec, s.NotReady, s.FirstNotReadySec, s.Errors)
	}
	t.Logf("Ready every second (R ready, N not ready, ? unread), load from sample %d:\n%s", int(loadBaseline.Seconds()), run.ReadySeries)
	t.Logf("CPU during the load: machine busy %.0f%% over %.1fs; seconds by process %v", run.CPU.BusyPercent, run.CPU.WallSec, run.CPU.Seconds)
}

func waitReady(t *testing.T, c client.Client, timeout time.Duration) {
	t.Helper()
	framework.Eventually(t, timeout, "node "+deviceNode+" Ready", func() bool {
		var n corev1.Node
		if err := c.Get(context.Background(), client.ObjectKey{Name: deviceNode}, &n); err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	})
}

func applyCounter(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	for _, f := range []string{"kubeedge-counter-model.yaml", "kubeedge-counter-instance.yaml"} {
		framework.Eventually(t, 30*time.Second, "kubectl apply -f "+f, func() bool {
			_, err := cp.Kubectl(context.Background(), "apply", "-f", filepath.Join(crds, f))
			return err == nil
		})
	}
}

func connectLoadMapper(t *testing.T, broker string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("load-mapper-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetAutoReconnect(true)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper cannot connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// waitReported publishes value until the Device's reported value shows it: DeviceTwin learns about the Device
// from the cloud's membership update some time after it is created.
func waitReported(t *testing.T, c client.Client, mapper mqtt.Client, value string, timeout time.Duration) {
	t.Helper()
	last := time.Time{}
	framework.Eventually(t, timeout, "reported value "+value, func() bool {
		if time.Since(last) > 2*time.Second {
			mapper.Publish("$hw/events/device/counter/twin/update", 1, false, framework.TwinReport("status", value))
			last = time.Now()
		}
		var d devicesv1alpha2.Device
		return c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "counter"}, &d) == nil &&
			len(d.Status.Twins) > 0 && d.Status.Twins[0].Reported.Value == value
	})
}
