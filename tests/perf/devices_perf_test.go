//go:build perf

package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/edge/devicetwin"
	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/twin"
	"github.com/tether-edge/tether/tests/framework"
)

const (
	// deviceNode is the node the tutorial's counter Device is bound to.
	deviceNode     = "edge1"
	deviceSamples  = 200
	deviceWarmup   = 5
	deviceTimeout  = 10 * time.Second
	counterTopic   = "$hw/events/device/counter/twin/"
	topicDelta     = counterTopic + "update/delta"
	topicResult    = counterTopic + "update/result"
	topicUpdate    = counterTopic + "update"
	kindDelta      = "delta"    // value in a delta at the mapper
	kindResult     = "result"   // actual value in an update/result at the mapper
	kindDesired    = "desired"  // desired value seen by the test's Device watch
	kindReported   = "reported" // reported value seen by the test's Device watch
	desiredStageDn = "patch sent -> delta at mapper (total)"
	reportStageTot = "report published -> reported in API watch (total)"
)

// Stages split each path at what the test can see: its own Device watch (a stand-in for cloudcore's informer, in
// another process of the same API server), the edge's payload timestamps (Unix ms, so ±1 ms) and arrivals at the
// mapper. With mosquitto the update/result stage is inflated by ~40 ms: mosquitto leaves Nagle on by default
// (set_tcp_nodelay false), so the result, written right after the PUBACK of the mapper's own publish, waits for
// the mapper's delayed ACK. The path to the API server does not wait for the result.
var (
	desiredStages = []string{desiredStageDn, "patch call (API write + response)", "patch sent -> desired in test's watch",
		"test's watch -> edge built delta (cloud + websocket + twin)", "edge built delta -> mapper (EventBus + broker)"}
	apiStages    = []string{"GET device", "merge PATCH with resourceVersion", "GET + PATCH"}
	reportStages = []string{reportStageTot, "report published -> update/result at mapper (edge twin)",
		"update/result -> reported in watch (outbox + websocket + cloud patch + watch)"}
)

// arrivals records when each value was first seen, per kind, and the edge's own timestamp of the payload.
type arrivals struct {
	mu      sync.Mutex
	first   map[string]time.Time
	edgeTS  map[string]int64 // payload timestamp (edge clock, Unix ms)
	order   map[string][]string
	count   map[string]int // MQTT messages received per topic
	changed chan struct{}
}

func newArrivals() *arrivals {
	return &arrivals{first: map[string]time.Time{}, edgeTS: map[string]int64{}, order: map[string][]string{},
		count: map[string]int{}, changed: make(chan struct{})}
}

func (a *arrivals) note(kind, value string, at time.Time, ts int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := kind + "\x00" + value
	if _, seen := a.first[k]; seen {
		return
	}
	a.first[k], a.edgeTS[k] = at, ts
	a.order[kind] = append(a.order[kind], value)
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *arrivals) received(topic string) {
	a.mu.Lock()
	a.count[topic]++
	a.mu.Unlock()
}

func (a *arrivals) counts() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int, len(a.count))
	for k, v := range a.count {
		out[strings.TrimPrefix(k, counterTopic)] = v
	}
	return out
}

func (a *arrivals) get(kind, value string) (time.Time, int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.first[kind+"\x00"+value]
	return at, a.edgeTS[kind+"\x00"+value], ok
}

// wait returns when value of kind was first seen, waiting up to timeout.
func (a *arrivals) wait(kind, value string, timeout time.Duration) (time.Time, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		at, ok := a.first[kind+"\x00"+value]
		ch := a.changed
		a.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return time.Time{}, false
		}
	}
}

func (a *arrivals) seen(kind, prefix string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, v := range a.order[kind] {
		if strings.HasPrefix(v, prefix) {
			out = append(out, v)
		}
	}
	return out
}

// deviceBench is the device path of devices_e2e_test.go (API server, in-process cloudcore and edgecore with
// DeviceTwin and EventBus, a broker, an MQTT client as the mapper) plus a Device watch.
type deviceBench struct {
	cp     *framework.ControlPlane
	client client.WithWatch
	mapper mqtt.Client
	seen   *arrivals
}

