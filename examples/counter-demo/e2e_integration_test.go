//go:build integration

// The counter demo end to end, as the tutorial runs it, with the two real binaries as processes: a real
// kube-apiserver, cloudcore and edgecore in-process (edgecore with its embedded MQTT broker), the web app
// talking to the API server through a kubeconfig, and the mapper on the edge broker.
//
//	go test -tags integration ./examples/counter-demo/   (needs make tools)
package counterdemo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/tests/framework"
)

const node = "edge1" // the node name in crds/kubeedge-counter-instance.yaml

type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", filepath.Base(bin), b)
		}
	})
	return p
}

// stop sends SIGTERM and waits; both programs exit on it.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited %d on SIGTERM", p.cmd.Path, code)
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s ignored SIGTERM", p.cmd.Path)
	}
}

// buildDemo builds web-controller-app and counter-mapper into dir and returns dir.
func buildDemo(t *testing.T, dir string) string {
	t.Helper()
	for _, pkg := range []string{"web-controller-app", "counter-mapper"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, pkg),
			"github.com/tether-edge/tether/examples/counter-demo/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

type reply struct {
	Result       int
	ResultString map[string]string
	ResultObject any
}

func call(t *testing.T, method, url string) (int, reply) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s %s: %d %q: %v", method, url, res.StatusCode, b, err)
	}
	return res.StatusCode, r
}

func TestCounterDemoEndToEnd(t *testing.T) {
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"))
	// The node joins while its name is free, as keadm join does: a join token cannot claim an existing Node. Then
	// stand in for Edged's registration.
	framework.BootstrapEdge(t, cfg)
	if err := cp.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	cfg.Modules.MetaManager.Enable = true
	cfg.Modules.DeviceTwin.Enable = true
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", framework.FreePort(t))
	eb := cfg.Modules.EventBus
	eb.Enable, eb.MQTTMode, eb.MQTTServerInternal = true, 0, broker
	framework.StartEdgeNode(t, cfg)

	bin := buildDemo(t, filepath.Join(dir, "bin"))

	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	apply := func(file string) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, "kubectl apply -f "+file, func() bool {
			_, err := cp.Kubectl(ctx, "apply", "-f", filepath.Join(crds, file))
			return err == nil
		})
	}
	apply("kubeedge-counter-model.yaml")
	apply("kubeedge-counter-instance.yaml")

	port := framework.FreePort(t)
	start(t, filepath.Join(bin, "web-controller-app"), "--kubeconfig", cp.Kubeconfig, "--address", "127.0.0.1",
		"--port", strconv.Itoa(int(port)))
	mapperArgs := []string{"--broker", broker, "--interval", "200ms", "-v", "1"}
	mapper := start(t, filepath.Join(bin, "counter-mapper"), mapperArgs...)
	framework.WaitForPort(t, port)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(page, []byte(">Execute</button>")) {
		t.Fatalf("page lacks the Execute button: %s", page)
	}

	status := func() (string, int) {
		t.Helper()
		code, r := call(t, "GET", base+"/track/control/STATUS")
		if code != 200 || r.Result != 3 {
			t.Fatalf("STATUS = %d %+v", code, r)
		}
		n, err := strconv.Atoi(r.ResultString["value"])
		if err != nil {
			t.Fatalf("STATUS value %q is not a count", r.ResultString["value"])
		}
		return r.ResultString["status"], n
	}
	command := func(cmd string, result int) {
		t.Helper()
		if code, r := call(t, "POST", base+"/track/control/"+cmd); code != 200 || r.Result != result {
			t.Fatalf("%s = %d %+v", cmd, code, r)
		}
	}
	waitCounting := func(what string, above int) int {
		t.Helper()
		var n int
		framework.Eventually(t, 60*time.Second, what, func() bool {
			var s string
			s, n = status()
			return s == "ON" && n > above
		})
		return n
	}
	waitOff := func(what string) {
		t.Helper()
		framework.Eventually(t, 60*time.Second, what, func() bool {
			s, n := status()
			return s == "OFF" && n == 0
		})
		time.Sleep(time.Second) // five ticks: the count must stay at 0
		if s, n := status(); s != "OFF" || n != 0 {
			t.Fatalf("after OFF: status %s, value %d; want OFF, 0", s, n)
		}
	}

	if s, n := status(); s != "OFF" || n != 0 {
		t.Fatalf("initial STATUS = %s, %d; want OFF, 0", s, n)
	}
	command("ON", 1)
	n := waitCounting("the reported count to pass 2", 2)
	waitCounting("the count to keep rising", n)

	command("OFF", 2)
	waitOff("OFF and a reported 0")

	// A restarted mapper resumes what the twin wants without a new command.
	command("ON", 1)
	n = waitCounting("counting again", 1)
	mapper.stop(t)
	mapper = start(t, filepath.Join(bin, "counter-mapper"), mapperArgs...)
	waitCounting("counting after a mapper restart", n+2)

	// kubeedge/examples#92: re-applying the instance resets desired to OFF; the mapper stops, and ON works again.
	apply("kubeedge-counter-instance.yaml")
	waitOff("OFF after re-applying the instance")
	command("ON", 1)
	waitCounting("counting after re-apply and ON", 1)

	if code, r := call(t, "POST", base+"/track/control/PLAY"); code != 400 || !strings.Contains(r.ResultString["error"], "PLAY") {
		t.Fatalf("PLAY = %d %+v, want 400", code, r)
	}
}

