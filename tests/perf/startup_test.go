//go:build perf

package perf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/tests/framework"
)

// phases split a pod's start at the points the CRI proxy and the pod watch observe.
var startupPhases = []string{
	"create -> Running (API watch)",
	"create -> edged first CRI call",
	"first CRI call -> RunPodSandbox",
	"RunPodSandbox",
	"sandbox -> CreateContainer",
	"CreateContainer",
	"StartContainer",
	"container started -> Running in API",
	"create -> first container status in API",
}

type startupRun struct {
	Pods         int                `json:"pods"`
	CreateSpread float64            `json:"create_calls_spread_ms"`
	AllRunning   float64            `json:"first_create_to_all_running_ms"`
	Latency      stats              `json:"create_to_running"`
	Phases       map[string]stats   `json:"phases"`
	MaxInFlight  map[string]int     `json:"max_cri_calls_in_flight"`
	CRICalls     map[string]int     `json:"cri_calls"`
	PerPodMs     map[string]float64 `json:"per_pod_create_to_running_ms"`
	CPU          cpuUse             `json:"cpu_during_batch"`
}

// TestPodStartupLatency creates batches of pods at once on one edge node and measures, per pod, the time from
// the Create call to the watch event that shows it Running with a ready container.
func TestPodStartupLatency(t *testing.T) {
	began := time.Now()
	m := newMachine()
	e := startEnv(t)
	proxy := startCRIProxy(t, e.ctd.Endpoint())
	framework.StartEdgeNode(t, e.edgeConfig(t, proxy.Endpoint))
	ctx := context.Background()
	if err := e.waitNodeReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	var runs []startupRun
	// A single pod first: warms caches (images, snapshots, the API server) and gives the unloaded baseline.
	for i, n := range batchSizes(t, []int{1, 50, 20}) {
		time.Sleep(5 * time.Second) // let the previous deletions and status updates settle
		proxy.Reset()
		label := fmt.Sprintf("b%d-%d", i, n)
		cpu0 := takeCPU(filepath.Base(e.ctd.Dir))
		b, err := e.runBatch(ctx, label, n, 5*time.Minute)
		if err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
		cpu1 := takeCPU(filepath.Base(e.ctd.Dir))
		calls := proxy.Calls()
		run := analyseStartup(b, calls)
		run.CPU = cpuBetween(cpu0, cpu1)
		runs = append(runs, run)
		t.Logf("%d pods created at once (create calls spread over %.0f ms), all Running %.0f ms after the first create:\n%s",
			n, run.CreateSpread, run.AllRunning, statsTable(startupPhases, run.Phases))
		t.Logf("%d pods: max CRI calls in flight: %v; CRI calls: %v", n, run.MaxInFlight, run.CRICalls)
		t.Logf("%d pods: CPU over %.1f s: machine %.0f%% busy; CPU seconds by process: %v", n, run.CPU.WallSec,
			run.CPU.BusyPercent, run.CPU.Seconds)
		deleted := time.Now()
		if err := e.deleteBatch(ctx, b, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d pods deleted: gone from the API server and the runtime in %.1f s", n, time.Since(deleted).Seconds())
	}

	var sb strings.Builder
	sb.WriteString("pods  p50 ms  p90 ms  p99 ms  max ms   (create -> Running, API watch)\n")
	for _, r := range runs {
		fmt.Fprintf(&sb, "%4d  %6.0f  %6.0f  %6.0f  %6.0f\n", r.Pods, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	}
	t.Logf("pod startup latency, one edge node:\n%s", sb.String())
	m.finish(began)
	writeSummary(t, "pod-startup-latency", map[string]any{"machine": m, "runs": runs})
}

// batchSizes is PERF_BATCHES (comma-separated pod counts, e.g. "1,100") or def.
func batchSizes(t *testing.T, def []int) []int {
	v := os.Getenv("PERF_BATCHES")
	if v == "" {
		return def
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("PERF_BATCHES=%q: %q is not a positive pod count", v, f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

func analyseStartup(b *batch, calls []criCall) startupRun {
	tr := traces(calls)
	phases := map[string][]time.Duration{}
	add := func(name string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			phases[name] = append(phases[name], to.Sub(from))
		}
	}
	run := startupRun{Pods: len(b.Pods), PerPodMs: map[string]float64{}, MaxInFlight: map[string]int{}}
	first, lastPost := b.Pods[0].Created, b.Pods[0].Posted
	for _, p := range b.Pods {
		if p.Created.Before(first) {
			first = p.Created
		}
		if p.Posted.After(lastPost) {
			lastPost = p.Posted
		}
	}
	var lastRunning time.Time
	for _, p := range b.Pods {
		if p.Running.After(lastRunning) {
			lastRunning = p.Running
		}
		run.PerPodMs[p.Name] = ms(p.Running.Sub(p.Created))
		add(startupPhases[0], p.Created, p.Running)
		add(startupPhases[8], p.Created, p.FirstStatus)
		x := tr[string(p.UID)]
		if x == nil {
			continue
		}
		add(startupPhases[1], p.Created, x.FirstCall)
		add(startupPhases[2], x.FirstCall, x.SandboxStart)
		add(startupPhases[3], x.SandboxStart, x.SandboxEnd)
		add(startupPhases[4], x.SandboxEnd, x.CreateStart)
		add(startupPhases[5], x.CreateStart, x.CreateEnd)
		add(startupPhases[6], x.StartStart, x.ContainerStart)
		add(startupPhases[7], x.ContainerStart, p.Running)

	}
	run.CreateSpread = ms(lastPost.Sub(first))
	run.AllRunning = ms(lastRunning.Sub(first))
	run.Phases = map[string]stats{}
	for name, ds := range phases {
		run.Phases[name] = summarize(ds)
	}
	run.Latency = run.Phases[startupPhases[0]]
	for _, method := range []string{"RunPodSandbox", "CreateContainer", "StartContainer", "ListPodSandbox", "ContainerStatus"} {
		run.MaxInFlight[method] = maxInFlight(calls, method)
	}
	run.CRICalls = countCalls(calls)
	return run
}
