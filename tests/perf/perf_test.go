//go:build perf

// Package perf holds scripted measurements of the whole system (spec targets.md): they print numbers and write
// JSON summaries to $OUTPUT/perf (default _output/perf); they never assert on timing. Run one at a time:
//
//	go test -tags perf ./tests/perf/ -v -timeout 30m -run TestPodStartupLatency
package perf

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	edgecfg "github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

const (
	node      = "perf-node"
	namespace = "default"
	batchKey  = "perf-batch"
)

// env is the control plane, a private containerd and an in-process cloudcore; the edge is started by each test.
type env struct {
	cp    *framework.ControlPlane
	ctd   *framework.Containerd
	cloud *framework.Cloud
	kube  kubernetes.Interface
	token string
	dir   string
}

// TestMain sets klog's verbosity from PERF_KLOG_V (e.g. 4 shows every message between cloud and edge, with
// timestamps), for finding where time goes; leave it unset when measuring.
func TestMain(m *testing.M) {
	if v := os.Getenv("PERF_KLOG_V"); v != "" {
		fs := flag.NewFlagSet("klog", flag.ExitOnError)
		klog.InitFlags(fs)
		if err := fs.Set("v", v); err != nil {
			fmt.Fprintf(os.Stderr, "PERF_KLOG_V=%s: %v\n", v, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

func startEnv(t *testing.T) *env {
	t.Helper()
	cp := framework.StartControlPlane(t)
	ctd := framework.StartContainerd(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	// The test's own client must not be the bottleneck: client-go's default is 5 QPS.
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 1000, 1000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// No kube-controller-manager here: create what it would.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "default"}}
	if _, err := kube.CoreV1().ServiceAccounts(namespace).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return &env{cp: cp, ctd: ctd, cloud: cloud, kube: kube, token: framework.Token(t, cp), dir: dir}
}

// edgeConfig is a whole edge node; criEndpoint overrides the runtime endpoint (a recording proxy) when set.
func (e *env) edgeConfig(t *testing.T, criEndpoint string) *edgecfg.EdgeCore {
	t.Helper()
	cfg := framework.NewEdgeNodeConfig(t, e.cloud, node, e.token, filepath.Join(e.dir, "edge"), e.ctd)
	if criEndpoint != "" {
		k := cfg.Modules.Edged.TailoredKubeletConfig
		k.ContainerRuntimeEndpoint, k.ImageServiceEndpoint = criEndpoint, criEndpoint
	}
	return cfg
}

// waitNodeReady polls every 50 ms and returns when the node is Ready.
func (e *env) waitNodeReady(ctx context.Context, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := e.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready within %s: %w", node, timeout, err)
	}
	return nil
}

func perfPod(batch string, i int) *corev1.Pod {
	noToken := false
	grace := int64(2)
	name := fmt.Sprintf("%s-%03d", batch, i)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{batchKey: batch}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostNetwork:                   true,
			AutomountServiceAccountToken:  &noToken,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: framework.TestAppImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "POD_NAME", Value: name}},
			}},
		},
	}
}

func running(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 &&
		p.Status.ContainerStatuses[0].State.Running != nil && p.Status.ContainerStatuses[0].Ready
}

// podTimes is what a batch observed of one pod.
type podTimes struct {
	Name    string
	UID     types.UID
	Created time.Time // just before the Create call
	Posted  time.Time // Create returned
	// FirstStatus is the first watch event with a container status from the edge; Running the first with a
	// running, ready container. Both are arrival times of the watch event.
	FirstStatus time.Time
	Running     time.Time
}

type batch struct {
	Label string
	Pods  []*podTimes
	Began time.Time
	Done  time.Time
}

