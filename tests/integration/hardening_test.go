//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/tests/framework"
)

// TestHardenedPodsOnContainerd checks from inside pods on the real containerd that Edged passes the kubelet's
// hardening: masked and read-only /proc paths, seccomp, runAsNonRoot against the image's user, subPaths that a
// container cannot point outside its volume, secrets on tmpfs, AppArmor requests refused where it is missing;
// and that the mounts go with the pods.
func TestHardenedPodsOnContainerd(t *testing.T) {
	e, _ := startPodEnv(t)
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hardened-secret"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	if err := e.cp.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	// Written back unchanged: should /proc/sys ever be writable, the test still must not change the host.
	corePattern := strings.TrimSpace(hardeningRead(t, "/proc/sys/kernel/core_pattern"))
	runtimeDefault := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}

	hardened := e.create(t, testPod("hardened", func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: runtimeDefault}
		p.Spec.Volumes = []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: sec.Name}}}}
		app := &p.Spec.Containers[0]
		app.VolumeMounts = []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/secret"}}
		app.Args = []string{"cat", "/proc/self/mountinfo", "--", "cat", "/proc/self/status", "--",
			"write", "/proc/sys/kernel/core_pattern", corePattern, "--", "cat", "/etc/secret/password"}
		// The container's own profile wins over the pod's.
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "unconfined", Image: testImage,
			ImagePullPolicy: corev1.PullNever, Args: []string{"cat", "/proc/self/status"},
			SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}})
	}))
	nonRoot := e.create(t, testPod("nonroot", func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: hardeningPtr(true)}
	}))
	subPaths := e.create(t, testPod("subpaths", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		// A first container plants a symlink to the host's / in the volume, next to a real directory.
		p.Spec.InitContainers = []corev1.Container{{Name: "plant", Image: testImage, ImagePullPolicy: corev1.PullNever,
			Env:          []corev1.EnvVar{{Name: "EXIT_AFTER", Value: "0"}},
			Args:         []string{"symlink", "/", "/vol/escape", "--", "mkdir", "/vol/data", "--", "write", "/vol/data/marker", "inside"},
			VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/vol"}}}}
		p.Spec.Containers[0].Args = []string{"cat", "/data/marker"}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "shared", MountPath: "/data", SubPath: "data"}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "escaper", Image: testImage,
			ImagePullPolicy: corev1.PullNever, Args: []string{"ls", "/host"},
			VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/host", SubPath: "escape"}}})
	}))
	apparmorHost := hardeningRead(t, "/sys/module/apparmor/parameters/enabled")
	var appArmor *corev1.Pod
	if !strings.HasPrefix(apparmorHost, "Y") {
		appArmor = e.create(t, testPod("apparmor", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		}))
	}

	t.Run("proc-masks-seccomp-secret-tmpfs", func(t *testing.T) {
		p := e.waitPod(t, "hardened", "Running", 60*time.Second, func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 2 &&
				p.Status.ContainerStatuses[0].Ready && p.Status.ContainerStatuses[1].Ready
		})
		log := e.hardeningLog(t, p, "app", "cat /etc/secret/password: s3cret")
		mounts := hardeningMountInfo(log)
		// runc masks what exists: every path of the kubelet's list that this kernel has (/proc/kcore only with
		// CONFIG_PROC_KCORE) must be covered by a mount in the container.
		var masked []string
		for _, path := range []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
			"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
			"/sys/firmware", "/sys/devices/virtual/powercap"} {
			if _, err := os.Stat(path); err != nil {
				continue
			}
			if _, ok := mounts[path]; !ok {
				t.Errorf("%s is not masked; container mounts:\n%s", path, strings.Join(hardeningKeys(mounts), "\n"))
			}
			masked = append(masked, path)
		}
		if len(masked) == 0 {
			t.Error("none of the default masked paths exists on this host: nothing checked")
		}
		t.Logf("masked in the container: %v", masked)
		if m, ok := mounts["/proc/sys"]; !ok || !strings.HasPrefix(m.opts, "ro") {
			t.Errorf("/proc/sys is not read-only: %+v (present %v)", m, ok)
		}
		if !strings.Contains(log, "write /proc/sys/kernel/core_pattern: error: ") {
			t.Errorf("writing /proc/sys/kernel/core_pattern did not fail:\n%s", hardeningGrep(log, "write "))
		}
		if !strings.Contains(log, "cat /proc/self/status: Seccomp:\t2") {
			t.Errorf("RuntimeDefault container not under a seccomp filter: %s", hardeningGrep(log, "Seccomp"))
		}
		if m := mounts["/etc/secret"]; m.fstype != "tmpfs" {
			t.Errorf("secret volume inside the container is %q, want tmpfs", m.fstype)
		}
		secretDir := filepath.Join(e.edgeRoot(), "pods", string(p.UID), "volumes", "kubernetes.io~secret", "secret")
		var sfs unix.Statfs_t
		if err := unix.Statfs(secretDir, &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
			t.Errorf("secret volume on the host: statfs type %#x, %v; want tmpfs", sfs.Type, err)
		}
		unconfined := e.hardeningLog(t, p, "unconfined", "cat /proc/self/status: Seccomp:")
		if !strings.Contains(unconfined, "cat /proc/self/status: Seccomp:\t0") {
			t.Errorf("container with seccompProfile Unconfined: %s", hardeningGrep(unconfined, "Seccomp"))
		}
	})

	t.Run("run-as-non-root-on-root-image", func(t *testing.T) {
		want := fmt.Sprintf("container has runAsNonRoot and image will run as root (pod: %q, container: app)",
			fmt.Sprintf("nonroot_default(%s)", nonRoot.UID))
		p := e.waitPod(t, "nonroot", "CreateContainerConfigError", 60*time.Second, func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
				p.Status.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
		})
		if got := p.Status.ContainerStatuses[0].State.Waiting.Message; got != want {
			t.Errorf("message %q\nwant    %q", got, want)
		}
		if ids := e.containerIDs(t, p.UID); len(ids) != 0 {
			t.Errorf("containers %v run for a pod that must not", ids)
		}
	})

	t.Run("subpath-symlink-cannot-escape", func(t *testing.T) {
		p := e.waitPod(t, "subpaths", "good container running, escaper refused", 60*time.Second, func(p *corev1.Pod) bool {
			var good, refused bool
			for _, cs := range p.Status.ContainerStatuses {
				good = good || (cs.Name == "app" && cs.State.Running != nil)
				refused = refused || (cs.Name == "escaper" && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CreateContainerConfigError")
			}
			return good && refused
		})
		e.hardeningLog(t, p, "app", "cat /data/marker: inside")
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "escaper" && !strings.Contains(cs.State.Waiting.Message, `subPath "escape" resolves outside its volume`) {
				t.Errorf("escaper: %s", cs.State.Waiting.Message)
			}
		}
		cs, err := e.ctd.ListContainers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Labels["io.kubernetes.pod.uid"] == string(subPaths.UID) && c.Metadata.Name == "escaper" {
				t.Errorf("the escaper container was created: %s", c.Id)
			}
		}
	})

	t.Run("apparmor-refused-without-apparmor", func(t *testing.T) {
		if appArmor == nil {
			t.Skip("this host enforces AppArmor")
		}
		p := e.waitPod(t, "apparmor", "rejected", 60*time.Second, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		if want := "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"; p.Status.Reason != "AppArmor" || p.Status.Message != want {
			t.Errorf("status reason %q message %q, want AppArmor %q", p.Status.Reason, p.Status.Message, want)
		}
		if ids := e.containerIDs(t, p.UID); len(ids) != 0 {
			t.Errorf("containers %v run for a rejected pod", ids)
		}
	})

	// Deleting the pods removes their tmpfs and subPath mounts, and their directories.
	pods := []*corev1.Pod{hardened, nonRoot, subPaths}
	if appArmor != nil {
		pods = append(pods, appArmor)
	}
	for _, p := range pods {
		if err := e.cp.Client.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		framework.Eventually(t, 60*time.Second, "pod "+p.Name+" removed", func() bool {
			var got corev1.Pod
			return apierrors.IsNotFound(e.cp.Client.Get(ctx, client.ObjectKeyFromObject(p), &got))
		})
	}
	podsDir := filepath.Join(e.edgeRoot(), "pods")
	framework.Eventually(t, 30*time.Second, "pod directories and their mounts removed", func() bool {
		entries, _ := os.ReadDir(podsDir)
		return len(entries) == 0 && len(hardeningMountsUnder(t, podsDir)) == 0
	})
}