func startDeviceBench(t *testing.T, embedded bool) *deviceBench {
	t.Helper()
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeConfig(t, cloud, deviceNode, framework.Token(t, cp), filepath.Join(dir, "edge"))
	// The node joins while its name is free, as keadm join does: a join token cannot claim an existing Node. Then
	// stand in for Edged's registration.
	framework.BootstrapEdge(t, cfg)
	if err := cp.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: deviceNode}}); err != nil {
		t.Fatal(err)
	}
	cfg.Modules.MetaManager.Enable = true
	cfg.Modules.DeviceTwin.Enable = true
	eb := cfg.Modules.EventBus
	eb.Enable = true
	var broker string
	if embedded {
		broker = fmt.Sprintf("tcp://127.0.0.1:%d", framework.FreePort(t))
		eb.MQTTMode, eb.MQTTServerInternal = edgecfg.MQTTModeInternal, broker
	} else {
		broker = framework.StartMosquitto(t)
		eb.MQTTMode, eb.MQTTServerExternal = edgecfg.MQTTModeExternal, broker
	}
	framework.StartEdgeNode(t, cfg)

	rc := rest.CopyConfig(cp.Config)
	rc.QPS, rc.Burst = 1000, 1000
	wc, err := client.NewWithWatch(rc, client.Options{Scheme: cp.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	b := &deviceBench{cp: cp, client: wc, seen: newArrivals()}
	b.mapper = b.connectMapper(t, broker)

	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	for _, f := range []string{"kubeedge-counter-model.yaml", "kubeedge-counter-instance.yaml"} {
		framework.Eventually(t, 30*time.Second, "kubectl create -f "+f, func() bool {
			_, err := cp.Kubectl(ctx, "create", "-f", filepath.Join(crds, f))
			return err == nil
		})
	}
	if _, ok := b.seen.wait("membership", "counter", 30*time.Second); !ok {
		t.Fatal("no membership/updated with counter at the mapper within 30s")
	}
	b.watchDevice(t)
	return b
}

// connectMapper subscribes to the counter's twin topics and to membership updates; handlers note arrival
// times first thing.
func (b *deviceBench) connectMapper(t *testing.T, broker string) mqtt.Client {
	t.Helper()
	subscribed := make(chan error, 1)
	handle := func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		b.seen.received(m.Topic())
		switch topic := m.Topic(); {
		case topic == topicDelta:
			var d devicetwin.DeviceTwinDelta
			if json.Unmarshal(m.Payload(), &d) == nil {
				if v, ok := d.Delta["status"]; ok {
					b.seen.note(kindDelta, v, at, d.Timestamp)
				}
			}
		case topic == topicResult:
			var r twin.DeviceTwinUpdate
			if json.Unmarshal(m.Payload(), &r) == nil && r.Twin["status"] != nil && r.Twin["status"].Actual != nil &&
				r.Twin["status"].Actual.Value != nil {
				b.seen.note(kindResult, *r.Twin["status"].Actual.Value, at, r.Timestamp)
			}
		case strings.HasSuffix(topic, "/membership/updated") && strings.Contains(string(m.Payload()), `"counter"`):
			b.seen.note("membership", "counter", at, 0)
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("perf-mapper-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetAutoReconnect(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			tok := c.SubscribeMultiple(map[string]byte{counterTopic + "update/+": 1, "$hw/events/node/+/membership/updated": 1}, handle)
			tok.Wait()
			select {
			case subscribed <- tok.Error():
			default:
			}
		})
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper cannot connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("mapper cannot subscribe: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mapper not subscribed within 30s")
	}
	return c
}

// watchDevice notes, for every event on Device default/counter, when each desired and reported value first
// appears. It re-watches if the API server ends the watch.
func (b *deviceBench) watchDevice(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for first := true; ctx.Err() == nil; first = false {
			w, err := b.client.Watch(ctx, &devicesv1alpha2.DeviceList{}, client.InNamespace("default"),
				client.MatchingFields{"metadata.name": "counter"})
			if first {
				started <- err
			}
			if err != nil {
				if !first {
					time.Sleep(100 * time.Millisecond)
				}
				if first {
					return
				}
				continue
			}
			for ev := range w.ResultChan() {
				at := time.Now()
				d, ok := ev.Object.(*devicesv1alpha2.Device)
				if !ok || ev.Type == watch.Deleted || len(d.Status.Twins) == 0 {
					continue
				}
				b.seen.note(kindDesired, d.Status.Twins[0].Desired.Value, at, 0)
				b.seen.note(kindReported, d.Status.Twins[0].Reported.Value, at, 0)
			}
			w.Stop()
		}
	}()
	if err := <-started; err != nil {
		cancel()
		t.Fatalf("watching devices: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
}

func (b *deviceBench) setDesired(ctx context.Context, value string) error {
	patch := fmt.Sprintf(`[{"op":"replace","path":"/status/twins/0/desired/value","value":%q}]`, value)
	dev := &devicesv1alpha2.Device{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "counter"}}
	return b.client.Patch(ctx, dev, client.RawPatch(types.JSONPatchType, []byte(patch)))
}