// runBatch creates n pods at once, concurrently, and waits on a pod watch until all are Running.
func (e *env) runBatch(ctx context.Context, label string, n int, timeout time.Duration) (*batch, error) {
	pods := e.kube.CoreV1().Pods(namespace)
	sel := batchKey + "=" + label
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("listing pods %s: %w", sel, err)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		return nil, fmt.Errorf("watching pods %s: %w", sel, err)
	}
	defer w.Stop()

	b := &batch{Label: label}
	byName := map[string]*podTimes{}
	for i := range n {
		pt := &podTimes{Name: perfPod(label, i).Name}
		b.Pods = append(b.Pods, pt)
		byName[pt.Name] = pt
	}
	var mu sync.Mutex
	allRunning := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		left := n
		for ev := range w.ResultChan() {
			now := time.Now()
			if ev.Type == watch.Error {
				watchErr <- fmt.Errorf("watch error: %v", apierrors.FromObject(ev.Object))
				return
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			pt := byName[p.Name]
			if pt != nil {
				if pt.FirstStatus.IsZero() && len(p.Status.ContainerStatuses) > 0 {
					pt.FirstStatus = now
				}
				if pt.Running.IsZero() && running(p) {
					pt.Running = now
					left--
				}
			}
			mu.Unlock()
			if left == 0 {
				close(allRunning)
				return
			}
		}
		watchErr <- fmt.Errorf("pod watch closed early")
	}()

	start := make(chan struct{})
	createErrs := make(chan error, n)
	var wg sync.WaitGroup
	for i, pt := range b.Pods {
		wg.Go(func() {
			pod := perfPod(label, i)
			<-start
			c := time.Now()
			got, err := pods.Create(ctx, pod, metav1.CreateOptions{})
			d := time.Now()
			if err != nil {
				createErrs <- fmt.Errorf("creating pod %s: %w", pod.Name, err)
				return
			}
			mu.Lock()
			pt.Created, pt.Posted, pt.UID = c, d, got.UID
			mu.Unlock()
		})
	}
	b.Began = time.Now()
	close(start)
	wg.Wait()
	close(createErrs)
	if err := <-createErrs; err != nil {
		return nil, err
	}
	select {
	case <-allRunning:
	case err := <-watchErr:
		return nil, err
	case <-time.After(timeout):
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, pt := range b.Pods {
			if pt.Running.IsZero() {
				missing = append(missing, pt.Name)
			}
		}
		return nil, fmt.Errorf("%d of %d pods not Running after %s: %v", len(missing), n, timeout, missing)
	}
	b.Done = time.Now()
	return b, nil
}

// deleteBatch deletes the batch's pods and waits until the API server and the runtime have none of them.
func (e *env) deleteBatch(ctx context.Context, b *batch, timeout time.Duration) error {
	pods := e.kube.CoreV1().Pods(namespace)
	for _, pt := range b.Pods {
		if err := pods.Delete(ctx, pt.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting pod %s: %w", pt.Name, err)
		}
	}
	uids := map[string]bool{}
	for _, pt := range b.Pods {
		uids[string(pt.UID)] = true
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: batchKey + "=" + b.Label})
		if err != nil || len(l.Items) > 0 {
			return false, nil
		}
		sbs, err := e.ctd.ListSandboxes(ctx)
		if err != nil {
			return false, nil
		}
		for _, sb := range sbs {
			if uids[sb.GetMetadata().GetUid()] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("pods of batch %s not gone from the API server and the runtime within %s: %w", b.Label, timeout, err)
	}
	return nil
}

// stats summarises durations in milliseconds.
type stats struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// summarize uses nearest-rank percentiles.
func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }
	rank := func(p float64) time.Duration { return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)] }
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return stats{N: len(s), Min: ms(s[0]), P50: ms(rank(0.5)), P90: ms(rank(0.9)), P99: ms(rank(0.99)),
		Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

// statsTable renders rows of named stats.
func statsTable(names []string, rows map[string]stats) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "what\tn\tmin ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, n := range names {
		s := rows[n]
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", n, s.N, s.Min, s.P50, s.P90, s.P99, s.Max)
	}
	_ = tw.Flush()
	return sb.String()
}

// machine describes where a measurement ran, so noisy numbers can be recognised as such.
type machine struct {
	CPUs        int    `json:"cpus"`
	GoVersion   string `json:"go_version"`
	Commit      string `json:"commit,omitempty"`
	LoadBefore  string `json:"loadavg_before"`
	LoadAfter   string `json:"loadavg_after,omitempty"`
	StartedAt   string `json:"started_at"`
	DurationSec int    `json:"duration_s,omitempty"`
}

func newMachine() *machine {
	m := &machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadavg(),
		StartedAt: time.Now().UTC().Format(time.RFC3339)}
	cmd := exec.Command("git", "rev-parse", "--short", "HEAD")
	cmd.Dir = framework.RepoRoot()
	if out, err := cmd.Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

