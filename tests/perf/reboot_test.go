//go:build perf

package perf

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/tests/framework"
)

// TestRebootRecovery measures the two offline recoveries of targets.md with 20 pods and the cloud down:
// edgecore restarted with its containers still running (adoption: nothing may be recreated), and a reboot
// (every sandbox gone) until all 20 pods have a running container again.
func TestRebootRecovery(t *testing.T) {
	const pods = 20
	began := time.Now()
	m := newMachine()
	e := startEnv(t)
	proxy := startCRIProxy(t, e.ctd.Endpoint())
	cfg := e.edgeConfig(t, proxy.Endpoint)
	edge := framework.StartEdgeNode(t, cfg)
	ctx := context.Background()
	if err := e.waitNodeReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	b, err := e.runBatch(ctx, "boot", pods, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]bool{}
	for _, p := range b.Pods {
		uids[string(p.UID)] = true
	}
	time.Sleep(5 * time.Second) // statuses reported, nothing in flight

	// 1. edgecore restarted while offline: it must adopt the running containers.
	before, err := runningContainers(ctx, e.ctd, uids)
	if err != nil {
		t.Fatal(err)
	}
	e.cloud.Stop()
	edge.Stop()
	proxy.Reset()
	restart := time.Now()
	edge = framework.StartEdgeNode(t, cfg)
	// edged has adopted a pod when it has read the status of the pod's running container: the last CRI
	// call of a sync that finds everything as it should be.
	var adopted map[string]time.Time
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		adopted = map[string]time.Time{}
		for _, c := range proxy.Calls() {
			if uid, ok := containerOwner(before, c.ContainerID); ok && c.Method == "ContainerStatus" && !c.Err {
				if t0, seen := adopted[uid]; !seen || c.End.Before(t0) {
					adopted[uid] = c.End
				}
			}
		}
		return len(adopted) == pods, nil
	})
	if err != nil {
		t.Fatalf("edged read %d of %d pods' containers within a minute of its restart: %v", len(adopted), pods, err)
	}
	var adoptDurations []time.Duration
	for _, at := range adopted {
		adoptDurations = append(adoptDurations, at.Sub(restart))
	}
	firstCall := firstCallAfter(proxy.Calls(), restart)
	time.Sleep(5 * time.Second) // a recreation would show now; edged resyncs every 10 s, so allow one more
	after, err := runningContainers(ctx, e.ctd, uids)
	if err != nil {
		t.Fatal(err)
	}
	restartCalls := countCalls(proxy.Calls())
	recreated := 0
	for _, method := range mutating {
		recreated += restartCalls[method]
	}
	unchanged := maps.EqualFunc(before, after, slices.Equal[[]string])
	adoption := summarize(adoptDurations)
	t.Logf("offline edgecore restart, %d pods: first CRI call %.0f ms after start; all pods adopted %.0f ms after start "+
		"(p50 %.0f ms); mutating CRI calls: %d; container IDs unchanged: %v; CRI calls: %v",
		pods, ms(firstCall), adoption.Max, adoption.P50, recreated, unchanged, restartCalls)
	if !unchanged || recreated > 0 {
		t.Errorf("containers recreated on an offline restart: before %v, after %v, mutating calls %v", before, after, restartCalls)
	}

	// 2. Reboot while offline: every sandbox gone, edgecore rebuilds the pods from SQLite.
	edge.Stop()
	if err := e.ctd.RemoveAllPods(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Reset()
	cpu0 := takeCPU(filepath.Base(e.ctd.Dir))
	boot := time.Now()
	edge = framework.StartEdgeNode(t, cfg)
	runningAt := map[string]time.Time{}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		now := time.Now()
		rc, err := runningContainers(ctx, e.ctd, uids)
		if err != nil {
			return false, nil
		}
		for uid, ids := range rc {
			if _, seen := runningAt[uid]; !seen && len(ids) > 0 {
				runningAt[uid] = now
			}
		}
		return len(runningAt) == pods, nil
	})
	if err != nil {
		t.Fatalf("%d of %d pods running %s after the reboot: %v", len(runningAt), pods, time.Since(boot), err)
	}
	cpu := cpuBetween(cpu0, takeCPU(filepath.Base(e.ctd.Dir)))
	var bootDurations []time.Duration
	for _, at := range runningAt {
		bootDurations = append(bootDurations, at.Sub(boot))
	}
	calls := proxy.Calls()
	bootFirstCall := firstCallAfter(calls, boot)
	phases := map[string][]time.Duration{}
	for uid, tr := range traces(calls) {
		if !uids[uid] || tr.SandboxStart.IsZero() {
			continue
		}
		phases["start -> RunPodSandbox"] = append(phases["start -> RunPodSandbox"], tr.SandboxStart.Sub(boot))
		phases["RunPodSandbox"] = append(phases["RunPodSandbox"], tr.SandboxEnd.Sub(tr.SandboxStart))
		phases["CreateContainer"] = append(phases["CreateContainer"], tr.CreateEnd.Sub(tr.CreateStart))
		phases["StartContainer"] = append(phases["StartContainer"], tr.ContainerStart.Sub(tr.StartStart))
		phases["start -> container started"] = append(phases["start -> container started"], tr.ContainerStart.Sub(boot))
	}
	phases["start -> running (CRI poll, 50 ms)"] = bootDurations
	rows := map[string]stats{}
	for k, v := range phases {
		rows[k] = summarize(v)
	}
	names := []string{"start -> RunPodSandbox", "RunPodSandbox", "CreateContainer", "StartContainer",
		"start -> container started", "start -> running (CRI poll, 50 ms)"}
	inFlight := map[string]int{}
	for _, method := range []string{"RunPodSandbox", "CreateContainer", "StartContainer"} {
		inFlight[method] = maxInFlight(calls, method)
	}
	reboot := rows["start -> running (CRI poll, 50 ms)"]
	t.Logf("reboot while offline, %d pods: first CRI call %.0f ms after edgecore start; all running %.0f ms after start\n%s"+
		"max CRI calls in flight: %v\nCPU over %.1f s: machine %.0f%% busy; CPU seconds by process: %v",
		pods, ms(bootFirstCall), reboot.Max, statsTable(names, rows), inFlight, cpu.WallSec, cpu.BusyPercent, cpu.Seconds)

	t.Logf("offline recovery, %d pods, one edge node:\n"+
		"edgecore restart, containers adopted:  %6.0f ms (nothing recreated: %v)\n"+
		"reboot, all sandboxes gone -> running: %6.0f ms", pods, adoption.Max, unchanged && recreated == 0, reboot.Max)
	m.finish(began)
	writeSummary(t, "reboot-recovery", map[string]any{
		"machine": m,
		"pods":    pods,
		"offline_restart": map[string]any{
			"all_adopted_ms":      adoption.Max,
			"adopted":             adoption,
			"first_cri_call_ms":   ms(firstCall),
			"mutating_cri_calls":  recreated,
			"container_ids_equal": unchanged,
			"cri_calls":           restartCalls,
		},
		"reboot": map[string]any{
			"all_running_ms":          reboot.Max,
			"phases":                  rows,
			"first_cri_call_ms":       ms(bootFirstCall),
			"max_cri_calls_in_flight": inFlight,
			"cpu":                     cpu,
		},
	})
}

// runningContainers maps each pod UID of interest to the IDs of its running containers, sorted.
func runningContainers(ctx context.Context, ctd *framework.Containerd, uids map[string]bool) (map[string][]string, error) {
	cs, err := ctd.ListContainers(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, c := range cs {
		uid := c.GetLabels()["io.kubernetes.pod.uid"]
		if uids[uid] && c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out[uid] = append(out[uid], c.GetId())
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out, nil
}

func containerOwner(byUID map[string][]string, id string) (string, bool) {
	for uid, ids := range byUID {
		if slices.Contains(ids, id) {
			return uid, true
		}
	}
	return "", false
}

func firstCallAfter(calls []criCall, since time.Time) time.Duration {
	first := time.Duration(-1)
	for _, c := range calls {
		if d := c.Start.Sub(since); d >= 0 && (first < 0 || d < first) {
			first = d
		}
	}
	return first
}
