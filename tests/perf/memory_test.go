//go:build perf

package perf

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; 100 on every Linux we target.
const clockTicks = 100

type footprint struct {
	Pods        int                `json:"pods"`
	WindowSec   float64            `json:"window_s"`
	RSSMeanMB   float64            `json:"rss_mean_mb"`
	RSSMaxMB    float64            `json:"rss_max_mb"`
	RSSAnonMB   float64            `json:"rss_anon_mb"`
	RSSFileMB   float64            `json:"rss_file_mb"`
	RSSBinaryMB float64            `json:"rss_of_binary_mappings_mb"`
	CPUPercent  float64            `json:"cpu_percent_of_one_core"`
	GoMetrics   map[string]float64 `json:"go_metrics"`
	Description string             `json:"description"`
}

// TestEdgecoreMemory runs the real edgecore binary against the in-process cloudcore and the private containerd
// and samples its RSS and CPU idle, then with 20 pods.
func TestEdgecoreMemory(t *testing.T) {
	began := time.Now()
	m := newMachine()
	bin, size, stripped := buildEdgecore(t)
	t.Logf("edgecore binary: %.1f MB, stripped (-ldflags \"-s -w\"): %.1f MB", mb(size), mb(stripped))

	e := startEnv(t)
	cfg := e.edgeConfig(t, "")
	// The framework's test timings (2 s heartbeat and node status) would inflate idle CPU five- to sevenfold;
	// measure what a deployment runs.
	def := edgecfg.NewDefaultEdgeCore()
	cfg.Modules.EdgeHub.Heartbeat = def.Modules.EdgeHub.Heartbeat
	cfg.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency = def.Modules.Edged.TailoredKubeletConfig.NodeStatusUpdateFrequency
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	cfg.MetricsServer.BindAddress = metricsAddr
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(e.dir, "edgecore.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(e.dir, "edgecore.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { stopProcess(t, cmd, exited, logPath) })

	ctx := context.Background()
	if err := e.waitNodeReady(ctx, time.Minute); err != nil {
		t.Fatalf("%v (log: %s)", err, logPath)
	}
	toReady := time.Since(started)
	t.Logf("edgecore start -> node Ready: %s (first start: includes fetching certificates with the join token)", toReady.Round(time.Millisecond))

	time.Sleep(10 * time.Second)
	idle, err := sample(ctx, pid, metricsAddr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	idle.Description = "idle, 0 pods, node Ready, 10 s after Ready"
	t.Logf("idle: RSS %.1f MB (max %.1f; anon %.1f, file-backed %.1f of which the binary %.1f), CPU %.2f%% of one core, Go: %v",
		idle.RSSMeanMB, idle.RSSMaxMB, idle.RSSAnonMB, idle.RSSFileMB, idle.RSSBinaryMB, idle.CPUPercent, idle.GoMetrics)

	b, err := e.runBatch(ctx, "mem", 20, 5*time.Minute)
	if err != nil {
		t.Fatalf("%v (log: %s)", err, logPath)
	}
	t.Logf("20 pods Running %s after the first create", b.Done.Sub(b.Began).Round(time.Millisecond))
	time.Sleep(20 * time.Second)
	busy, err := sample(ctx, pid, metricsAddr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	busy.Pods = 20
	busy.Description = "20 pods Running, 20 s after the last became Running"
	t.Logf("20 pods: RSS %.1f MB (max %.1f; anon %.1f, file-backed %.1f of which the binary %.1f), CPU %.2f%% of one core, Go: %v",
		busy.RSSMeanMB, busy.RSSMaxMB, busy.RSSAnonMB, busy.RSSFileMB, busy.RSSBinaryMB, busy.CPUPercent, busy.GoMetrics)

	t.Logf("edgecore footprint (real binary, default heartbeat 15 s / node status 10 s / resync 10 s):\n"+
		"state     RSS MB  RSS max MB  anon MB  file MB  CPU %% of a core\n"+
		"0 pods    %6.1f  %10.1f  %7.1f  %7.1f  %6.2f\n"+
		"20 pods   %6.1f  %10.1f  %7.1f  %7.1f  %6.2f\n"+
		"binary %.1f MB, stripped %.1f MB; start -> Ready %s",
		idle.RSSMeanMB, idle.RSSMaxMB, idle.RSSAnonMB, idle.RSSFileMB, idle.CPUPercent,
		busy.RSSMeanMB, busy.RSSMaxMB, busy.RSSAnonMB, busy.RSSFileMB, busy.CPUPercent,
		mb(size), mb(stripped), toReady.Round(time.Millisecond))
	m.finish(began)
	writeSummary(t, "edgecore-footprint", map[string]any{
		"machine":               m,
		"binary_mb":             round1(mb(size)),
		"binary_stripped_mb":    round1(mb(stripped)),
		"start_to_node_ready_s": toReady.Seconds(),
		"idle":                  idle,
		"pods_20":               busy,
		"log":                   logPath,
	})
}

// buildEdgecore builds the binary as a developer would, and a stripped one to report its size.
func buildEdgecore(t *testing.T) (bin string, size, stripped int64) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "edgecore")
	strippedBin := filepath.Join(dir, "edgecore-stripped")
	for _, args := range [][]string{
		{"build", "-o", bin, "./cmd/edgecore"},
		{"build", "-ldflags", "-s -w", "-o", strippedBin, "./cmd/edgecore"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = framework.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	sst, err := os.Stat(strippedBin)
	if err != nil {
		t.Fatal(err)
	}
	return bin, st.Size(), sst.Size()
}

func stopProcess(t *testing.T, cmd *exec.Cmd, exited <-chan error, logPath string) {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return // already gone
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("edgecore exit after SIGTERM: %v (log: %s)", err, logPath)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Errorf("edgecore still running 20 s after SIGTERM; killed (log: %s)", logPath)
	}
}

// sample reads VmRSS every second and utime+stime at both ends of the window.
func sample(ctx context.Context, pid int, metricsAddr string, window time.Duration) (*footprint, error) {
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	var sum, peak, anon, file float64
	n := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(t0) < window {
		st, err := procStatusKB(pid)
		if err != nil {
			return nil, err
		}
		rss := float64(st["VmRSS"])
		sum += rss
		peak = max(peak, rss)
		anon += float64(st["RssAnon"])
		file += float64(st["RssFile"])
		n++
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	wall := time.Since(t0)
	f := &footprint{
		WindowSec:  math.Round(wall.Seconds()*10) / 10,
		RSSMeanMB:  round1(sum / float64(n) / 1024),
		RSSMaxMB:   round1(peak / 1024),
		RSSAnonMB:  round1(anon / float64(n) / 1024),
		RSSFileMB:  round1(file / float64(n) / 1024),
		CPUPercent: math.Round(float64(cpu1-cpu0)/clockTicks/wall.Seconds()*100*100) / 100,
	}
	if f.RSSBinaryMB, err = binaryRSSMB(pid); err != nil {
		return nil, err
	}
	f.GoMetrics, err = goMetrics(ctx, metricsAddr)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// binaryRSSMB sums the resident size of the mappings of the process's own executable.
func binaryRSSMB(pid int) (float64, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0, fmt.Errorf("executable of pid %d: %w", pid, err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, fmt.Errorf("reading smaps of pid %d: %w", pid, err)
	}
	defer f.Close()
	var kb int64
	inExe := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"): // a mapping header
			inExe = len(fields) >= 6 && fields[5] == exe
		case inExe && len(fields) == 3 && fields[0] == "Rss:":
			v, _ := strconv.ParseInt(fields[1], 10, 64)
			kb += v
		}
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("reading smaps of pid %d: %w", pid, err)
	}
	return round1(float64(kb) / 1024), nil
}

// procStatusKB reads the kB fields of /proc/<pid>/status (VmRSS, RssAnon, RssFile, ...).
func procStatusKB(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("reading status of pid %d: %w", pid, err)
	}
	defer f.Close()
	out := map[string]int64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		fields := strings.Fields(v)
		if !ok || len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading status of pid %d: %w", pid, err)
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return out, nil
}

// cpuTicks is utime+stime of the process; fields are counted after the command name, which may hold spaces.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading stat of pid %d: %w", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed utime/stime in /proc/%d/stat", pid)
	}
	return u + s, nil
}

// goMetrics scrapes a few Go runtime gauges from edgecore's metrics server.
func goMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping edgecore metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping edgecore metrics: %w", err)
	}
	want := map[string]float64{
		"go_goroutines": 1, "go_memstats_heap_inuse_bytes": 1 << 20, "go_memstats_sys_bytes": 1 << 20,
		"go_memstats_stack_inuse_bytes": 1 << 20, "go_threads": 1,
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if unit, ok := want[f[0]]; ok {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				name := f[0]
				if unit != 1 {
					name = strings.TrimSuffix(name, "_bytes") + "_mb"
				}
				out[name] = round1(v / unit)
			}
		}
	}
	return out, nil
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func round1(v float64) float64 { return math.Round(v*10) / 10 }
