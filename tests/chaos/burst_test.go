//go:build chaos

// Package chaos holds the chaos suite of issue #12: scenarios run on the real binaries as keadm installs them,
// each ending by comparing the API server's state with the edge's.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/tests/framework"
)

const (
	burstPods      = 100
	burstNamespace = "default"
	burstNode      = "chaos-edge"
	burstLabel     = "tether.test/chaos"
)

// burstAllowedErrors are error lines a run of this scenario may log, each with the reason. Anything else in
// cloudcore's or edgecore's log fails the test.
var burstAllowedErrors = []framework.AllowedError{
	{Pattern: regexp.MustCompile(`"Cannot connect to MQTT broker; retrying until it is reachable".*127\.0\.0\.1:1883: connect: connection refused`),
		Reason: "no MQTT broker on this host: the node joins without --with-mqtt (the CI host may run its own on 1883) and this scenario has no device"},
	linkDown,
}

// linkDown are edgecore's lines for the cloud link going away; allowed only between the kill and a few seconds
// after the restarted cloudcore is ready (checked by timestamp in the test).
var linkDown = framework.AllowedError{
	Pattern: regexp.MustCompile(`hub\.go:\d+\] "(Lost connection to cloud, reconnecting|Cannot connect to cloud, retrying)"`),
	Reason:  "cloudcore was killed: edgecore sees the link drop and retries until the restarted cloudcore answers",
}