func (b *deviceBench) report(value string) mqtt.Token {
	payload := fmt.Sprintf(`{"event_id":"","timestamp":%d,"twin":{"status":{"actual":{"value":%q},"metadata":{"type":"Updated"}}}}`,
		time.Now().UnixMilli(), value)
	return b.mapper.Publish(topicUpdate, 1, false, payload)
}

// edgeTime is a payload timestamp (Unix ms) as a time.
func edgeTime(ms int64) time.Time { return time.UnixMilli(ms) }

type deviceBurst struct {
	Sent                 int      `json:"sent"`
	PublishSpreadMs      float64  `json:"first_to_last_publish_acked_ms"`
	LastResultMs         float64  `json:"first_publish_to_last_update_result_ms"`
	LastLandedMs         float64  `json:"first_publish_to_last_value_in_api_ms"`
	ResultsAtMapper      int      `json:"update_results_at_mapper"`
	ValuesWrittenToAPI   int      `json:"distinct_values_seen_in_api_watch"`
	Coalesced            bool     `json:"intermediate_values_coalesced"`
	LastValueLanded      bool     `json:"last_value_landed"`
	InOrder              bool     `json:"api_values_in_publish_order"`
	WrittenValuesExample []string `json:"written_values_first_10,omitempty"`
	// MQTTAtMapper counts what the mapper received during the burst, per topic: the edge publishes a result,
	// a document and a delta for every report it applies.
	MQTTAtMapper map[string]int `json:"mqtt_messages_at_mapper"`
}

type deviceRun struct {
	Broker           string            `json:"broker"`
	DesiredToDelta   stats             `json:"desired_to_delta"`
	DesiredStages    map[string]stats  `json:"desired_stages"`
	DesiredMissed    int               `json:"desired_missed"`
	ReportToReported stats             `json:"report_to_reported"`
	ReportStages     map[string]stats  `json:"report_stages"`
	ReportMissed     int               `json:"report_missed"`
	Burst            deviceBurst       `json:"burst"`
	APICalls         map[string]stats  `json:"api_calls_as_cloudcore_upstream_makes_them"`
	DesiredSamplesMs []float64         `json:"desired_to_delta_samples_ms"`
	ReportSamplesMs  []float64         `json:"report_to_reported_samples_ms"`
	CPU              map[string]cpuUse `json:"cpu"`
}

type deviceSummary struct {
	Machine *machine `json:"machine"`
	Note    string   `json:"note"`
	Targets struct {
		DesiredToDeltaP99Ms   float64 `json:"desired_to_delta_p99_ms"`
		ReportToReportedP99Ms float64 `json:"report_to_reported_p99_ms"`
	} `json:"targets"`
	Runs []deviceRun `json:"runs"`
}

// TestDeviceTwinLatency measures the two device-twin paths of targets.md, with mosquitto and then with the
// embedded broker: a desired value patched in the API server until its delta reaches the mapper, and a mapper
// report until the Device's reported value shows it in an API watch; sequentially (latency) and as a burst.
// It writes $OUTPUT/perf/device-latency.json and asserts nothing about timing:
//
//	go test -tags perf -run TestDeviceTwinLatency -v ./tests/perf/
//
// PERF_KLOG_V=4 logs every cloud message at the edge and every report cloudcore applies, with timestamps.
func TestDeviceTwinLatency(t *testing.T) {
	began := time.Now()
	sum := deviceSummary{Machine: newMachine(),
		Note: "one machine runs API server, etcd, cloudcore, edgecore, broker and mapper; other work may share it: noisy"}
	sum.Targets.DesiredToDeltaP99Ms, sum.Targets.ReportToReportedP99Ms = 100, 200
	for _, mode := range []struct {
		name     string
		embedded bool
	}{{"mosquitto", false}, {"embedded", true}} {
		t.Run(mode.name, func(t *testing.T) {
			sum.Runs = append(sum.Runs, measureDeviceTwin(t, mode.name, mode.embedded))
		})
	}
	sum.Machine.finish(began)
	writeSummary(t, "device-latency", sum)
}

