//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

// The machine recipe for edge pods, end to end through CRI as edged will drive it: a private containerd, our
// images imported (never pulled), a host-network sandbox and testapp containers that log, serve, read files and
// exit with the code they are told to.
func TestContainerdRunsHostNetworkPod(t *testing.T) {
	cd := framework.StartContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	step := criStepTimer(t)

	// edgecore's default sandbox image must resolve to the imported pause image, or the first pod would try a pull.
	st, err := cd.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: v1alpha2.DefaultPodSandboxImage}})
	if err != nil || st.GetImage() == nil {
		t.Fatalf("ImageStatus(%s) = %v, %v: the default sandbox image is not in containerd", v1alpha2.DefaultPodSandboxImage, st, err)
	}
	if !slices.Contains(st.GetImage().GetRepoTags(), framework.PauseImage) {
		t.Fatalf("%s resolves to %v, want %s", v1alpha2.DefaultPodSandboxImage, st.GetImage().GetRepoTags(), framework.PauseImage)
	}

	uid := string(uuid.NewUUID())
	logDir := t.TempDir()
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "smoke", Namespace: "default", Uid: uid},
		LogDirectory: logDir,
		Labels:       map[string]string{"io.kubernetes.pod.name": "smoke", "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": uid},
		// No Hostname: with the host network, containerd shares the host's UTS namespace and runc refuses to set
		// one ("unable to set hostname without a private UTS namespace"). The kubelet leaves it empty too.
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cd.CgroupParent + "/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD,
			}},
		},
	}
	run, err := cd.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := run.GetPodSandboxId()
	step("RunPodSandbox")

	port := criFreePort(t)
	app := criStartContainer(ctx, t, cd, podID, podCfg, "app", map[string]string{"POD_NAME": "smoke", "PORT": strconv.Itoa(port)})
	crasher := criStartContainer(ctx, t, cd, podID, podCfg, "crasher",
		map[string]string{"EXIT_AFTER": "1", "EXIT_AFTER_CODE": "3", "SHOW_DIR": "/etc"})
	step("CreateContainer+StartContainer x2")

	appLog := filepath.Join(logDir, "app.log")
	criWaitFor(ctx, t, "two ticks in "+appLog, func() bool { return strings.Count(criReadFile(appLog), " tick ") >= 2 })
	step("two log lines")
	if body := criHTTPGet(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello from smoke\n" {
		t.Errorf("GET / = %q, want %q", body, "hello from smoke\n")
	}
	if l := criReadFile(appLog); !strings.Contains(l, "stdout F env POD_NAME=smoke") {
		t.Errorf("app log lacks its env in CRI format:\n%s", l)
	}

	criWaitFor(ctx, t, "crasher to exit", func() bool {
		return criContainerStatus(ctx, t, cd, crasher).GetState() == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s := criContainerStatus(ctx, t, cd, crasher); s.GetExitCode() != 3 {
		t.Errorf("crasher exit code = %d, want 3 (EXIT_AFTER_CODE)", s.GetExitCode())
	}
	if l := criReadFile(filepath.Join(logDir, "crasher.log")); !strings.Contains(l, "file passwd: root:x:0:0") {
		t.Errorf("crasher log lacks SHOW_DIR=/etc output:\n%s", l)
	}

	ctrs, err := cd.ListContainers(ctx)
	if err != nil || len(ctrs) != 2 {
		t.Fatalf("ListContainers = %d containers, %v; want 2", len(ctrs), err)
	}
	pods, err := cd.ListSandboxes(ctx)
	if err != nil || len(pods) != 1 || pods[0].GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("ListSandboxes = %v, %v; want one ready sandbox", pods, err)
	}

	step("")
	if _, err := cd.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: app, Timeout: 10}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	step("StopContainer")
	if s := criContainerStatus(ctx, t, cd, app); s.GetExitCode() != 0 {
		t.Errorf("app exit code after SIGTERM = %d, want 0", s.GetExitCode())
	}
	for _, id := range []string{app, crasher} {
		if _, err := cd.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer %s: %v", id, err)
		}
	}
	if _, err := cd.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := cd.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	step("RemoveContainer x2+StopPodSandbox+RemovePodSandbox")
	if pods, err := cd.ListSandboxes(ctx); err != nil || len(pods) != 0 {
		t.Errorf("after removal ListSandboxes = %v, %v; want none", pods, err)
	}
}

func criStartContainer(ctx context.Context, t *testing.T, cd *framework.Containerd, podID string,
	podCfg *runtimeapi.PodSandboxConfig, name string, env map[string]string) string {
	t.Helper()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: framework.TestAppImage},
		LogPath:  name + ".log",
		Labels:   map[string]string{"io.kubernetes.container.name": name, "io.kubernetes.pod.name": "smoke", "io.kubernetes.pod.namespace": "default"},
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	for k, v := range env {
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	created, err := cd.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	if _, err := cd.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.GetContainerId()}); err != nil {
		t.Fatalf("StartContainer %s: %v", name, err)
	}
	return created.GetContainerId()
}

func criContainerStatus(ctx context.Context, t *testing.T, cd *framework.Containerd, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := cd.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp.GetStatus()
}

// criStepTimer logs how long each step took since the previous one; an empty name only restarts the clock.
func criStepTimer(t *testing.T) func(string) {
	last := time.Now()
	return func(name string) {
		if name != "" {
			t.Logf("%s: %s", name, time.Since(last).Round(time.Millisecond))
		}
		last = time.Now()
	}
}

func criWaitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func criReadFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func criFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func criHTTPGet(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	var body string
	criWaitFor(ctx, t, "GET "+url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return body
}