// TestCloudcoreKilledDuringPodBurst: cloudcore kill -9 during a 100-pod burst, then all 100 deleted. Installed as a
// user does (keadm init, gettoken, join under a --root, detached daemons, a private containerd); cloudcore is
// killed while the pods start and started again as a user without systemd would, by running the same keadm init
// with --force. At the end the API server and containerd agree: every pod Running once, one running container
// per pod, no restarts; after the deletes, nothing left on either side; no unexplained error in either log.
func TestCloudcoreKilledDuringPodBurst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: containerd and edgecore's pod cgroups")
	}
	begin := time.Now()
	ctx := context.Background()
	waitBuild := framework.BuildKeadm(t)
	cp := framework.StartControlPlane(t)
	ctd := framework.StartContainerd(t)
	keadm := waitBuild()
	t.Logf("control plane, containerd and binaries ready after %s", time.Since(begin).Round(time.Millisecond))

	// keadm init, as a user on a host without systemd runs it.
	cloudRoot := framework.KeadmRoot(t, "chaos-cloud-")
	t.Cleanup(func() {
		if pid := framework.DaemonPID(cloudRoot, "cloudcore"); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if out, code := framework.RunKeadm(keadm, "reset", "cloud", "--force", "--root", cloudRoot); code != 0 {
			t.Errorf("cleanup reset cloud: %s", out)
		}
	})
	ws, https := framework.FreePort(t), framework.FreePort(t)
	initArgs := []string{"init", "--root", cloudRoot, "--kube-config", cp.Kubeconfig, "--advertise-address", "127.0.0.1",
		"--websocket-port", itoa(ws), "--https-port", itoa(https),
		"--monitor-address", "127.0.0.1:" + itoa(framework.FreePort(t)), "--no-systemd"}
	cloudLog := framework.DaemonLog(cloudRoot, "cloudcore")
	out, code := framework.RunKeadm(keadm, initArgs...)
	if code != 0 {
		t.Fatalf("keadm init exited %d:\n%s\ncloudcore log:\n%s", code, out, framework.FileTail(cloudLog, 4096))
	}
	cloudPID := framework.DaemonPID(cloudRoot, "cloudcore")
	if cloudPID == 0 {
		t.Fatalf("cloudcore is not running after keadm init:\n%s", out)
	}
	out, code = framework.RunKeadm(keadm, "gettoken", "--kube-config", cp.Kubeconfig)
	tok := strings.TrimSpace(out)
	if code != 0 || len(strings.Split(tok, ".")) != 4 {
		t.Fatalf("keadm gettoken exited %d: %q", code, out)
	}

	// keadm join of one edge node on the private containerd.
	edgeRoot := framework.KeadmRoot(t, "chaos-edge-")
	t.Cleanup(func() {
		if out, code := framework.RunKeadm(keadm, "reset", "edge", "--force", "--root", edgeRoot); code != 0 {
			t.Errorf("cleanup reset edge: %s", out)
		}
	})
	edgeLog := framework.DaemonLog(edgeRoot, "edgecore")
	out, code = framework.RunKeadm(keadm, "join", "--no-systemd", "--root", edgeRoot,
		"--cloudcore-ipport", net.JoinHostPort("127.0.0.1", itoa(ws)), "--certport", itoa(https),
		"--token", tok, "--edgenode-name", burstNode, "--remote-runtime-endpoint", ctd.Endpoint(), "--wait", "60s",
		"--kube-config", cp.Kubeconfig,
		"--set", "modules.edged.tailoredKubeletConfig.cgroupRoot="+ctd.CgroupParent,
		"--set", "metricsServer.bindAddress=127.0.0.1:"+itoa(framework.FreePort(t)))
	if code != 0 {
		t.Fatalf("keadm join exited %d:\n%s\nedgecore log:\n%s", code, out, framework.FileTail(edgeLog, 4096))
	}
	edgePID := framework.DaemonPID(edgeRoot, "edgecore")
	if edgePID == 0 {
		t.Fatalf("edgecore is not running after keadm join:\n%s", out)
	}
	framework.EventuallyState(t, 60*time.Second, "node "+burstNode+" Ready", func() (bool, string) {
		var n corev1.Node
		err := cp.Client.Get(ctx, client.ObjectKey{Name: burstNode}, &n)
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%v %+v", err, n.Status.Conditions)
	})
	t.Logf("cloudcore (pid %d) and edgecore (pid %d) installed, node Ready after %s", cloudPID, edgePID, time.Since(begin).Round(time.Millisecond))

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: burstNamespace, Name: "default"}}
	if err := cp.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	// The burst: 100 pods created at once.
	names := make([]string, burstPods)
	for i := range names {
		names[i] = fmt.Sprintf("burst-%03d", i)
	}
	burst := time.Now()
	// kill -9 cloudcore in the middle of the burst: once half the pods are created, so that the first half is
	// being delivered and started while the second half reaches the API server with no cloudcore to watch it.
	var created atomic.Int32
	var killTime time.Time
	var killErr error
	parallel(t, names, func(name string) error {
		if err := cp.Client.Create(ctx, burstPod(name)); err != nil {
			return err
		}
		if created.Add(1) == burstPods/2 {
			killTime, killErr = time.Now(), syscall.Kill(cloudPID, syscall.SIGKILL)
		}
		return nil
	})
	if killErr != nil {
		t.Fatalf("kill -9 cloudcore (pid %d): %v", cloudPID, killErr)
	}
	killedAt := killTime.Sub(burst)
	framework.Eventually(t, 10*time.Second, "killed cloudcore gone", func() bool { return !framework.ProcessAlive(cloudPID) })
	running, _ := apiPods(ctx, t, cp)
	atKill, _ := ctd.ListContainers(ctx)
	t.Logf("%d pods created in %s; cloudcore (pid %d) killed -9 after the %dth, %s into the burst; with cloudcore down: "+
		"%d pods Running in the API server, %d stored on the edge, %d containers in containerd",
		burstPods, time.Since(burst).Round(time.Millisecond), cloudPID, burstPods/2, killedAt.Round(time.Millisecond),
		len(running), len(edgePods(t, keadm, edgeRoot)), len(atKill))

	// Started again as a user without systemd does: the same keadm init, with --force since it is installed.
	out, code = framework.RunKeadm(keadm, append(initArgs, "--force")...)
	if code != 0 {
		t.Fatalf("keadm init --force (restart) exited %d:\n%s\ncloudcore log:\n%s", code, out, framework.FileTail(cloudLog, 4096))
	}
	newCloudPID := framework.DaemonPID(cloudRoot, "cloudcore")
	if newCloudPID == 0 || newCloudPID == cloudPID {
		t.Fatalf("no new cloudcore after keadm init --force (pid file %d, old %d):\n%s", newCloudPID, cloudPID, out)
	}
	restartedTime := time.Now()
	t.Logf("cloudcore restarted by keadm init --force (pid %d) %s into the burst", newCloudPID, restartedTime.Sub(burst).Round(time.Millisecond))

	// All 100 Running and Ready in the API server.
	framework.EventuallyState(t, 150*time.Second, fmt.Sprintf("all %d pods Running and Ready", burstPods), func() (bool, string) {
		running, all := apiPods(ctx, t, cp)
		return len(running) == burstPods, fmt.Sprintf("%d of %d Running and Ready (%d in the API server)\ncloudcore log:\n%s\nedgecore log:\n%s",
			len(running), burstPods, len(all), framework.FileTail(cloudLog, 3000), framework.FileTail(edgeLog, 3000))
	})
	t.Logf("TIMING: all %d pods Running %s after the burst began (cloudcore killed at %s)",
		burstPods, time.Since(burst).Round(time.Millisecond), killedAt.Round(time.Millisecond))

	// The API server and the runtime agree: one running container per pod, the one the API names; no restarts.
	if got := framework.DaemonPID(edgeRoot, "edgecore"); got != edgePID {
		t.Errorf("edgecore pid %d, was %d: it restarted", got, edgePID)
	}
	_, all := apiPods(ctx, t, cp)
	apiContainer := map[string]string{}
	for _, p := range all {
		cs := p.Status.ContainerStatuses
		if len(cs) != 1 {
			t.Errorf("pod %s: %d container statuses", p.Name, len(cs))
			continue
		}
		if cs[0].RestartCount != 0 {
			t.Errorf("pod %s: restartCount %d in the API server", p.Name, cs[0].RestartCount)
		}
		apiContainer[p.Name] = strings.TrimPrefix(cs[0].ContainerID, "containerd://")
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctrs, err := ctd.ListContainers(rctx)
	if err != nil {
		t.Fatal(err)
	}
	sandboxes, err := ctd.ListSandboxes(rctx)
	if err != nil {
		t.Fatal(err)
	}
	byPod := map[string][]*runtimeapi.Container{}
	for _, c := range ctrs {
		byPod[c.Labels["io.kubernetes.pod.name"]] = append(byPod[c.Labels["io.kubernetes.pod.name"]], c)
	}
	sandboxesByPod := map[string]int{}
	for _, s := range sandboxes {
		sandboxesByPod[s.Metadata.GetName()]++
	}
	for _, name := range names {
		cs := byPod[name]
		if len(cs) != 1 {
			t.Errorf("pod %s: %d containers in containerd, want 1: %s", name, len(cs), describe(cs))
			continue
		}
		c := cs[0]
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING || c.Metadata.GetAttempt() != 0 {
			t.Errorf("pod %s: container %s is %s, attempt %d; want running, attempt 0", name, c.Id, c.State, c.Metadata.GetAttempt())
		}
		if c.Id != apiContainer[name] {
			t.Errorf("pod %s: API server names container %q, containerd runs %q", name, apiContainer[name], c.Id)
		}
		if sandboxesByPod[name] != 1 {
			t.Errorf("pod %s: %d sandboxes in containerd, want 1", name, sandboxesByPod[name])
		}
	}
	if len(ctrs) != burstPods || len(sandboxes) != burstPods {
		t.Errorf("containerd holds %d containers and %d sandboxes, want %d of each", len(ctrs), len(sandboxes), burstPods)
	}
	t.Logf("containerd: %d containers, %d sandboxes, for %d pods", len(ctrs), len(sandboxes), len(names))
	// The edge's own store (what keadm debug get reads) holds each pod once, with the API server's UID.
	stored := edgePods(t, keadm, edgeRoot)
	for _, p := range all {
		if got := stored[p.Name]; len(got) != 1 || got[0] != string(p.UID) {
			t.Errorf("pod %s (uid %s): edge database holds uids %v", p.Name, p.UID, got)
		}
	}
	if len(stored) != burstPods {
		t.Errorf("edge database holds %d pods, want %d", len(stored), burstPods)
	}

	// Delete all 100; none may remain in the API server nor in containerd.
	deletes := time.Now()
	parallel(t, names, func(name string) error {
		err := cp.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: burstNamespace, Name: name}})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	framework.EventuallyState(t, 120*time.Second, "all pods gone from the API server", func() (bool, string) {
		_, all := apiPods(ctx, t, cp)
		return len(all) == 0, fmt.Sprintf("%d pods left in the API server\ncloudcore log:\n%s\nedgecore log:\n%s",
			len(all), framework.FileTail(cloudLog, 3000), framework.FileTail(edgeLog, 3000))
	})
	apiGone := time.Since(deletes)
	framework.EventuallyState(t, 60*time.Second, "all containers and sandboxes gone from containerd", func() (bool, string) {
		c, err1 := ctd.ListContainers(ctx)
		s, err2 := ctd.ListSandboxes(ctx)
		return err1 == nil && err2 == nil && len(c) == 0 && len(s) == 0, fmt.Sprintf("%d containers, %d sandboxes (%v %v)", len(c), len(s), err1, err2)
	})
	t.Logf("TIMING: all %d pods deleted: gone from the API server after %s, from containerd after %s",
		burstPods, apiGone.Round(time.Millisecond), time.Since(deletes).Round(time.Millisecond))
	framework.EventuallyState(t, 15*time.Second, "no pod left in the edge database", func() (bool, string) {
		stored := edgePods(t, keadm, edgeRoot)
		return len(stored) == 0, fmt.Sprintf("%d pods: %v", len(stored), stored)
	})

	if got := framework.DaemonPID(edgeRoot, "edgecore"); got != edgePID {
		t.Errorf("edgecore pid %d, was %d: it restarted", got, edgePID)
	}
	if got := framework.DaemonPID(cloudRoot, "cloudcore"); got != newCloudPID {
		t.Errorf("cloudcore pid %d, was %d after the restart: it died or restarted again", got, newCloudPID)
	}

	// Neither log has an error line the allow-list does not explain.
	for _, l := range []struct{ name, path string }{{"cloudcore", cloudLog}, {"edgecore", edgeLog}} {
		lines, err := framework.KlogErrorLines(l.path)
		if err != nil {
			t.Errorf("reading %s log: %v", l.name, err)
			continue
		}
		bad := framework.UnallowedErrors(lines, burstAllowedErrors...)
		for _, line := range lines {
			// A link error outside the outage: the link dropped when nothing made it drop.
			if !linkDown.Pattern.MatchString(line) {
				continue
			}
			if at, ok := klogTime(line); !ok || at.Before(killTime.Add(-time.Second)) || at.After(restartedTime.Add(10*time.Second)) {
				bad = append(bad, line+"  [outside the outage "+killTime.Format("15:04:05.000")+" to "+restartedTime.Format("15:04:05.000")+" + 10s]")
			}
		}
		t.Logf("%s log: %d error lines, %d not on the allow-list", l.name, len(lines), len(bad))
		for _, line := range bad {
			t.Errorf("%s logged an unexplained error: %s", l.name, line)
		}
	}
	t.Logf("done in %s", time.Since(begin).Round(time.Millisecond))
}