func (m *machine) finish(began time.Time) {
	m.LoadAfter = loadavg()
	m.DurationSec = int(time.Since(began).Seconds())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// writeSummary writes v as $OUTPUT/perf/<name>.json (default _output/perf).
func writeSummary(t *testing.T, name string, v any) {
	t.Helper()
	out := os.Getenv("OUTPUT")
	if out == "" {
		out = filepath.Join(framework.RepoRoot(), "_output")
	}
	dir := filepath.Join(out, "perf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating %s: %v", dir, err)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("encoding summary %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	t.Logf("summary written to %s", path)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// cpuSnap is the machine's CPU counters and the CPU time of this run's processes: the test process and its
// descendants (kube-apiserver, etcd, an edgecore binary) and whatever mentions mark (this run's containerd
// directory) in its command line or cgroup: containerd, its shims and the pods.
type cpuSnap struct {
	at          time.Time
	total, idle int64
	procs       map[int]procCPU
}

type procCPU struct {
	comm string
	// own is utime+stime; children is cutime+cstime, the time of reaped children (runc, under the shims).
	own, children int64
}

func takeCPU(mark string) cpuSnap {
	s := cpuSnap{at: time.Now(), procs: map[int]procCPU{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseInt(f, 10, 64)
			if i < 8 { // user nice system idle iowait irq softirq steal
				s.total += v
			}
			if i == 3 || i == 4 {
				s.idle += v
			}
		}
	}
	all := map[int]procCPU{}
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lp, rp := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(b[rp+1:]))
		if len(f) < 15 {
			continue
		}
		var v [4]int64
		for i, x := range f[11:15] { // utime stime cutime cstime
			v[i], _ = strconv.ParseInt(x, 10, 64)
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		parent[pid], _ = strconv.Atoi(f[1])
		all[pid] = procCPU{comm: string(b[lp+1 : rp]), own: v[0] + v[1], children: v[2] + v[3]}
	}
	self := os.Getpid()
	for pid, p := range all {
		ours := false
		for q, hops := pid, 0; q > 1 && hops < 64; q, hops = parent[q], hops+1 {
			if q == self {
				ours = true
				break
			}
		}
		if !ours && mark != "" {
			for _, file := range []string{"cmdline", "cgroup"} {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file)); err == nil && strings.Contains(string(b), mark) {
					ours = true
					break
				}
			}
		}
		if ours {
			s.procs[pid] = p
		}
	}
	return s
}

// cpuUse is where the machine's CPU went between two snapshots.
type cpuUse struct {
	WallSec     float64            `json:"wall_s"`
	BusyPercent float64            `json:"machine_busy_percent"`
	Seconds     map[string]float64 `json:"cpu_seconds_by_process"`
}

// cpuGroup names this run's processes by what they are.
func cpuGroup(comm string) string {
	switch {
	case comm == "containerd", strings.HasPrefix(comm, "containerd-shim"), comm == "runc":
		return "containerd+shims+runc"
	case comm == "kube-apiserver", comm == "etcd":
		return "kube-apiserver+etcd"
	case comm == "edgecore":
		return "edgecore"
	case comm == "pause", comm == "testapp":
		return "pods"
	}
	return "test process (cloudcore+edgecore)"
}

// cpuBetween attributes CPU time to this run's processes; "other" is the rest of the machine's busy time
// (other test runs, builds), which makes noise visible.
func cpuBetween(a, b cpuSnap) cpuUse {
	u := cpuUse{WallSec: math.Round(b.at.Sub(a.at).Seconds()*10) / 10, Seconds: map[string]float64{}}
	dt := b.total - a.total
	if dt <= 0 {
		return u
	}
	busy := dt - (b.idle - a.idle)
	u.BusyPercent = math.Round(float64(busy)/float64(dt)*1000) / 10
	ours := int64(0)
	for pid, p := range b.procs {
		g := cpuGroup(p.comm)
		d := p.own
		if g == "containerd+shims+runc" {
			d += p.children // runc runs as the shims' short-lived children
		}
		if q, ok := a.procs[pid]; ok && q.comm == p.comm {
			d -= q.own
			if g == "containerd+shims+runc" {
				d -= q.children
			}
		}
		u.Seconds[g] += float64(d) / clockTicks
		ours += d
	}
	u.Seconds["other"] = float64(max(busy-ours, 0)) / clockTicks
	u.Seconds["machine capacity"] = float64(dt) / clockTicks
	for k, v := range u.Seconds {
		u.Seconds[k] = math.Round(v*10) / 10
	}
	return u
}
