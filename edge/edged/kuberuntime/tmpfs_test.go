package kuberuntime

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestMemoryVolumeSize(t *testing.T) {
	mi := func(n int64) resource.Quantity { return *resource.NewQuantity(n<<20, resource.BinarySI) }
	limits := func(mem ...int64) []corev1.Container {
		var cs []corev1.Container
		for i, m := range mem {
			c := corev1.Container{Name: "c" + string(rune('a'+i))}
			if m > 0 {
				c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: mi(m)}
			}
			cs = append(cs, c)
		}
		return cs
	}
	tests := []struct {
		name       string
		node       int64 // MiB
		containers []corev1.Container
		inits      []corev1.Container
		sizeLimit  *resource.Quantity
		want       int64 // MiB
	}{
		{name: "node", node: 1024, containers: limits(0), want: 1024},
		{name: "pod-limit", node: 1024, containers: limits(100, 200), want: 300},
		{name: "one-container-unlimited", node: 1024, containers: limits(100, 0), want: 1024},
		{name: "init-larger", node: 1024, containers: limits(100), inits: limits(400), want: 400},
		{name: "size-limit", node: 1024, containers: limits(300), sizeLimit: ptr(mi(64)), want: 64},
		{name: "size-limit-above-pod", node: 1024, containers: limits(300), sizeLimit: ptr(mi(512)), want: 300},
		{name: "size-limit-above-node", node: 1024, containers: limits(0), sizeLimit: ptr(mi(4096)), want: 1024},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manager{opts: Options{NodeAllocatable: corev1.ResourceList{corev1.ResourceMemory: mi(tc.node)}}}
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: tc.containers, InitContainers: tc.inits}}
			if got := m.memoryVolumeSize(pod, tc.sizeLimit); got != tc.want<<20 {
				t.Errorf("size %d MiB, want %d MiB", got>>20, tc.want)
			}
		})
	}
	if hostMemory() <= 0 {
		t.Error("MemTotal not read from /proc/meminfo")
	}
	m := &Manager{}
	if got := m.memoryVolumeSize(&corev1.Pod{Spec: corev1.PodSpec{Containers: limits(0)}}, nil); got != hostMemory() {
		t.Errorf("without NodeAllocatable: %d, want the host's %d", got, hostMemory())
	}
}

// tmpfsOptions returns the super block options of the tmpfs mounted at dir ("rw,size=...,mode=...").
func tmpfsOptions(t *testing.T, dir string) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(mountInfoPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 10 || unescapeMountInfo(fields[4]) != real {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+3 < len(fields) && fields[i+1] == "tmpfs" {
				return fields[i+3] + " " + fields[5]
			}
		}
	}
	t.Fatalf("no tmpfs mounted at %s", dir)
	return ""
}

// Secrets, projected volumes and memory emptyDirs are tmpfs mounts made before anything is written; ConfigMaps
// and disk emptyDirs stay on disk; everything is unmounted with the pod.
func TestMemoryBackedVolumes(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	h.m.opts.NodeAllocatable = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
	h.objs.setSecret("s", map[string]string{"password": "hunter2"})
	h.objs.setConfigMap("c", map[string]string{"k": "v"})
	limit := resource.MustParse("8Mi")
	pod := testPod("mem", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
			{Name: "ram", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &limit}}},
			{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}}}}}},
		}
		for _, v := range p.Spec.Volumes {
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: "/" + v.Name})
		}
	})
	h.mustSync(pod)
	dir := func(plugin, name string) string {
		return filepath.Join(h.root, "pods", string(pod.UID), "volumes", plugin, name)
	}
	onTmpfs := map[string]bool{
		dir(pluginSecret, "sec"): true, dir(pluginProjected, "proj"): true, dir(pluginEmptyDir, "ram"): true,
		dir(pluginConfigMap, "cfg"): false, dir(pluginEmptyDir, "disk"): false,
	}
	for d, want := range onTmpfs {
		if got, err := isTmpfsMount(d); err != nil || got != want {
			t.Errorf("%s on tmpfs = %v, %v; want %v", d, got, err, want)
		}
	}
	for d, want := range map[string][]string{
		dir(pluginSecret, "sec"):   {"size=262144k", "mode=755", "nosuid", "nodev"},
		dir(pluginEmptyDir, "ram"): {"size=8192k", "mode=777", "nosuid", "nodev"},
	} {
		opts := tmpfsOptions(t, d)
		for _, w := range want {
			if !strings.Contains(opts, w) {
				t.Errorf("%s: tmpfs options %q lack %s", d, opts, w)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir(pluginSecret, "sec"), "password")); err != nil || string(b) != "hunter2" {
		t.Errorf("secret file = %q, %v", b, err)
	}
	// The containers get them read-only when Edged writes them.
	for _, m := range h.running(pod.UID, "app").Config.GetMounts() {
		want := m.GetContainerPath() != "/ram" && m.GetContainerPath() != "/disk"
		if m.GetReadonly() != want {
			t.Errorf("mount %s read-only = %v, want %v", m.GetContainerPath(), m.GetReadonly(), want)
		}
	}

	// An edgecore restart keeps the tmpfs and what is in it; no second tmpfs is stacked on the first.
	if err := os.WriteFile(filepath.Join(dir(pluginEmptyDir, "ram"), "scratch"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.mustSyncWith(h.newManager(), pod)
	if b, err := os.ReadFile(filepath.Join(dir(pluginEmptyDir, "ram"), "scratch")); err != nil || string(b) != "kept" {
		t.Errorf("memory emptyDir content after a restart: %q, %v", b, err)
	}
	mps, _ := mountPoints()
	if real, _ := filepath.EvalSymlinks(dir(pluginSecret, "sec")); countOf(mps, real) != 1 {
		t.Errorf("%d mounts on the secret volume, want 1", countOf(mps, real))
	}

	if err := h.m.KillPod(h.ctx, pod.UID, 0); err != nil {
		t.Fatal(err)
	}
	if left, _ := mountsUnder(h.root); len(left) != 0 {
		t.Errorf("mounts left after KillPod: %v", left)
	}
	if _, err := os.Stat(filepath.Join(h.root, "pods", string(pod.UID))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod directory left: %v", err)
	}
}

// A secret volume written to disk by an older Edged gets a tmpfs over it; the old files are not touched while
// the pod lives (a running container may have them mounted) and go with the pod.
func TestSecretVolumeFromDiskUpgrade(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	h.objs.setSecret("s", map[string]string{"password": "new"})
	pod := testPod("upgrade", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "sec", MountPath: "/sec"}}
	})
	dir := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginSecret, "sec")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	under, err := os.Open(dir) // a handle on the on-disk directory, as a running container's bind mount
	if err != nil {
		t.Fatal(err)
	}
	defer under.Close()
	h.mustSync(pod)
	if b, _ := os.ReadFile(filepath.Join(dir, "password")); string(b) != "new" {
		t.Errorf("secret after upgrade = %q, want the new content on tmpfs", b)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(under.Fd()), &sfs); err != nil || sfs.Type == unix.TMPFS_MAGIC {
		t.Fatalf("the old directory handle is on tmpfs (%v)", err)
	}
	fd, err := unix.Openat(int(under.Fd()), "password", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("the old secret under the tmpfs is gone while the pod lives: %v", err)
	}
	old := os.NewFile(uintptr(fd), "password")
	if b, _ := io.ReadAll(old); string(b) != "old" {
		t.Errorf("old secret under the tmpfs = %q", b)
	}
	_ = old.Close()
	if err := h.m.KillPod(h.ctx, pod.UID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old on-disk secret left after KillPod: %v", err)
	}
}