func burstPod(name string) *corev1.Pod {
	noToken := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: burstNamespace, Name: name, Labels: map[string]string{burstLabel: "burst"}},
		Spec: corev1.PodSpec{
			// Bound directly: no scheduler runs here.
			NodeName:                     burstNode,
			HostNetwork:                  true,
			AutomountServiceAccountToken: &noToken,
			Containers: []corev1.Container{{Name: "app", Image: framework.TestAppImage, ImagePullPolicy: corev1.PullNever,
				// No PORT: a hundred pods share the host's network; the app only ticks.
				Env: []corev1.EnvVar{{Name: "POD_NAME", Value: name}}}},
		},
	}
}

// apiPods lists the burst's pods in the API server: those Running with their container ready, and all.
func apiPods(ctx context.Context, t *testing.T, cp *framework.ControlPlane) (running, all []corev1.Pod) {
	var list corev1.PodList
	if err := cp.Client.List(ctx, &list, client.InNamespace(burstNamespace), client.MatchingLabels{burstLabel: "burst"}); err != nil {
		t.Logf("listing pods: %v", err)
		return nil, nil
	}
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready {
			running = append(running, p)
		}
	}
	return running, list.Items
}

// parallel runs f for every name, 20 at a time, as a burst of kubectl applies would arrive.
func parallel(t *testing.T, names []string, f func(string) error) {
	t.Helper()
	var mu sync.Mutex
	var errs []string
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(n); err != nil {
				mu.Lock()
				errs = append(errs, n+": "+err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(errs)
	if len(errs) > 0 {
		t.Fatalf("%d failed:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

func describe(cs []*runtimeapi.Container) string {
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%s %s attempt %d", c.Id, c.State, c.Metadata.GetAttempt()))
	}
	return strings.Join(s, "; ")
}

// edgePods is what the edge database holds, read as a user would with keadm debug get: pod name -> UIDs.
func edgePods(t *testing.T, keadm, root string) map[string][]string {
	t.Helper()
	out, code := framework.RunKeadm(keadm, "debug", "get", "pods", "--root", root, "-n", burstNamespace, "-o", "json")
	if code != 0 {
		t.Fatalf("keadm debug get pods exited %d:\n%s", code, out)
	}
	var list struct {
		Items []metav1.PartialObjectMetadata `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("keadm debug get pods -o json: %v\n%s", err, out)
	}
	pods := map[string][]string{}
	for _, p := range list.Items {
		pods[p.Name] = append(pods[p.Name], string(p.UID))
	}
	return pods
}

// klogTime is the time of a klog line ("E1208 00:31:32.935955 ..."), in this year and the local zone.
func klogTime(line string) (time.Time, bool) {
	if len(line) < 21 {
		return time.Time{}, false
	}
	now := time.Now()
	at, err := time.ParseInLocation("0102 15:04:05.000000", line[1:21], time.Local)
	if err != nil {
		return time.Time{}, false
	}
	return at.AddDate(now.Year(), 0, 0), true
}

func itoa[T ~int | ~int32](n T) string { return strconv.Itoa(int(n)) }
