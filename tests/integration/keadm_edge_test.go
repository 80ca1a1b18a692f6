//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
	"github.com/tether-edge/tether/tests/framework"
)

// The keadm workflow on one machine: preflight failures, join (real binaries, edgecore detached under a --root),
// a pod on the node, debug get, and reset edge leaving nothing behind.
func TestKeadmEdgeJoinDebugReset(t *testing.T) {
	cp := framework.StartControlPlane(t)
	ctd := framework.StartContainerd(t)
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, t.TempDir()))
	tok := framework.Token(t, cp)
	keadm := keadmEdgeBuild(t)
	ctx := context.Background()

	hub := cloud.Config.Modules.CloudHub
	wsPort, httpsPort := strconv.Itoa(int(hub.WebSocket.Port)), strconv.Itoa(int(hub.HTTPS.Port))
	metrics := "127.0.0.1:" + strconv.Itoa(int(framework.FreePort(t)))
	args := func(root string, override ...string) []string {
		a := map[string]string{
			"--root": root, "--cloudcore-ipport": "127.0.0.1:" + wsPort, "--certport": httpsPort, "--token": tok,
			"--edgenode-name": "edge1", "--remote-runtime-endpoint": ctd.Endpoint(), "--kube-config": cp.Kubeconfig, "--wait": "90s",
		}
		for i := 0; i+1 < len(override); i += 2 {
			a[override[i]] = override[i+1]
		}
		out := []string{"join", "--no-systemd",
			"--set", "modules.edged.tailoredKubeletConfig.cgroupRoot=" + ctd.CgroupParent,
			"--set", "modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency=2s",
			"--set", "metricsServer.bindAddress=" + metrics}
		for k, v := range a {
			out = append(out, k, v)
		}
		return out
	}

	t.Run("preflight failures", func(t *testing.T) {
		if err := cp.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-taken"}}); err != nil {
			t.Fatal(err)
		}
		caDER, caKeyDER := keadmEdgeCA(t, cp)
		expired, err := token.Create(caDER, caKeyDER, time.Hour, time.Now().Add(-3*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		otherCA, otherKey, err := certs.NewCA(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		otherKeyDER, err := certs.MarshalKeyDER(otherKey)
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := token.Create(otherCA.Raw, otherKeyDER, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name     string
			override []string
			prepare  func(root string)
			want     string
		}{
			{"bad token", []string{"--token", "not-a-token"}, nil, "--token: malformed token: want 4 dot-separated parts"},
			{"expired token", []string{"--token", expired}, nil, `--token: token expired at`},
			{"wrong CA hash", []string{"--token", foreign}, nil, "--token was not issued by the cloudcore at 127.0.0.1:" + httpsPort},
			{"unreachable port", []string{"--cloudcore-ipport", "127.0.0.1:" + strconv.Itoa(int(framework.FreePort(t)))}, nil,
				"cannot reach cloudcore's websocket port"},
			{"name taken", []string{"--edgenode-name", "edge-taken"}, nil, `node "edge-taken" already exists in the cluster`},
			{"missing runtime socket", []string{"--remote-runtime-endpoint", "unix:///nonexistent/containerd.sock"}, nil,
				"container runtime socket /nonexistent/containerd.sock does not exist"},
			{"already joined", nil, func(root string) {
				p := filepath.Join(root, "etc/kubeedge/config/edgecore.yaml")
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, p, "kind: EdgeCore\n")
			}, "this host already joined"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				root := t.TempDir()
				if tc.prepare != nil {
					tc.prepare(root)
				}
				before := keadmEdgeFiles(t, root)
				out, code := keadmEdgeRun(t, keadm, args(root, tc.override...)...)
				t.Logf("keadm join (%s): exit %d\n%s", tc.name, code, out)
				if code == 0 || !strings.Contains(out, tc.want) {
					t.Fatalf("exit %d, output:\n%s\nwant a failure containing %q", code, out, tc.want)
				}
				if !strings.Contains(out, "nothing was changed") || strings.Contains(out, "[join]") {
					t.Errorf("a failed preflight must change nothing:\n%s", out)
				}
				if after := keadmEdgeFiles(t, root); strings.Join(after, ",") != strings.Join(before, ",") {
					t.Errorf("files under the root changed: %v -> %v", before, after)
				}
			})
		}
	})

	// Not t.TempDir(): reset must leave the root itself empty, and a short path keeps logs readable.
	root, err := os.MkdirTemp("/tmp", "keadm-edge-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// If the test stopped half way, the node must not outlive it: reset is the tool for that. This runs before
		// containerd stops (cleanups run in reverse).
		if out, code := keadmEdgeRun(t, keadm, "reset", "edge", "--force", "--root", root); code != 0 {
			t.Errorf("cleanup reset: %s", out)
		}
		_ = os.RemoveAll(root)
	})

	out, code := keadmEdgeRun(t, keadm, args(root)...)
	if code != 0 {
		t.Fatalf("keadm join exited %d:\n%s\nedgecore log:\n%s", code, out, framework.FileTail(filepath.Join(root, "var/log/kubeedge/edgecore.log"), 4096))
	}
	t.Logf("keadm join:\n%s", out)
	if !strings.Contains(out, "[join] node edge1 connected to cloudcore and Ready") {
		t.Errorf("join did not report the node Ready:\n%s", out)
	}
	keadmEdgeNodeReady(t, cp, "edge1")
	pid := keadmEdgePID(t, root)

	// edgecore trades the token for certificates and erases it from its config: it is a credential.
	framework.Eventually(t, 30*time.Second, "join token erased from edgecore.yaml", func() bool {
		cfg, err := v1alpha2.Load(filepath.Join(root, "etc/kubeedge/config/edgecore.yaml"))
		return err == nil && cfg.Modules.EdgeHub.Token == ""
	})

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}}
	if err := cp.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	noToken := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "keadm-pod"},
		Spec: corev1.PodSpec{
			NodeName: "edge1", HostNetwork: true, AutomountServiceAccountToken: &noToken,
			Containers: []corev1.Container{{Name: "app", Image: framework.TestAppImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "POD_NAME", Value: "keadm-pod"}}}},
		},
	}
	if err := cp.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 90*time.Second, "pod keadm-pod Running", func() bool {
		var p corev1.Pod
		return cp.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "keadm-pod"}, &p) == nil &&
			p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready
	})

	// debug get reads the live database next to the running edgecore.
	framework.Eventually(t, 30*time.Second, "keadm debug get pods lists keadm-pod Running", func() bool {
		out, code = keadmEdgeRun(t, keadm, "debug", "get", "pods", "--root", root)
		return code == 0 && keadmEdgeHasRow(out, "default", "keadm-pod", "1/1", "Running")
	})
	t.Logf("keadm debug get pods:\n%s", out)
	out, code = keadmEdgeRun(t, keadm, "debug", "get", "pod", "keadm-pod", "-o", "json", "--root", root)
	var stored corev1.Pod
	if code != 0 || json.Unmarshal([]byte(out), &stored) != nil || stored.Spec.NodeName != "edge1" {
		t.Errorf("debug get -o json: exit %d:\n%s", code, out)
	}
	if out, code = keadmEdgeRun(t, keadm, "debug", "get", "all", "--root", root); code != 0 || !strings.Contains(out, "node/edge1") {
		t.Errorf("debug get all: exit %d:\n%s", code, out)
	}
	if sbs, err := ctd.ListSandboxes(ctx); err != nil || len(sbs) == 0 {
		t.Fatalf("no sandbox in containerd for the pod (%v)", err)
	}

	out, code = keadmEdgeRun(t, keadm, "reset", "edge", "--force", "--root", root)
	if code != 0 {
		t.Fatalf("keadm reset edge exited %d:\n%s", code, out)
	}
	t.Logf("keadm reset edge:\n%s", out)
	for _, want := range []string{"[reset] stopped edgecore (pid " + strconv.Itoa(pid) + ")", "[reset] removed 1 pods", "[reset] done"} {
		if !strings.Contains(out, want) {
			t.Errorf("reset output lacks %q", want)
		}
	}
	if procs := keadmEdgeProcesses(t, filepath.Join(root, "usr/local/bin/edgecore")); len(procs) > 0 {
		t.Errorf("edgecore still running after reset: pids %v", procs)
	}
	if sbs, err := ctd.ListSandboxes(ctx); err != nil || len(sbs) > 0 {
		t.Errorf("sandboxes left in containerd after reset: %d (%v)", len(sbs), err)
	}
	if cs, err := ctd.ListContainers(ctx); err != nil || len(cs) > 0 {
		t.Errorf("containers left in containerd after reset: %d (%v)", len(cs), err)
	}
	if left := keadmEdgeFiles(t, root); len(left) > 0 {
		t.Errorf("left under %s after reset: %s", root, strings.Join(left, ", "))
	}
	// Again: harmless.
	if out, code = keadmEdgeRun(t, keadm, "reset", "edge", "--force", "--root", root); code != 0 || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second reset: exit %d:\n%s", code, out)
	}
}

