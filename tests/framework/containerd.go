package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The images hack/build-images.sh packs, under the names containerd stores them by. CRI normalises short names,
// so edgecore's default podSandboxImage "tether/pause:3.10" is PauseImage.
const (
	PauseImage   = "docker.io/tether/pause:3.10"
	TestAppImage = "docker.io/tether/testapp:v1"
)

// Containerd is a private containerd with the CRI plugin and our images, for one test.
type Containerd struct {
	// Dir holds its root, state, config and log; it is removed on cleanup.
	Dir string
	// Socket is the containerd socket path.
	Socket string
	// CgroupParent is this instance's pod cgroup root: give each pod a cgroup parent below it, and cleanup
	// removes the pod cgroups containerd leaves (they are the kubelet's job, not the runtime's).
	CgroupParent string
	// Runtime and Images are CRI clients for driving pods directly.
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient

	conn  *grpc.ClientConn
	netns *Netns
}

// ImagesDir is where hack/build-images.sh writes the image tars.
func ImagesDir() string {
	if out := os.Getenv("OUTPUT"); out != "" {
		return filepath.Join(out, "images")
	}
	return filepath.Join(RepoRoot(), "_output", "images")
}

// StartContainerd starts a containerd through hack/local-containerd.sh (the same recipe developers run), with the
// images of ImagesDir imported, and tears it down when the test ends: pods removed through CRI, containerd stopped,
// mounts and pod cgroups removed. It needs root, containerd and runc (hack/install-deps.sh).
func StartContainerd(t testing.TB, opts ...ContainerdOption) *Containerd {
	t.Helper()
	for _, img := range []string{"pause.tar", "testapp.tar"} {
		if _, err := os.Stat(filepath.Join(ImagesDir(), img)); err != nil {
			t.Fatalf("image %s missing in %s: run hack/build-images.sh (or make images) first", img, ImagesDir())
		}
	}
	for _, bin := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: run hack/install-deps.sh (or make deps) first", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("containerd needs root")
	}
	// Not t.TempDir(): its path, with the test name in it, can exceed the 108 bytes a unix socket path may have.
	dir, err := os.MkdirTemp("/tmp", "tether-ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		Dir:          dir,
		Socket:       filepath.Join(dir, "containerd.sock"),
		CgroupParent: "/" + filepath.Base(dir),
	}
	for _, o := range opts {
		o(c)
	}
	t.Cleanup(func() { c.stop(t) })
	start := time.Now()
	if out, err := c.script("up"); err != nil {
		t.Fatalf("starting containerd in %s: %v\n%s", dir, err, out)
	}
	c.conn, err = grpc.NewClient(c.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("CRI client for %s: %v", c.Endpoint(), err)
	}
	c.Runtime = runtimeapi.NewRuntimeServiceClient(c.conn)
	c.Images = runtimeapi.NewImageServiceClient(c.conn)
	t.Logf("containerd up with images in %s at %s", time.Since(start).Round(time.Millisecond), c.Endpoint())
	return c
}

// Endpoint is the CRI endpoint, as edgecore's containerRuntimeEndpoint takes it.
func (c *Containerd) Endpoint() string { return "unix://" + c.Socket }

// ListContainers returns every container, running or not.
func (c *Containerd) ListContainers(ctx context.Context) ([]*runtimeapi.Container, error) {
	resp, err := c.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing containers on %s: %w", c.Endpoint(), err)
	}
	return resp.GetContainers(), nil
}

// ListSandboxes returns every pod sandbox, ready or not.
func (c *Containerd) ListSandboxes(ctx context.Context) ([]*runtimeapi.PodSandbox, error) {
	resp, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing pod sandboxes on %s: %w", c.Endpoint(), err)
	}
	return resp.GetItems(), nil
}

// RemoveAllPods stops and removes every container and sandbox, as the kubelet does for pods it no longer has.
func (c *Containerd) RemoveAllPods(ctx context.Context) error {
	var errs []error
	ctrs, err := c.ListContainers(ctx)
	if err != nil {
		return err
	}
	for _, ctr := range ctrs {
		if _, err := c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stopping container %s: %w", ctr.Id, err))
		}
		if _, err := c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctr.Id}); err != nil {
			errs = append(errs, fmt.Errorf("removing container %s: %w", ctr.Id, err))
		}
	}
	pods, err := c.ListSandboxes(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, pod := range pods {
		if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stopping pod sandbox %s: %w", pod.Id, err))
		}
		if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			errs = append(errs, fmt.Errorf("removing pod sandbox %s: %w", pod.Id, err))
		}
	}
	return errors.Join(errs...)
}

// stop removes the pods through CRI first, as a kubelet would; the script then catches whatever that missed
// (its own pod removal, shims, mounts, cgroups) and deletes Dir.
func (c *Containerd) stop(t testing.TB) {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := c.RemoveAllPods(ctx); err != nil {
			t.Errorf("removing pods on %s: %v", c.Endpoint(), err)
		}
		cancel()
		_ = c.conn.Close()
	}
	if t.Failed() {
		if log, err := os.ReadFile(filepath.Join(c.Dir, "containerd.log")); err == nil {
			t.Logf("containerd log (last 4 KiB):\n%s", tail(log, 4096))
		}
	}
	if out, err := c.script("down"); err != nil {
		t.Errorf("stopping containerd in %s: %v\n%s", c.Dir, err, out)
	} else if bytes.Contains(out, []byte("WARNING")) {
		t.Errorf("containerd teardown in %s left something behind:\n%s", c.Dir, out)
	}
}

func (c *Containerd) script(cmd string) ([]byte, error) {
	run := exec.Command(filepath.Join(RepoRoot(), "hack", "local-containerd.sh"), cmd)
	if c.netns != nil && cmd == "up" {
		run = c.netns.Command(run.Path, cmd)
	}
	run.Env = append(os.Environ(),
		"CONTAINERD_DIR="+c.Dir, "CONTAINERD_SOCK="+c.Socket, "POD_CGROUP_PARENT="+c.CgroupParent,
		"PAUSE_IMAGE="+PauseImage, "TESTAPP_IMAGE="+TestAppImage)
	if os.Getenv("OUTPUT") == "" {
		run.Env = append(run.Env, "OUTPUT="+filepath.Dir(ImagesDir()))
	}
	return run.CombinedOutput()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