func hardeningPtr[T any](v T) *T { return &v }

func hardeningRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// hardeningLog waits until the container's CRI log holds marker, and returns the log.
func (e *podEnv) hardeningLog(t *testing.T, p *corev1.Pod, container, marker string) string {
	t.Helper()
	path := filepath.Join(e.edge.Config.Modules.Edged.TailoredKubeletConfig.PodLogsDir,
		fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID), container, "0.log")
	var log string
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("%q in the log of %s/%s", marker, p.Name, container), func() bool {
		log = hardeningRead(t, path)
		return strings.Contains(log, marker)
	})
	return log
}

type hardeningMount struct{ opts, fstype string }

// hardeningMountInfo parses the "cat /proc/self/mountinfo: " lines of a CRI log into mount point -> entry.
func hardeningMountInfo(log string) map[string]hardeningMount {
	out := map[string]hardeningMount{}
	const prefix = "cat /proc/self/mountinfo: "
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, prefix)
		if !ok {
			continue
		}
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
		fields := strings.Fields(rest)
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out[fields[4]] = hardeningMount{opts: fields[5], fstype: fields[sep+1]}
	}
	return out
}

func hardeningKeys(m map[string]hardeningMount) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func hardeningGrep(log, part string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, part) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// hardeningMountsUnder lists this host's mount points below dir.
func hardeningMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(hardeningRead(t, "/proc/self/mountinfo"), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && strings.HasPrefix(fields[4], real+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}