// keadmEdgeBuild builds keadm and edgecore side by side, where join looks for edgecore by default.
func keadmEdgeBuild(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/keadm", "./cmd/edgecore")
	cmd.Dir = framework.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building keadm and edgecore: %v\n%s", err, out)
	}
	return filepath.Join(dir, "keadm")
}

// keadmEdgeRun runs keadm and returns its combined output and exit code.
func keadmEdgeRun(t *testing.T, keadm string, args ...string) (string, int) {
	t.Helper()
	out, code := framework.RunKeadm(keadm, args...)
	if code < 0 {
		t.Fatal(out)
	}
	return out, code
}

// keadmEdgeCA reads the cluster CA from Secret kubeedge/casecret, to mint tokens the cloud would have issued.
func keadmEdgeCA(t *testing.T, cp *framework.ControlPlane) (caDER, keyDER []byte) {
	t.Helper()
	var s corev1.Secret
	if err := cp.Client.Get(context.Background(), types.NamespacedName{Namespace: "kubeedge", Name: "casecret"}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data["cadata"], s.Data["cakeydata"]
}

func keadmEdgeNodeReady(t *testing.T, cp *framework.ControlPlane, name string) {
	t.Helper()
	var n corev1.Node
	if err := cp.Client.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return
		}
	}
	t.Fatalf("node %s not Ready right after keadm join reported it Ready: %+v", name, n.Status.Conditions)
}

func keadmEdgePID(t *testing.T, root string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "var/run/kubeedge/edgecore.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// keadmEdgeProcesses lists live (not zombie) processes running bin.
func keadmEdgeProcesses(t *testing.T, bin string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(stat, ')'); string(argv0) == bin && i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// keadmEdgeFiles lists everything under root, directories included.
func keadmEdgeFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			out = append(out, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keadmEdgeHasRow finds a table row with these cells in order.
func keadmEdgeHasRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(cells) && strings.Join(f[:len(cells)], " ") == strings.Join(cells, " ") {
			return true
		}
	}
	return false
}
