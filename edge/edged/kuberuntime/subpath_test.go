package kuberuntime

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// volumeFixture is a volume a hostile container has written to, next to a directory outside it with a secret.
type volumeFixture struct {
	vol, outside string
}

func newVolumeFixture(t *testing.T) volumeFixture {
	t.Helper()
	base := t.TempDir()
	f := volumeFixture{vol: filepath.Join(base, "vol"), outside: filepath.Join(base, "outside")}
	mkdir := func(p string) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, content string) {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(filepath.Join(f.vol, "dir", "sub"))
	mkdir(f.outside)
	write(filepath.Join(f.outside, "secret"), "outside")
	write(filepath.Join(f.vol, "dir", "sub", "marker"), "inside")
	link("/etc", filepath.Join(f.vol, "etc"))          // absolute symlink to a host directory
	link(f.outside, filepath.Join(f.vol, "out"))       // absolute symlink to our outside directory
	link("chain2", filepath.Join(f.vol, "chain1"))     // a chain whose last link climbs out
	link("../outside", filepath.Join(f.vol, "chain2")) //
	link("dir/sub", filepath.Join(f.vol, "inside"))    // a relative symlink that stays inside
	link("/proc/self/root", filepath.Join(f.vol, "magic"))
	// The atomic writer's layout (ConfigMap and Secret volumes): key -> ..data/key, ..data -> ..rev.
	mkdir(filepath.Join(f.vol, "..rev1"))
	write(filepath.Join(f.vol, "..rev1", "key"), "value")
	link("..rev1", filepath.Join(f.vol, "..data"))
	link("..data/key", filepath.Join(f.vol, "key"))
	return f
}

func (f volumeFixture) root(t *testing.T) *os.File {
	t.Helper()
	root, err := os.OpenFile(f.vol, os.O_RDONLY|0x200000 /* O_PATH */, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	return root
}

// fdPath is where an open file really is.
func fdPath(t *testing.T, f *os.File) string {
	t.Helper()
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenBeneath resolves subPaths a container may have prepared, with the kernel's openat2 and with the walk
// used on kernels without it: both must stay inside the volume or fail.
func TestOpenBeneath(t *testing.T) {
	impls := map[string]func(*os.File, string) (*os.File, error){"openat2": openBeneath2, "walk": openBeneathWalk}
	tests := []struct {
		rel     string
		want    string // path below the volume it must resolve to
		wantErr error
	}{
		{rel: "dir/sub", want: "dir/sub"},
		{rel: "dir/sub/marker", want: "dir/sub/marker"},
		{rel: "inside", want: "dir/sub"},
		{rel: "inside/marker", want: "dir/sub/marker"},
		{rel: "key", want: "..rev1/key"},
		{rel: ".", want: "."},
		{rel: "etc", wantErr: errEscapes},
		{rel: "etc/passwd", wantErr: errEscapes},
		{rel: "out/secret", wantErr: errEscapes},
		{rel: "chain1", wantErr: errEscapes},
		{rel: "chain1/secret", wantErr: errEscapes},
		{rel: "missing", wantErr: fs.ErrNotExist},
		{rel: "dir/missing/deeper", wantErr: fs.ErrNotExist},
	}
	for name, open := range impls {
		if name == "openat2" && !haveOpenat2() {
			continue
		}
		for _, tc := range tests {
			t.Run(name+"/"+tc.rel, func(t *testing.T) {
				f := newVolumeFixture(t)
				got, err := open(f.root(t), tc.rel)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						if got != nil {
							t.Errorf("opened %s", fdPath(t, got))
						}
						t.Fatalf("error %v, want %v", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer got.Close()
				if want := filepath.Join(f.vol, tc.want); fdPath(t, got) != want {
					t.Fatalf("resolved to %s, want %s", fdPath(t, got), want)
				}
			})
		}
	}
	t.Run("openat2/magic-link", func(t *testing.T) {
		if !haveOpenat2() {
			t.Skip("no openat2")
		}
		f := newVolumeFixture(t)
		if got, err := openBeneath2(f.root(t), "magic/etc"); err == nil {
			t.Fatalf("followed a magic link to %s", fdPath(t, got))
		}
	})
}

// The walk checks a path, then opens it: a container swapping a checked directory for a symlink to the outside
// in between makes the open fail; it never leads outside.
func TestOpenBeneathWalkRace(t *testing.T) {
	f := newVolumeFixture(t)
	walkHook = func() {
		// "dir" was checked as a directory; now it is a symlink to the outside, which also has a "sub".
		if err := os.Rename(filepath.Join(f.vol, "dir"), filepath.Join(f.vol, "dir.orig")); err != nil {
			t.Error(err)
		}
		if err := os.MkdirAll(filepath.Join(f.outside, "sub"), 0o755); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(f.outside, filepath.Join(f.vol, "dir")); err != nil {
			t.Error(err)
		}
	}
	defer func() { walkHook = nil }()
	got, err := openBeneathWalk(f.root(t), "dir/sub")
	if err == nil {
		t.Fatalf("opened %s after the swap", fdPath(t, got))
	}
	if !errors.Is(err, errChanged) {
		t.Fatalf("error %v, want %v", err, errChanged)
	}
}

func TestMkdirAllBeneath(t *testing.T) {
	f := newVolumeFixture(t)
	root := f.root(t)
	if err := mkdirAllBeneath(root, "new/a/b", 0o770); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"new", "new/a", "new/a/b"} {
		if fi, err := os.Lstat(filepath.Join(f.vol, p)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o770 {
			t.Errorf("%s: %v %v, want a 0770 directory", p, fi.Mode(), err)
		}
	}
	// Through a symlink that stays inside: fine.
	if err := mkdirAllBeneath(root, "inside/deeper", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.vol, "dir", "sub", "deeper")); err != nil {
		t.Error(err)
	}
	// Through symlinks to the outside: refused, and nothing created there.
	for _, rel := range []string{"out/planted", "chain1/planted", "etc/tether-planted"} {
		if err := mkdirAllBeneath(root, rel, 0o755); !errors.Is(err, errEscapes) {
			t.Errorf("mkdirAllBeneath(%s) = %v, want %v", rel, err, errEscapes)
		}
	}
	for _, p := range []string{filepath.Join(f.outside, "planted"), "/etc/tether-planted"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was created outside the volume: %v", p, err)
		}
	}
}

// The bind mount is of the descriptor resolved inside the volume: a swap after resolution, before the mount,
// does not change what the container gets.
func TestSubPathBindRace(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	pod := testPod("race", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/data", SubPath: "sub"}}
	})
	vol := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginEmptyDir, "v")
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "marker"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(vol, "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "sub", "marker"), []byte("inside"), 0o644); err != nil {
		t.Fatal(err)
	}
	swapped := false
	bindHook = func() {
		swapped = true
		if err := os.Rename(filepath.Join(vol, "sub"), filepath.Join(vol, "sub.orig")); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(outside, filepath.Join(vol, "sub")); err != nil {
			t.Error(err)
		}
	}
	defer func() { bindHook = nil }()
	h.mustSync(pod)
	if !swapped {
		t.Fatal("the race hook did not run")
	}
	src := h.running(pod.UID, "app").Config.GetMounts()[0].GetHostPath()
	if b, err := os.ReadFile(filepath.Join(src, "marker")); err != nil || string(b) != "inside" {
		t.Fatalf("the container's subPath shows %q, %v; want the directory resolved inside the volume", b, err)
	}
}