func measureDeviceTwin(t *testing.T, name string, embedded bool) deviceRun {
	ctx := context.Background()
	b := startDeviceBench(t, embedded)
	run := deviceRun{Broker: name, CPU: map[string]cpuUse{}}

	// 1. desired in the API server -> delta at the mapper, one in flight. Stages are computed afterwards, when
	// the test's own watch has caught up.
	type sample struct {
		value       string
		t0, patched time.Time
	}
	var samples []sample
	var cpu cpuSnap
	for i := -deviceWarmup; i < deviceSamples; i++ {
		value := fmt.Sprintf("%s-%d", map[bool]string{true: "ON", false: "OFF"}[i%2 == 0], i+deviceWarmup)
		if i == 0 {
			cpu = takeCPU("")
		}
		t0 := time.Now()
		if err := b.setDesired(ctx, value); err != nil {
			t.Fatalf("patching desired %s: %v", value, err)
		}
		patched := time.Now()
		_, ok := b.seen.wait(kindDelta, value, deviceTimeout)
		if i < 0 {
			continue
		}
		if !ok {
			run.DesiredMissed++
			t.Logf("desired %s: no delta at the mapper within %s", value, deviceTimeout)
			continue
		}
		samples = append(samples, sample{value, t0, patched})
	}
	run.CPU["desired"] = cpuBetween(cpu, takeCPU(""))
	time.Sleep(time.Second)
	stages := map[string][]time.Duration{}
	for _, s := range samples {
		got, built, _ := b.seen.get(kindDelta, s.value)
		stages[desiredStageDn] = append(stages[desiredStageDn], got.Sub(s.t0))
		run.DesiredSamplesMs = append(run.DesiredSamplesMs, ms(got.Sub(s.t0)))
		stages[desiredStages[1]] = append(stages[desiredStages[1]], s.patched.Sub(s.t0))
		if w, _, ok := b.seen.get(kindDesired, s.value); ok {
			stages[desiredStages[2]] = append(stages[desiredStages[2]], w.Sub(s.t0))
			stages[desiredStages[3]] = append(stages[desiredStages[3]], edgeTime(built).Sub(w))
		}
		stages[desiredStages[4]] = append(stages[desiredStages[4]], got.Sub(edgeTime(built)))
	}
	run.DesiredStages = map[string]stats{}
	for _, s := range desiredStages {
		run.DesiredStages[s] = summarize(stages[s])
	}
	run.DesiredToDelta = run.DesiredStages[desiredStageDn]

	// 2a. mapper report -> reported in the API server, one in flight.
	samples = samples[:0]
	for i := -deviceWarmup; i < deviceSamples; i++ {
		value := fmt.Sprintf("r-%d", i+deviceWarmup)
		if i == 0 {
			cpu = takeCPU("")
		}
		t0 := time.Now()
		if tok := b.report(value); !tok.WaitTimeout(deviceTimeout) || tok.Error() != nil {
			t.Fatalf("publishing report %s: %v", value, tok.Error())
		}
		_, ok := b.seen.wait(kindReported, value, deviceTimeout)
		if i < 0 {
			continue
		}
		if !ok {
			run.ReportMissed++
			t.Logf("report %s: not in the API server within %s", value, deviceTimeout)
			continue
		}
		samples = append(samples, sample{value: value, t0: t0})
	}
	run.CPU["report"] = cpuBetween(cpu, takeCPU(""))
	time.Sleep(time.Second)
	stages = map[string][]time.Duration{}
	for _, s := range samples {
		got, _, _ := b.seen.get(kindReported, s.value)
		stages[reportStageTot] = append(stages[reportStageTot], got.Sub(s.t0))
		run.ReportSamplesMs = append(run.ReportSamplesMs, ms(got.Sub(s.t0)))
		if r, _, ok := b.seen.get(kindResult, s.value); ok {
			stages[reportStages[1]] = append(stages[reportStages[1]], r.Sub(s.t0))
			stages[reportStages[2]] = append(stages[reportStages[2]], got.Sub(r))
		}
	}
	run.ReportStages = map[string]stats{}
	for _, s := range reportStages {
		run.ReportStages[s] = summarize(stages[s])
	}
	run.ReportToReported = run.ReportStages[reportStageTot]

	// 2b. calibration: the API calls cloudcore's upstream makes for one report (GET, then a merge PATCH carrying
	// the resourceVersion), timed from the test on an annotation, so the report path's share of them is known.
	api := map[string][]time.Duration{}
	key := client.ObjectKey{Namespace: "default", Name: "counter"}
	for i := range 50 {
		t0 := time.Now()
		var d devicesv1alpha2.Device
		if err := b.client.Get(ctx, key, &d); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		base := d.DeepCopy()
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations["perf.tether.io/calibrate"] = strconv.Itoa(i)
		if err := b.client.Patch(ctx, &d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		api[apiStages[0]] = append(api[apiStages[0]], t1.Sub(t0))
		api[apiStages[1]] = append(api[apiStages[1]], t2.Sub(t1))
		api[apiStages[2]] = append(api[apiStages[2]], t2.Sub(t0))
	}
	run.APICalls = map[string]stats{}
	for _, s := range apiStages {
		run.APICalls[s] = summarize(api[s])
	}

	// 2c. a burst of reports, as fast as the mapper can publish.
	time.Sleep(time.Second)
	cpu = takeCPU("")
	before := b.seen.counts()
	toks := make([]mqtt.Token, deviceSamples)
	first := time.Now()
	for i := range deviceSamples {
		toks[i] = b.report(fmt.Sprintf("burst-%d", i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(deviceTimeout) || tok.Error() != nil {
			t.Fatalf("publishing burst report %d: %v", i, tok.Error())
		}
	}
	acked := time.Now()
	last := fmt.Sprintf("burst-%d", deviceSamples-1)
	landed, ok := b.seen.wait(kindReported, last, 60*time.Second)
	lastResult, resOK := b.seen.wait(kindResult, last, time.Second)
	time.Sleep(2 * time.Second) // anything still trickling in is counted
	run.CPU["burst"] = cpuBetween(cpu, takeCPU(""))
	written := b.seen.seen(kindReported, "burst-")
	bu := deviceBurst{Sent: deviceSamples, PublishSpreadMs: ms(acked.Sub(first)), LastValueLanded: ok,
		ResultsAtMapper: len(b.seen.seen(kindResult, "burst-")), ValuesWrittenToAPI: len(written),
		Coalesced: len(written) < deviceSamples, WrittenValuesExample: written[:min(10, len(written))]}
	if ok {
		bu.LastLandedMs = ms(landed.Sub(first))
	}
	if resOK {
		bu.LastResultMs = ms(lastResult.Sub(first))
	}
	bu.InOrder = slices.IsSortedFunc(written, func(a, b string) int {
		var x, y int
		fmt.Sscanf(a, "burst-%d", &x)
		fmt.Sscanf(b, "burst-%d", &y)
		return x - y
	})
	bu.MQTTAtMapper = b.seen.counts()
	for k, v := range before {
		bu.MQTTAtMapper[k] -= v
	}
	run.Burst = bu

	t.Logf("%s: desired in the API server -> delta at the mapper (%d sequential, %d missed):\n%s",
		name, deviceSamples, run.DesiredMissed, deviceTable(desiredStages, run.DesiredStages))
	t.Logf("%s: mapper report -> status.twins[0].reported in the API server (%d sequential, %d missed):\n%s",
		name, deviceSamples, run.ReportMissed, deviceTable(reportStages, run.ReportStages))
	t.Logf("%s: the API calls cloudcore makes per report, timed from the test (50 on an annotation):\n%s",
		name, deviceTable(apiStages, run.APICalls))
	t.Logf("%s: burst of %d reports: published+acked in %.0f ms; last update/result at the mapper after %.0f ms; "+
		"last value in the API after %.0f ms (landed=%v); %d update/results at the mapper; %d of %d values written to the API "+
		"(coalesced=%v, in order=%v): first written %v; MQTT messages at the mapper during the burst %v", name, bu.Sent, bu.PublishSpreadMs, bu.LastResultMs, bu.LastLandedMs,
		bu.LastValueLanded, bu.ResultsAtMapper, bu.ValuesWrittenToAPI, bu.Sent, bu.Coalesced, bu.InOrder, bu.WrittenValuesExample, bu.MQTTAtMapper)
	for _, phase := range []string{"desired", "report", "burst"} {
		c := run.CPU[phase]
		t.Logf("%s: CPU during %s phase: machine busy %.0f%% over %.1fs; seconds by process %v", name, phase, c.BusyPercent, c.WallSec, c.Seconds)
	}
	return run
}

// deviceTable renders stats with a decimal: some stages take well under a millisecond.
func deviceTable(names []string, rows map[string]stats) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tn\tmin ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\tmean ms\t")
	for _, n := range names {
		s := rows[n]
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", n, s.N, s.Min, s.P50, s.P90, s.P99, s.Max, s.Mean)
	}
	_ = tw.Flush()
	return sb.String()
}
