//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/tests/framework"
)

// twoNode is one edge node of TestKeadmTwoNodes: its --root, its containerd, and the namespace it runs in (nil:
// this host's network).
type twoNode struct {
	name  string
	root  string
	ctd   *framework.Containerd
	netns *framework.Netns
	// cloud is the address it joins cloudcore at.
	cloud string
	// port is where its pod serves HTTP.
	port int32
}

func (n *twoNode) pod() string { return n.name + "-app" }

// The KubeEdge workflow for two edge hosts, with the real binaries as a user runs them: keadm init, gettoken,
// join of two nodes, pods on both, reset edge of each and reset cloud. One node runs on this host under its own
// --root; the other is a host of its own as far as the network goes: its containerd and edgecore run in a network
// namespace that reaches cloudcore only over a veth pair, at an address keadm init put in the server certificate.
func TestKeadmTwoNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace, containerd and edgecore's pod cgroups")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip for the network namespace")
	}
	begin := time.Now()
	ctx := context.Background()
	// The build overlaps the start of the control plane and of the containerds, which mostly wait.
	waitBuild := framework.BuildKeadm(t)
	cp := framework.StartControlPlane(t)
	// Before the containerd and edgecore inside it, so that it is removed after them.
	ns := framework.StartNetns(t)
	hostNode := &twoNode{name: "twonode-host", root: framework.KeadmRoot(t, "keadm-2n-host-"), ctd: framework.StartContainerd(t)}
	nsNode := &twoNode{name: "twonode-netns", root: framework.KeadmRoot(t, "keadm-2n-netns-"), ctd: framework.StartContainerd(t, framework.InNetns(ns)), netns: ns}
	nodes := []*twoNode{hostNode, nsNode}
	keadm := waitBuild()
	t.Logf("control plane, namespace, binaries and two containerds ready after %s", time.Since(begin).Round(time.Millisecond))

	// keadm init, advertising loopback for the node on this host and the veth address for the one in the namespace.
	cloudRoot := framework.KeadmRoot(t, "keadm-2n-cloud-")
	t.Cleanup(func() {
		keadmCloudKillLeftovers(cloudRoot)
		if out, code := framework.RunKeadmIn(nil, keadm, "reset", "cloud", "--force", "--root", cloudRoot); code != 0 {
			t.Errorf("cleanup reset cloud: %s", out)
		}
	})
	ws, https := framework.FreePort(t), framework.FreePort(t)
	out, code := framework.RunKeadmIn(nil, keadm, "init", "--root", cloudRoot, "--kube-config", cp.Kubeconfig,
		"--advertise-address", "127.0.0.1,"+ns.HostIP, "--websocket-port", keadmCloudItoa(ws), "--https-port", keadmCloudItoa(https),
		"--monitor-address", "127.0.0.1:"+keadmCloudItoa(framework.FreePort(t)), "--no-systemd")
	if code != 0 {
		t.Fatalf("keadm init exited %d:\n%s\ncloudcore log:\n%s", code, out, framework.FileTail(filepath.Join(cloudRoot, "var/log/kubeedge/cloudcore.log"), 4096))
	}
	t.Logf("keadm init:\n%s", out)
	for _, want := range []string{"server certificate SANs 127.0.0.1, " + ns.HostIP, "[wait] cloudcore ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q", want)
		}
	}
	cloudPID := keadmCloudPID(t, cloudRoot)
	if cloudPID == 0 {
		t.Fatal("cloudcore is not running after keadm init")
	}

	out, code = framework.RunKeadmIn(nil, keadm, "gettoken", "--kube-config", cp.Kubeconfig)
	tok := strings.TrimSpace(out)
	if code != 0 || len(strings.Split(tok, ".")) != 4 {
		t.Fatalf("keadm gettoken exited %d: %q", code, out)
	}

	// keadm join, both nodes at once, as two hosts would. The node in the namespace cannot reach the API server
	// (it listens on this host's loopback), so its join waits for the cloud link only; Ready is checked below.
	hostNode.cloud = net.JoinHostPort("127.0.0.1", keadmCloudItoa(ws))
	nsNode.cloud = net.JoinHostPort(ns.HostIP, keadmCloudItoa(ws))
	for _, n := range nodes {
		t.Cleanup(func() {
			// A test that stopped half way must not leave the node running; reset is the tool for that. It runs
			// before containerd stops and the namespace goes (cleanups run in reverse).
			if out, code := framework.RunKeadmIn(nil, keadm, "reset", "edge", "--force", "--root", n.root); code != 0 {
				t.Errorf("cleanup reset edge %s: %s", n.name, out)
			}
		})
	}
	joinArgs := func(n *twoNode) []string {
		args := []string{"join", "--no-systemd", "--root", n.root, "--cloudcore-ipport", n.cloud, "--certport", keadmCloudItoa(https),
			"--token", tok, "--edgenode-name", n.name, "--remote-runtime-endpoint", n.ctd.Endpoint(), "--wait", "60s",
			"--set", "modules.edged.tailoredKubeletConfig.cgroupRoot=" + n.ctd.CgroupParent,
			"--set", "modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency=2s"}
		if n.netns == nil {
			// Two edgecores share this host's loopback: the second must not take the first one's metrics port.
			return append(args, "--kube-config", cp.Kubeconfig, "--set", "metricsServer.bindAddress=127.0.0.1:"+keadmCloudItoa(framework.FreePort(t)))
		}
		// Its own loopback: edgecore's default metrics port is free there. The node IP is the veth address,
		// since the namespace has no default route to detect one from.
		return append(args, "--set", "modules.edged.nodeIP="+n.netns.IP)
	}
	joined := make(chan string, len(nodes))
	for _, n := range nodes {
		args := joinArgs(n)
		go func() {
			out, code := framework.RunKeadmIn(n.netns, keadm, args...)
			if code != 0 {
				out = fmt.Sprintf("FAILED: keadm join %s exited %d:\n%s\nedgecore log:\n%s", n.name, code, out,
					framework.FileTail(filepath.Join(n.root, "var/log/kubeedge/edgecore.log"), 4096))
			}
			joined <- out
		}()
	}
	// Both finish before any failure stops the test: the cleanup's reset must not race a join still starting
	// edgecore.
	failed := false
	for range nodes {
		out := <-joined
		failed = failed || strings.HasPrefix(out, "FAILED: ")
		t.Logf("keadm join:\n%s", out)
	}
	if failed {
		t.FailNow()
	}
	t.Logf("both nodes joined after %s", time.Since(begin).Round(time.Millisecond))

	edgecorePIDs := map[string]int{}
	for _, n := range nodes {
		pid := keadmEdgePID(t, n.root)
		edgecorePIDs[n.name] = pid
		if got := ns.Contains(pid); got != (n.netns != nil) {
			t.Errorf("edgecore of %s (pid %d) inside namespace %s: %v", n.name, pid, ns.Name, got)
		}
	}

	// kubectl shows both nodes Ready with KubeEdge's roles.
	framework.EventuallyState(t, 60*time.Second, "both nodes Ready with roles agent,edge in kubectl get nodes", func() (bool, string) {
		out, err := cp.Kubectl(ctx, "get", "nodes", "--no-headers")
		return err == nil && keadmEdgeHasRow(out, hostNode.name, "Ready", "agent,edge") && keadmEdgeHasRow(out, nsNode.name, "Ready", "agent,edge"),
			fmt.Sprintf("%s%v", out, err)
	})
	out, _ = cp.Kubectl(ctx, "get", "nodes", "-o", "wide")
	t.Logf("kubectl get nodes -o wide:\n%s", out)
	for _, n := range nodes {
		var node corev1.Node
		if err := cp.Client.Get(ctx, client.ObjectKey{Name: n.name}, &node); err != nil {
			t.Fatal(err)
		}
		if _, ok := node.Labels["node-role.kubernetes.io/edge"]; !ok || node.Labels[corev1.LabelHostname] != n.name {
			t.Errorf("node %s labels: %v", n.name, node.Labels)
		}
	}

	// A pod on each node, placed by kubernetes.io/hostname as a user would pin it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}}
	if err := cp.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, n := range nodes {
		// A port free on this host, so that an answer on this host's loopback could only come from a pod that
		// is not in the namespace.
		n.port = framework.FreePort(t)
		listen := "127.0.0.1"
		if n.netns != nil {
			listen = "0.0.0.0"
		}
		noToken := false
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: n.pod()},
			Spec: corev1.PodSpec{
				// Set directly: there is no scheduler here, and the selector says the same for any that reads it.
				NodeName:                     n.name,
				NodeSelector:                 map[string]string{corev1.LabelHostname: n.name},
				HostNetwork:                  true,
				AutomountServiceAccountToken: &noToken,
				Containers: []corev1.Container{{Name: "app", Image: framework.TestAppImage, ImagePullPolicy: corev1.PullNever,
					Env: []corev1.EnvVar{{Name: "POD_NAME", Value: n.pod()}, {Name: "PORT", Value: keadmCloudItoa(n.port)}, {Name: "LISTEN_HOST", Value: listen}}}},
			},
		}
		if err := cp.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		var p corev1.Pod
		framework.EventuallyState(t, 60*time.Second, "pod "+n.pod()+" Running and Ready", func() (bool, string) {
			err := cp.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: n.pod()}, &p)
			status, _ := json.Marshal(p.Status)
			return err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready,
				fmt.Sprintf("%v %s\nedgecore log:\n%s", err, status, framework.FileTail(filepath.Join(n.root, "var/log/kubeedge/edgecore.log"), 4096))
		})
		if n.netns != nil && (p.Status.HostIP != n.netns.IP || p.Status.PodIP != n.netns.IP) {
			t.Errorf("pod %s: hostIP %s, podIP %s, want the namespace's %s", n.pod(), p.Status.HostIP, p.Status.PodIP, n.netns.IP)
		}
	}
	t.Logf("both pods Running after %s", time.Since(begin).Round(time.Millisecond))

	// Each pod's process runs in its node's network, and only there.
	appPIDs := map[string]int{}
	for _, n := range nodes {
		pid := twoNodeContainerPID(t, n.ctd)
		appPIDs[n.name] = pid
		if got := ns.Contains(pid); got != (n.netns != nil) {
			t.Errorf("pod %s (pid %d) inside namespace %s: %v", n.pod(), pid, ns.Name, got)
		}
	}
	want := "hello from " + hostNode.pod()
	if body, err := twoNodeGet(net.JoinHostPort("127.0.0.1", keadmCloudItoa(hostNode.port))); err != nil || strings.TrimSpace(body) != want {
		t.Errorf("pod on %s over this host's loopback: %q, %v; want %q", hostNode.name, body, err, want)
	}
	want = "hello from " + nsNode.pod()
	framework.Eventually(t, 10*time.Second, nsNode.pod()+" answering on "+ns.IP, func() bool {
		body, err := twoNodeGet(net.JoinHostPort(ns.IP, keadmCloudItoa(nsNode.port)))
		return err == nil && strings.TrimSpace(body) == want
	})
	if body, err := twoNodeGet(net.JoinHostPort("127.0.0.1", keadmCloudItoa(nsNode.port))); err == nil {
		t.Errorf("pod %s answers on this host's loopback (%q): it is not in the namespace", nsNode.pod(), body)
	}

	// keadm reset edge on each "host" leaves nothing of that node: no edgecore, no pod, no shim, no container in
	// its containerd, no file under its root.
	for _, n := range nodes {
		out, code := framework.RunKeadmIn(n.netns, keadm, "reset", "edge", "--force", "--root", n.root)
		if code != 0 {
			t.Fatalf("keadm reset edge %s exited %d:\n%s", n.name, code, out)
		}
		t.Logf("keadm reset edge %s:\n%s", n.name, out)
		for _, want := range []string{"[reset] stopped edgecore (pid " + strconv.Itoa(edgecorePIDs[n.name]) + ")", "[reset] removed 1 pods", "[reset] done"} {
			if !strings.Contains(out, want) {
				t.Errorf("reset of %s: output lacks %q", n.name, want)
			}
		}
		if procs := keadmEdgeProcesses(t, filepath.Join(n.root, "usr/local/bin/edgecore")); len(procs) > 0 {
			t.Errorf("edgecore of %s still running after reset: pids %v", n.name, procs)
		}
		framework.Eventually(t, 15*time.Second, "pod process and shims of "+n.name+" gone", func() bool {
			return !framework.ProcessAlive(appPIDs[n.name]) && len(twoNodeShims(n.ctd)) == 0
		})
		for _, what := range []string{"containers", "tasks"} {
			if out, err := exec.Command("ctr", "-a", n.ctd.Socket, "-n", "k8s.io", what, "ls", "-q").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("ctr -n k8s.io %s ls on %s's containerd after reset: %v\n%s", what, n.name, err, out)
			}
		}
		if left := keadmEdgeFiles(t, n.root); len(left) > 0 {
			t.Errorf("left under %s after reset of %s: %s", n.root, n.name, strings.Join(left, ", "))
		}
	}
	// What still runs in the namespace is its containerd, which the test, not keadm, started.
	ctdPID, _ := strconv.Atoi(strings.TrimSpace(string(twoNodeRead(t, filepath.Join(nsNode.ctd.Dir, "containerd.pid")))))
	if left := ns.Processes(); len(left) != 1 || left[0] != ctdPID {
		t.Errorf("processes in namespace %s after reset: %v, want only containerd (pid %d)", ns.Name, left, ctdPID)
	}

	// keadm reset cloud leaves no cloudcore and nothing under its root.
	out, code = framework.RunKeadmIn(nil, keadm, "reset", "cloud", "--force", "--root", cloudRoot)
	if code != 0 {
		t.Fatalf("keadm reset cloud exited %d:\n%s", code, out)
	}
	t.Logf("keadm reset cloud:\n%s", out)
	if framework.ProcessAlive(cloudPID) {
		t.Errorf("cloudcore (pid %d) still runs after reset", cloudPID)
	}
	if procs := keadmEdgeProcesses(t, filepath.Join(cloudRoot, "usr/local/bin/cloudcore")); len(procs) > 0 {
		t.Errorf("cloudcore still running after reset: pids %v", procs)
	}
	// Unlike reset edge, reset cloud keeps the system directories it did not create alone (usr/local/bin,
	// var/log, ...) even under a --root, empty; everything of cloudcore's goes.
	for _, p := range keadmEdgeFiles(t, cloudRoot) {
		if st, err := os.Lstat(filepath.Join(cloudRoot, p)); err != nil || !st.IsDir() || strings.Contains(p, "kubeedge") {
			t.Errorf("left under %s after reset cloud: %s", cloudRoot, p)
		}
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", keadmCloudItoa(ws)), time.Second); err == nil {
		c.Close()
		t.Errorf("websocket port %d still accepts connections after reset cloud", ws)
	}
	t.Logf("done in %s", time.Since(begin).Round(time.Millisecond))
}

// twoNodeContainerPID is the PID of the one container on ctd, as the runtime reports it.
func twoNodeContainerPID(t *testing.T, ctd *framework.Containerd) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := ctd.ListContainers(ctx)
	if err != nil || len(cs) != 1 {
		t.Fatalf("want one container on %s, got %d (%v)", ctd.Endpoint(), len(cs), err)
	}
	st, err := ctd.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cs[0].Id, Verbose: true})
	if err != nil {
		t.Fatalf("container status of %s: %v", cs[0].Id, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.PID <= 0 {
		t.Fatalf("no pid in the verbose status of container %s (%v): %s", cs[0].Id, err, st.GetInfo()["info"])
	}
	return info.PID
}

// twoNodeShims lists the live containerd shims serving ctd, recognised by their exact -address argument.
func twoNodeShims(ctd *framework.Containerd) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !strings.Contains(filepath.Base(args[0]), "containerd-shim") || !framework.ProcessAlive(pid) {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == ctd.Socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// twoNodeGet is GET http://addr/ with a short timeout, no proxy.
func twoNodeGet(addr string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("status %s", resp.Status)
	}
	return string(body), nil
}

func twoNodeRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