// SubPaths through SyncPod: symlinks a container planted fail the container, with the kubelet's messages for
// malformed subPaths; good subPaths are bind mounts that survive restarts and go with the pod, without
// anything being deleted through them.
func TestSubPathMounts(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	hostDir := filepath.Join(t.TempDir(), "host")
	if err := os.MkdirAll(filepath.Join(hostDir, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "keep", "precious"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := map[string]corev1.VolumeMount{
		"good":     {Name: "v", MountPath: "/data", SubPath: "made/by/edged"},
		"host":     {Name: "h", MountPath: "/keep", SubPath: "keep"},
		"root":     {Name: "v", MountPath: "/x", SubPath: "escape"},
		"etc":      {Name: "v", MountPath: "/x", SubPath: "etcdir/passwd"},
		"chain":    {Name: "v", MountPath: "/x", SubPath: "a/up"},
		"dotdot":   {Name: "v", MountPath: "/x", SubPath: "made/../../x"},
		"absolute": {Name: "v", MountPath: "/x", SubPath: "/etc"},
	}
	wantErr := map[string]string{
		"root":     `subPath "escape" resolves outside its volume`,
		"etc":      `subPath "etcdir/passwd" resolves outside its volume`,
		"chain":    `subPath "a/up" resolves outside its volume`,
		"dotdot":   "unable to provision SubPath `made/../../x`: must not contain '..'",
		"absolute": "error SubPath `/etc` must not be an absolute path",
	}
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	pod := testPod("subpaths", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirOrCreate}}},
		}
		p.Spec.Containers = nil
		for _, name := range []string{"good", "host", "root", "etc", "chain", "dotdot", "absolute"} {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: name, Image: appImage,
				ImagePullPolicy: corev1.PullIfNotPresent, VolumeMounts: []corev1.VolumeMount{mounts[name]}})
		}
	})
	// What a first container left in the shared emptyDir.
	vol := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginEmptyDir, "v")
	for target, link := range map[string]string{"/": "escape", "/etc": "etcdir", "../../../../../..": "a/up"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(vol, link)), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(vol, link)); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := h.sync(pod)
	for name, msg := range wantErr {
		wantWaiting(t, containerStatusOf(t, st, name), ReasonCreateConfigError, msg)
	}
	targets := map[string]string{}
	for _, name := range []string{"good", "host"} {
		c := h.running(pod.UID, name)
		targets[name] = c.Config.GetMounts()[0].GetHostPath()
		if ok, err := isMountPoint(targets[name]); err != nil || !ok {
			t.Errorf("%s: %s is not a bind mount: %v", name, targets[name], err)
		}
	}
	if fi, err := os.Stat(filepath.Join(vol, "made", "by", "edged")); err != nil || !fi.IsDir() {
		t.Errorf("missing subPath not created in the volume: %v", err)
	}

	// A restarted container gets the same bind, not one more stacked on it.
	h.exit(pod.UID, "good", 1)
	h.clock.Step(time.Minute)
	h.mustSyncOrContainerErrors(pod, "root", "etc", "chain", "dotdot", "absolute")
	mps, err := mountPoints()
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(targets["good"])
	if n := countOf(mps, real); n != 1 {
		t.Errorf("%d mounts on %s after a restart, want 1", n, real)
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
	if b, err := os.ReadFile(filepath.Join(hostDir, "keep", "precious")); err != nil || string(b) != "data" {
		t.Errorf("hostPath content behind a subPath bind: %q, %v; KillPod must not delete through binds", b, err)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// mustSyncOrContainerErrors syncs and fails unless the only errors are of the named containers.
func (h *harness) mustSyncOrContainerErrors(pod *corev1.Pod, failing ...string) {
	h.t.Helper()
	_, err := h.sync(pod)
	if err == nil {
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		ok := false
		for _, name := range failing {
			ok = ok || strings.Contains(line, "container "+name+":")
		}
		if !ok {
			h.t.Fatalf("unexpected sync error: %s", line)
		}
	}
}

// KillPod refuses to remove a pod directory through a mount it could not unmount, and never crosses into
// another file system.
func TestRemoveAllOneFS(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pod := filepath.Join(dir, "pod")
	mnt := filepath.Join(pod, "volumes", "tmp")
	if err := ensureTmpfs(mnt, 1<<20, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unmountUnder(dir) }()
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeAllOneFS(pod); err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Fatalf("removeAllOneFS through a tmpfs = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "f")); err != nil {
		t.Errorf("file on the other file system removed: %v", err)
	}
	if err := removePodDir(pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pod); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pod directory left: %v", err)
	}
}

func TestUnescapeMountInfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/tab\011x`: "/tab\tx", `/back\134slash`: `/back\slash`, `/plain`: "/plain", `/end\04`: `/end\04`} {
		if got := unescapeMountInfo(in); got != want {
			t.Errorf("unescapeMountInfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpandSubPathExpr(t *testing.T) {
	env := []*runtimeapi.KeyValue{{Key: "POD", Value: []byte("web-1")}, {Key: "EMPTY"}}
	tests := []struct{ expr, want, wantErr string }{
		{expr: "logs/$(POD)", want: "logs/web-1"},
		{expr: "$$(POD)", want: "$(POD)"},
		{expr: "$(MISSING)/$(EMPTY)/$(MISSING)", wantErr: `subPathExpr "$(MISSING)/$(EMPTY)/$(MISSING)": missing value for EMPTY, MISSING`},
	}
	for _, tc := range tests {
		got, err := expandSubPathExpr(tc.expr, env)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("expandSubPathExpr(%q) error %v, want %q", tc.expr, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandSubPathExpr(%q) = %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
}

// subPathExpr gets the same safe bind as subPath, after expansion; before, it was ignored and the container
// got the whole volume.
func TestSubPathExprMount(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	pod := testPod("expr", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/logs", SubPathExpr: "logs/$(POD_NAME)"}}
	})
	h.mustSync(pod)
	vol := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginEmptyDir, "v")
	if err := os.WriteFile(filepath.Join(vol, "logs", "expr", "marker"), []byte("x"), 0o644); err != nil {
		t.Fatalf("subPathExpr directory not created: %v", err)
	}
	src := h.running(pod.UID, "app").Config.GetMounts()[0].GetHostPath()
	if _, err := os.Stat(filepath.Join(src, "marker")); err != nil {
		t.Errorf("mount source %s does not show logs/expr: %v", src, err)
	}
}