// TestDeploymentManifests validates the two Deployment files against a real API server (client and server
// dry runs with strict field validation), applies them, and checks the web app's RBAC through impersonation.
func TestDeploymentManifests(t *testing.T) {
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	files := []string{"kubeedge-web-controller-app.yaml", "kubeedge-pi-counter-app.yaml"}
	for _, f := range files {
		path := filepath.Join(crds, f)
		for _, dryRun := range []string{"client", "server"} {
			framework.Eventually(t, 30*time.Second, "kubectl apply --dry-run="+dryRun+" -f "+f, func() bool {
				out, err := cp.Kubectl(ctx, "apply", "--dry-run="+dryRun, "--validate=strict", "-f", path)
				if err != nil {
					t.Logf("%s: %v", f, err)
				}
				return err == nil && strings.Contains(out, "deployment.apps/")
			})
		}
		if _, err := cp.Kubectl(ctx, "apply", "--validate=strict", "-f", path); err != nil {
			t.Fatal(err)
		}
	}
	sa := "system:serviceaccount:default:kubeedge-counter-app"
	for _, tc := range []struct {
		verb, resource string
		want           string
	}{
		{"get", "devices.devices.kubeedge.io", "yes"},
		{"patch", "devices.devices.kubeedge.io", "yes"},
		{"update", "devices.devices.kubeedge.io", "yes"},
		{"watch", "devices.devices.kubeedge.io", "yes"},
		{"delete", "devices.devices.kubeedge.io", "no"},
		{"create", "devices.devices.kubeedge.io", "no"},
		{"get", "secrets", "no"},
	} {
		out, _ := cp.Kubectl(ctx, "auth", "can-i", tc.verb, tc.resource, "--as", sa, "-n", "default")
		if strings.TrimSpace(out) != tc.want {
			t.Errorf("can-i %s %s as the web app = %q, want %s", tc.verb, tc.resource, out, tc.want)
		}
	}
	out, err := cp.Kubectl(ctx, "get", "deployment", "kubeedge-pi-counter", "-o",
		"jsonpath={.spec.template.spec.hostNetwork} {.spec.template.spec.automountServiceAccountToken} {.spec.template.spec.nodeSelector}")
	if err != nil || out != `true false {"kubernetes.io/hostname":"edge1"}` {
		t.Errorf("mapper deployment = %q, %v", out, err)
	}
}
