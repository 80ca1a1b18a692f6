//go:build integration

package counterdemo_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"k8s.io/apimachinery/pkg/types"

	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

// TestCounterDemoInBrowser is the tutorial as a user lives it, on real parts only: the page in headless Chromium,
// the web app as a process with a kubeconfig (the control plane here runs no kubelet), a real API server with
// kube-controller-manager and kube-scheduler, cloudcore, and edge node edge1 whose Edged runs the mapper's
// Deployment (kubeedge-pi-counter-app.yaml as shipped, image from make images) on containerd, next to a
// mosquitto broker that edgecore's EventBus and the mapper share. It saves a screenshot of the counting page
// ($TETHER_ARTIFACTS, default _output/test-artifacts/counter-demo.png).
func TestCounterDemoInBrowser(t *testing.T) {
	if framework.HaveChromium() == "" {
		t.Fatal("chromium not found: run hack/install-deps.sh")
	}
	ctx := context.Background()
	cp := framework.StartControlPlane(t)
	framework.StartKubeControllers(t, cp)
	ctd := framework.StartContainerd(t)
	broker := framework.NewMosquitto(t)
	dir := t.TempDir()

	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeNodeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"), ctd)
	cfg.Modules.DeviceTwin.Enable = true
	eb := cfg.Modules.EventBus
	eb.Enable, eb.MQTTMode, eb.MQTTServerExternal = true, 2, broker.URL
	framework.StartEdgeNode(t, cfg)

	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	apply := func(path string) {
		t.Helper()
		framework.Eventually(t, 30*time.Second, "kubectl apply -f "+path, func() bool {
			_, err := cp.Kubectl(ctx, "apply", "-f", path)
			return err == nil
		})
	}
	apply(filepath.Join(crds, "kubeedge-counter-model.yaml"))
	apply(filepath.Join(crds, "kubeedge-counter-instance.yaml"))
	// The mapper's Deployment as shipped, pointed at this test's broker.
	manifest, err := os.ReadFile(filepath.Join(crds, "kubeedge-pi-counter-app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest = bytes.ReplaceAll(manifest, []byte("tcp://127.0.0.1:1883"), []byte(broker.URL))
	mapperYAML := filepath.Join(dir, "kubeedge-pi-counter-app.yaml")
	if err := os.WriteFile(mapperYAML, manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	apply(mapperYAML)
	mapperPod := waitMapperPod(t, cp, "")

	bin := buildDemo(t, filepath.Join(dir, "bin"))
	port := framework.FreePort(t)
	start(t, filepath.Join(bin, "web-controller-app"), "--kubeconfig", cp.Kubeconfig, "--address", "127.0.0.1",
		"--port", strconv.Itoa(int(port)))
	framework.WaitForPort(t, port)

	// reported reads the count from the API server, as kubectl get device counter -o yaml shows it.
	reported := func() (desired string, count int) {
		t.Helper()
		var d devicesv1alpha2.Device
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "counter"}, &d); err != nil {
			t.Fatalf("get device counter: %v", err)
		}
		for _, tw := range d.Status.Twins {
			if tw.PropertyName == "status" {
				n, _ := strconv.Atoi(tw.Reported.Value)
				return tw.Desired.Value, n
			}
		}
		t.Fatalf("device counter has no status twin: %+v", d.Status)
		return "", 0
	}
	// waitRising waits until the API server's count passes above twice, and returns the last count seen.
	waitRising := func(what string, above int) int {
		t.Helper()
		start := time.Now()
		var n int
		framework.Eventually(t, 60*time.Second, what+": the reported count passing "+strconv.Itoa(above), func() bool {
			var d string
			d, n = reported()
			return d == "ON" && n > above
		})
		first := n
		framework.Eventually(t, 30*time.Second, what+": the reported count rising past "+strconv.Itoa(first), func() bool {
			var d string
			d, n = reported()
			return d == "ON" && n > first
		})
		t.Logf("%s: count rising in the API server %s after the command (%d → %d)", what, time.Since(start).Round(10*time.Millisecond), first, n)
		return n
	}
	waitZero := func(what string) {
		t.Helper()
		framework.Eventually(t, 60*time.Second, what+": desired OFF and a reported 0", func() bool {
			d, n := reported()
			return d == "OFF" && n == 0
		})
	}

	b := framework.StartBrowser(t)
	page := &counterPage{t: t, ctx: b}
	page.open(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if got := page.text("#device-name"); got != "default/counter" {
		t.Errorf("page names device %q, want default/counter", got)
	}
	page.waitCounter("the page showing OFF and 0 at first", func(state string, n int) bool { return state == "OFF" && n == 0 })

	page.execute("ON", "Turn On counter")
	n := waitRising("ON from the page", 0)
	page.waitCounter("the page's live counter showing ON and a count", func(state string, c int) bool { return state == "ON" && c >= n })
	page.execute("STATUS", `"status":"ON"`)
	if res := page.text("#stations-view-json"); !strings.Contains(res, `"Result":3`) || !strings.Contains(res, `"value":"`) {
		t.Errorf("STATUS shows %q, want the tutorial's reply with status ON and the value", res)
	}
	page.screenshot()

	page.execute("OFF", "Turn Off counter")
	waitZero("OFF from the page")
	time.Sleep(3 * time.Second) // three ticks of the mapper: the count must stay at 0
	if d, n := reported(); d != "OFF" || n != 0 {
		t.Fatalf("after OFF the API server has desired %s, reported %d; want OFF, 0", d, n)
	}
	page.waitCounter("the page showing OFF and 0", func(state string, c int) bool { return state == "OFF" && c == 0 })

	// A new mapper pod (the Deployment replaces the deleted one) resumes on ON.
	if _, err := cp.Kubectl(ctx, "delete", "pod", mapperPod, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	mapperPod = waitMapperPod(t, cp, mapperPod)
	page.execute("ON", "Turn On counter")
	waitRising("ON after the mapper pod was replaced", 0)
	page.execute("OFF", "Turn Off counter")
	waitZero("OFF after the mapper pod was replaced")

	// A restarted broker: edgecore and the mapper reconnect and subscribe again.
	broker.Stop()
	broker.Start()
	page.execute("ON", "Turn On counter")
	waitRising("ON after a broker restart", 0)

	// kubeedge/examples#92: applying the instance again puts desired back to OFF; the counter stops, and ON
	// from the page works again (the tutorial's app skipped it, believing the counter was still on).
	apply(filepath.Join(crds, "kubeedge-counter-instance.yaml"))
	waitZero("OFF after re-applying the instance")
	page.waitCounter("the page following the re-applied instance", func(state string, c int) bool { return state == "OFF" && c == 0 })
	page.execute("ON", "Turn On counter")
	waitRising("ON after re-applying the instance", 0)
	page.waitCounter("the page counting again", func(state string, c int) bool { return state == "ON" && c > 0 })
}

// waitMapperPod waits for a running, ready mapper pod on edge1 other than old, and returns its name.
func waitMapperPod(t *testing.T, cp *framework.ControlPlane, old string) string {
	t.Helper()
	var name string
	framework.Eventually(t, 120*time.Second, "a running mapper pod on "+node, func() bool {
		out, err := cp.Kubectl(context.Background(), "get", "pods", "-l", "k8s-app=kubeedge-pi-counter", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.containerStatuses[*].ready}{"\n"}{end}`)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] != old && f[1] == node && f[2] == "true" {
				name = f[0]
				return true
			}
		}
		return false
	})
	return name
}

// counterPage drives the demo page in the browser the way a user does.
type counterPage struct {
	t   *testing.T
	ctx context.Context
}

// run runs one browser action, bounded so that a hung page fails the test instead of stalling it.
func run[T any](p *counterPage, what string, action chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		p.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

func (p *counterPage) open(url string) {
	p.t.Helper()
	run(p, "open "+url, chromedp.Steps(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#track-play-button"))))
}

func (p *counterPage) text(sel string) string {
	p.t.Helper()
	return strings.TrimSpace(run(p, "read "+sel, chromedp.Text(chromedp.CSS(sel))))
}

// execute picks cmd in the select box, clicks Execute and waits for the result line to contain want.
func (p *counterPage) execute(cmd, want string) {
	p.t.Helper()
	// Clear the last result first, so that a repeated command's reply is seen as new.
	run(p, "choose "+cmd+" and click Execute", chromedp.Steps(
		chromedp.SetJavascriptAttribute(chromedp.CSS("#stations-view-json"), "textContent", ""),
		chromedp.SetValue(chromedp.CSS("#track"), cmd),
		chromedp.Click(chromedp.CSS("#track-play-button"))))
	var got string
	framework.Eventually(p.t, 30*time.Second, "the page answering "+cmd+" with "+want, func() bool {
		got = p.text("#stations-view-json")
		return strings.Contains(got, want)
	})
	if strings.HasPrefix(got, "Error") {
		p.t.Fatalf("%s: page shows %q", cmd, got)
	}
}

// waitCounter waits until the live counter (badge and number, refreshed by the page itself) satisfies ok.
func (p *counterPage) waitCounter(what string, ok func(state string, count int) bool) {
	p.t.Helper()
	var state, value string
	framework.Eventually(p.t, 30*time.Second, what, func() bool {
		state, value = p.text("#counter-state"), p.text("#counter-value")
		n, err := strconv.Atoi(value)
		return err == nil && ok(state, n)
	})
}

// screenshot saves the page as counter-demo.png in $TETHER_ARTIFACTS (default _output/test-artifacts).
func (p *counterPage) screenshot() {
	p.t.Helper()
	png := run(p, "screenshot", chromedp.FullScreenshot(100))
	dir := os.Getenv("TETHER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(framework.RepoRoot(), "_output", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(dir, "counter-demo.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot of the counting page: %s (%d bytes)", path, len(png))
}
