package kuberuntime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSandboxConfig(t *testing.T) {
	tests := []struct {
		name         string
		hostNetwork  bool
		networkReady bool
		wantNetwork  runtimeapi.NamespaceMode
		wantHostname string
		wantPodIP    string // prefix
		wantErr      string
	}{
		{name: "hostnet", hostNetwork: true, networkReady: true, wantNetwork: runtimeapi.NamespaceMode_NODE, wantPodIP: nodeIP},
		// hostNetwork pods must run without CNI: that is the edge's normal case.
		{name: "hostnet-nocni", hostNetwork: true, networkReady: false, wantNetwork: runtimeapi.NamespaceMode_NODE, wantPodIP: nodeIP},
		{name: "podnet", networkReady: true, wantNetwork: runtimeapi.NamespaceMode_POD, wantHostname: "podnet", wantPodIP: "10.88.0."},
		{name: "podnet-nocni", networkReady: false, wantErr: "pod network is not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.cri.SetNetworkReady(tc.networkReady)
			pod := testPod(tc.name, func(p *corev1.Pod) {
				p.Spec.HostNetwork = tc.hostNetwork
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
			})
			st, err := h.sync(pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				if n := h.cri.Calls("RunPodSandbox"); n != 0 {
					t.Fatalf("RunPodSandbox called %d times without a network", n)
				}
				wantWaiting(t, containerStatusOf(t, st, "app"), ReasonContainerCreating, tc.wantErr)
				if st.Phase != corev1.PodPending {
					t.Fatalf("phase %s, want Pending", st.Phase)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sbs := h.sandboxes(pod.UID)
			if len(sbs) != 1 {
				t.Fatalf("%d sandboxes, want 1", len(sbs))
			}
			cfg := sbs[0].Config
			if got := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork(); got != tc.wantNetwork {
				t.Errorf("network namespace %v, want %v", got, tc.wantNetwork)
			}
			if cfg.GetHostname() != tc.wantHostname {
				t.Errorf("hostname %q, want %q", cfg.GetHostname(), tc.wantHostname)
			}
			if tc.hostNetwork && len(cfg.GetPortMappings()) != 0 {
				t.Errorf("port mappings %v with host network", cfg.GetPortMappings())
			}
			if want := "/tether-pods/pod" + string(pod.UID); cfg.GetLinux().GetCgroupParent() != want {
				t.Errorf("cgroup parent %q, want %q", cfg.GetLinux().GetCgroupParent(), want)
			}
			if want := filepath.Join(h.logs, "default_"+tc.name+"_"+string(pod.UID)); cfg.GetLogDirectory() != want {
				t.Errorf("log directory %q, want %q", cfg.GetLogDirectory(), want)
			}
			for k, v := range map[string]string{LabelPodUID: string(pod.UID), LabelPodName: tc.name, LabelPodNamespace: "default", LabelManaged: "true", "app": tc.name} {
				if cfg.GetLabels()[k] != v {
					t.Errorf("sandbox label %s=%q, want %q", k, cfg.GetLabels()[k], v)
				}
			}
			if !strings.HasPrefix(st.PodIP, tc.wantPodIP) || st.HostIP != nodeIP {
				t.Errorf("podIP %q hostIP %q, want %q* and %q", st.PodIP, st.HostIP, tc.wantPodIP, nodeIP)
			}
			if st.Phase != corev1.PodRunning || condition(st, corev1.PodReady).Status != corev1.ConditionTrue {
				t.Errorf("phase %s ready %s, want Running and True", st.Phase, condition(st, corev1.PodReady).Status)
			}
			c := h.running(pod.UID, "app")
			if c.Config.GetLogPath() != "app/0.log" {
				t.Errorf("log path %q, want app/0.log", c.Config.GetLogPath())
			}
			if c.Config.GetLinux().GetSecurityContext().GetPrivileged() {
				t.Error("container privileged without asking")
			}
		})
	}
}

func TestEnv(t *testing.T) {
	opt := true
	tests := []struct {
		name    string
		env     []corev1.EnvVar
		envFrom []corev1.EnvFromSource
		limits  corev1.ResourceList
		want    map[string]string
		absent  []string
		wantErr string
	}{{
		name: "literal-and-expansion",
		env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "$(A)-x"}, {Name: "C", Value: "$$(A)"},
			{Name: "D", Value: "$(NOPE)"}},
		want: map[string]string{"A": "1", "B": "1-x", "C": "$(A)", "D": "$(NOPE)"},
	}, {
		name: "key-refs",
		env: []corev1.EnvVar{
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "mode"}}},
			{Name: "PASS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}, Key: "password"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "nope", Optional: &opt}}},
		},
		want:   map[string]string{"MODE": "fast", "PASS": "s3cret"},
		absent: []string{"OPT"},
	}, {
		name: "field-and-resource-refs",
		env: []corev1.EnvVar{
			{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: "LABEL", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		},
		limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("500m")},
		want: map[string]string{"NAME": "field-and-resource-refs", "NS": "default", "UID": "uid-field-and-resource-refs",
			"LABEL": "field-and-resource-refs", "POD_IP": nodeIP, "HOST_IP": nodeIP, "MEM_MI": "64", "CPU": "1"},
	}, {
		name: "env-from",
		envFrom: []corev1.EnvFromSource{
			{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &opt}},
		},
		// env wins over envFrom.
		env:  []corev1.EnvVar{{Name: "CFG_mode", Value: "slow"}},
		want: map[string]string{"CFG_mode": "slow", "CFG_level": "3", "password": "s3cret"},
	}, {
		name: "missing-key",
		env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "nope"}}}},
		wantErr: "couldn't find key nope in ConfigMap default/app-config",
	}, {
		name: "missing-configmap",
		envFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}},
		wantErr: `configmap "default/absent"`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.objs.setConfigMap("app-config", map[string]string{"mode": "fast", "level": "3"})
			h.objs.setSecret("app-secret", map[string]string{"password": "s3cret"})
			pod := testPod(tc.name, func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = tc.env
				p.Spec.Containers[0].EnvFrom = tc.envFrom
				p.Spec.Containers[0].Resources.Limits = tc.limits
			})
			st, err := h.sync(pod)
			if tc.wantErr != "" {
				ce := containerErr(err, "app")
				if ce == nil || ce.Reason != ReasonCreateConfigError || !strings.Contains(ce.Message, tc.wantErr) {
					t.Fatalf("want CreateContainerConfigError containing %q, got %v", tc.wantErr, err)
				}
				wantWaiting(t, containerStatusOf(t, st, "app"), ReasonCreateConfigError, tc.wantErr)
				if n := len(h.containers(pod.UID)); n != 0 {
					t.Fatalf("%d containers created despite the error", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := envOf(h.running(pod.UID, "app"))
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("env %s=%q, want %q", k, got[k], v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := got[k]; ok {
					t.Errorf("env %s set, want absent", k)
				}
			}
		})
	}
}

// A problem in one pod or container leaves the others alone.
func TestFailuresAreIsolated(t *testing.T) {
	h := newHarness(t)
	h.objs.setConfigMap("app-config", map[string]string{"mode": "fast"})
	good := testPod("good")
	noImage := testPod("noimage", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "registry.example/missing:v1" })
	badKey := testPod("badkey", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: appImage,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "nope"}}}}})
	})
	for _, p := range []*corev1.Pod{noImage, badKey, good} {
		_, _ = h.sync(p)
	}
	if good.Status.Phase != corev1.PodRunning {
		t.Errorf("good pod %s, want Running", good.Status.Phase)
	}
	wantWaiting(t, containerStatusOf(t, noImage.Status, "app"), ReasonErrImagePull, "registry.example/missing:v1")
	if cs := containerStatusOf(t, badKey.Status, "app"); cs.State.Running == nil {
		t.Errorf("badkey/app %+v, want Running (only the sidecar has the bad key)", cs.State)
	}
	wantWaiting(t, containerStatusOf(t, badKey.Status, "side"), ReasonCreateConfigError, "couldn't find key nope")
	if badKey.Status.Phase != corev1.PodPending || condition(badKey.Status, corev1.PodReady).Status != corev1.ConditionFalse {
		t.Errorf("badkey phase %s ready %s, want Pending and False", badKey.Status.Phase, condition(badKey.Status, corev1.PodReady).Status)
	}
}

func TestVolumes(t *testing.T) {
	needRoot(t)
	h := newHarness(t)
	h.objs.setConfigMap("app-config", map[string]string{"app.yaml": "v: 1\n", "other": "x"})
	h.objs.setSecret("app-secret", map[string]string{"token": "abc", "cert": "pem"})
	hostDir := filepath.Join(t.TempDir(), "host", "data")
	cmMode, itemMode, secretMode := int32(0o600), int32(0o640), int32(0o400)
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	pod := testPod("vols", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, DefaultMode: &cmMode,
				Items: []corev1.KeyToPath{{Key: "app.yaml", Path: "conf/app.yaml", Mode: &itemMode}, {Key: "other", Path: "other"}}}}},
			{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: "app-secret", DefaultMode: &secretMode}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirOrCreate}}},
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
			{Name: "cfg", MountPath: "/etc/app", ReadOnly: true},
			{Name: "sec", MountPath: "/run/secret", ReadOnly: true},
			{Name: "scratch", MountPath: "/scratch/logs", SubPath: "logs"},
			{Name: "host", MountPath: "/data"},
		}
	})
	h.mustSync(pod)
	volDir := func(plugin, name string) string {
		return filepath.Join(h.root, "pods", string(pod.UID), "volumes", plugin, name)
	}
	checkFile := func(path, content string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content || fi.Mode().Perm() != mode {
			t.Errorf("%s: %q %v, want %q %v", path, b, fi.Mode().Perm(), content, mode)
		}
	}
	cfgDir, secDir := volDir(pluginConfigMap, "cfg"), volDir(pluginSecret, "sec")
	checkFile(filepath.Join(cfgDir, "conf/app.yaml"), "v: 1\n", 0o640)
	checkFile(filepath.Join(cfgDir, "other"), "x", 0o600)
	checkFile(filepath.Join(secDir, "token"), "abc", 0o400)
	checkFile(filepath.Join(secDir, "cert"), "pem", 0o400)
	if fi, err := os.Stat(hostDir); err != nil || !fi.IsDir() {
		t.Errorf("hostPath DirectoryOrCreate not created: %v", err)
	}

	c := h.running(pod.UID, "app")
	wantMounts := map[string]struct {
		host     string
		readOnly bool
	}{
		"/etc/app":    {cfgDir, true},
		"/run/secret": {secDir, true},
		// A subPath is bind-mounted by Edged on a target of its own, which the runtime mounts.
		"/scratch/logs": {filepath.Join(h.root, "pods", string(pod.UID), subPathsDir, "scratch", "app", "2"), false},
		"/data":         {hostDir, false},
	}
	for _, m := range c.Config.GetMounts() {
		w, ok := wantMounts[m.GetContainerPath()]
		if !ok || m.GetHostPath() != w.host || m.GetReadonly() != w.readOnly {
			t.Errorf("mount %s <- %s ro=%v, want %+v", m.GetContainerPath(), m.GetHostPath(), m.GetReadonly(), w)
		}
		delete(wantMounts, m.GetContainerPath())
	}
	if len(wantMounts) != 0 {
		t.Errorf("missing mounts %v", wantMounts)
	}
	// The bind target shows the subPath directory, created in the emptyDir with the emptyDir's mode.
	logsDir := filepath.Join(volDir(pluginEmptyDir, "scratch"), "logs")
	if err := os.WriteFile(filepath.Join(logsDir, "marker"), []byte("in logs"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(h.root, "pods", string(pod.UID), subPathsDir, "scratch", "app", "2")
	if b, err := os.ReadFile(filepath.Join(target, "marker")); err != nil || string(b) != "in logs" {
		t.Errorf("subPath bind target does not show the subPath directory: %q, %v", b, err)
	}
	if fi, err := os.Stat(logsDir); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("subPath directory mode = %v, %v; want the emptyDir's 0777", fi.Mode().Perm(), err)
	}
	// Secrets are on a tmpfs of their own, the ConfigMap on disk.
	if ok, err := isTmpfsMount(secDir); err != nil || !ok {
		t.Errorf("secret volume on tmpfs = %v, %v; want true", ok, err)
	}
	if ok, err := isTmpfsMount(cfgDir); err != nil || ok {
		t.Errorf("configMap volume on tmpfs = %v, %v; want false", ok, err)
	}

	// A ConfigMap update reaches the running container's volume; the container is not touched.
	h.objs.setConfigMap("app-config", map[string]string{"app.yaml": "v: 2\n"})
	creates := h.cri.Calls("CreateContainer")
	if _, err := h.sync(pod); err == nil || !strings.Contains(err.Error(), "couldn't find key other") {
		t.Fatalf("want a refresh error for the removed item key, got %v", err)
	}
	checkFile(filepath.Join(cfgDir, "conf/app.yaml"), "v: 1\n", 0o640) // a failed refresh keeps the old content
	h.objs.setConfigMap("app-config", map[string]string{"app.yaml": "v: 2\n", "other": "y"})
	h.mustSync(pod)
	checkFile(filepath.Join(cfgDir, "conf/app.yaml"), "v: 2\n", 0o640)
	checkFile(filepath.Join(cfgDir, "other"), "y", 0o600)
	h.objs.setSecret("app-secret", map[string]string{"token": "new"})
	h.mustSync(pod)
	checkFile(filepath.Join(secDir, "token"), "new", 0o400)
	if _, err := os.Lstat(filepath.Join(secDir, "cert")); !os.IsNotExist(err) {
		t.Errorf("removed secret key still present: %v", err)
	}
	if got := h.cri.Calls("CreateContainer"); got != creates {
		t.Errorf("CreateContainer called %d more times on volume updates", got-creates)
	}
	if h.running(pod.UID, "app").ID != c.ID {
		t.Error("container replaced on a volume update")
	}
	entries, _ := os.ReadDir(cfgDir)
	var revs int
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), revPrefix) {
			revs++
		}
	}
	if revs != 1 {
		t.Errorf("%d revision directories left, want 1", revs)
	}
}

func TestVolumeErrors(t *testing.T) {
	tests := []struct {
		name    string
		volume  corev1.VolumeSource
		wantMsg string
	}{
		{"missing-item-key", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"},
			Items:                []corev1.KeyToPath{{Key: "nope", Path: "x"}}}}, "couldn't find key nope in ConfigMap default/app-config"},
		{"missing-configmap", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}, `configmap "default/absent"`},
		{"unsupported", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}},
			"unsupported volume type"},
		{"bad-item-path", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"},
			Items:                []corev1.KeyToPath{{Key: "mode", Path: "../escape"}}}}, "must not start with '..'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.objs.setConfigMap("app-config", map[string]string{"mode": "fast"})
			pod := testPod(tc.name, func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: tc.volume}}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
				// The sidecar does not mount the volume and must run regardless.
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent})
			})
			st, err := h.sync(pod)
			if ce := containerErr(err, "app"); ce == nil || ce.Reason != ReasonCreateConfigError || !strings.Contains(ce.Message, tc.wantMsg) {
				t.Fatalf("want CreateContainerConfigError with %q, got %v", tc.wantMsg, err)
			}
			wantWaiting(t, containerStatusOf(t, st, "app"), ReasonCreateConfigError, tc.wantMsg)
			if containerStatusOf(t, st, "side").State.Running == nil {
				t.Errorf("sidecar not running: %+v", containerStatusOf(t, st, "side").State)
			}
		})
	}
}

func TestCrashLoopBackOff(t *testing.T) {
	h := newHarness(t)
	pod := testPod("crash")
	h.mustSync(pod)

	// The first crash restarts at once.
	h.exit(pod.UID, "app", 1)
	st := h.mustSync(pod)
	cs := containerStatusOf(t, st, "app")
	if cs.State.Running == nil || cs.RestartCount != 1 || cs.LastTerminationState.Terminated == nil ||
		cs.LastTerminationState.Terminated.ExitCode != 1 || cs.LastTerminationState.Terminated.Reason != "Error" {
		t.Fatalf("after first crash: %+v", cs)
	}
	if got := h.running(pod.UID, "app").Config.GetLogPath(); got != "app/1.log" {
		t.Errorf("log path %q, want app/1.log", got)
	}

	// Then 10 s, 20 s, 40 s after each exit.
	for i, delay := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		h.clock.Step(time.Second)
		h.exit(pod.UID, "app", 2)
		st, err := h.sync(pod)
		ce := containerErr(err, "app")
		if ce == nil || ce.Reason != ReasonCrashLoopBackOff || ce.RetryAfter != delay {
			t.Fatalf("crash %d: want CrashLoopBackOff retry after %s, got %v", i+2, delay, err)
		}
		cs := containerStatusOf(t, st, "app")
		wantWaiting(t, cs, ReasonCrashLoopBackOff, "back-off "+delay.String())
		if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 2 || cs.Ready {
			t.Fatalf("crash %d: status %+v", i+2, cs)
		}
		// CrashLoopBackOff pods are Running, as with the kubelet.
		if st.Phase != corev1.PodRunning || condition(st, corev1.PodReady).Status != corev1.ConditionFalse {
			t.Fatalf("crash %d: phase %s ready %s", i+2, st.Phase, condition(st, corev1.PodReady).Status)
		}
		h.clock.Step(delay - time.Second)
		if _, err := h.sync(pod); containerErr(err, "app") == nil {
			t.Fatalf("crash %d: restarted before the back-off ended", i+2)
		}
		h.clock.Step(time.Second)
		st = h.mustSync(pod)
		if cs := containerStatusOf(t, st, "app"); cs.State.Running == nil || cs.RestartCount != int32(i+2) {
			t.Fatalf("crash %d: after back-off %+v", i+2, cs)
		}
	}

	// Ten minutes of running forgives the past: the next crash restarts at once.
	h.clock.Step(11 * time.Minute)
	h.exit(pod.UID, "app", 1)
	st = h.mustSync(pod)
	if cs := containerStatusOf(t, st, "app"); cs.State.Running == nil || cs.RestartCount != 5 {
		t.Fatalf("after a long run: %+v", cs)
	}
}

func TestSpecChangeRestartsOnlyThatContainer(t *testing.T) {
	h := newHarness(t)
	h.cri.AddImage("tether/testapp:v2")
	pod := testPod("change", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent})
	})
	h.mustSync(pod)
	app, side := h.running(pod.UID, "app"), h.running(pod.UID, "side")

	// Probes are not part of the hash: no restart.
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}}}
	h.mustSync(pod)
	if h.running(pod.UID, "app").ID != app.ID {
		t.Fatal("a probe change restarted the container")
	}

	pod.Spec.Containers[0].Image = "tether/testapp:v2"
	st := h.mustSync(pod)
	newApp := h.running(pod.UID, "app")
	if newApp.ID == app.ID || newApp.Config.GetImage().GetUserSpecifiedImage() != "tether/testapp:v2" {
		t.Fatalf("app not replaced: %+v", newApp)
	}
	if h.running(pod.UID, "side").ID != side.ID {
		t.Error("unchanged sidecar was restarted")
	}
	for _, c := range h.containers(pod.UID) {
		if c.ID == app.ID && (c.State != runtimeapi.ContainerState_CONTAINER_EXITED || c.StopTimeout != 30) {
			t.Errorf("old container state %v stop timeout %d, want exited with grace 30", c.State, c.StopTimeout)
		}
	}
	if cs := containerStatusOf(t, st, "app"); cs.RestartCount != 1 || cs.Image != "tether/testapp:v2" || !cs.Ready {
		t.Errorf("status after spec change: %+v", cs)
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy      corev1.RestartPolicy
		exitCode    int32
		wantPhase   corev1.PodPhase
		wantRestart bool
	}{
		{corev1.RestartPolicyNever, 0, corev1.PodSucceeded, false},
		{corev1.RestartPolicyNever, 1, corev1.PodFailed, false},
		{corev1.RestartPolicyOnFailure, 0, corev1.PodSucceeded, false},
		{corev1.RestartPolicyOnFailure, 3, corev1.PodRunning, true},
		{corev1.RestartPolicyAlways, 0, corev1.PodRunning, true},
		{corev1.RestartPolicyAlways, 1, corev1.PodRunning, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.policy)+"-"+string(rune('0'+tc.exitCode)), func(t *testing.T) {
			h := newHarness(t)
			pod := testPod("job", func(p *corev1.Pod) { p.Spec.RestartPolicy = tc.policy })
			h.mustSync(pod)
			h.exit(pod.UID, "app", tc.exitCode)
			st := h.mustSync(pod)
			if st.Phase != tc.wantPhase {
				t.Fatalf("phase %s, want %s", st.Phase, tc.wantPhase)
			}
			cs := containerStatusOf(t, st, "app")
			if restarted := cs.RestartCount == 1 && cs.State.Running != nil; restarted != tc.wantRestart {
				t.Fatalf("restarted=%v, want %v: %+v", restarted, tc.wantRestart, cs)
			}
			if tc.wantRestart {
				return
			}
			if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != tc.exitCode {
				t.Fatalf("want terminated with %d, got %+v", tc.exitCode, cs.State)
			}
			if r := condition(st, corev1.PodReady); r.Status != corev1.ConditionFalse || r.Reason != "PodCompleted" {
				t.Errorf("ready condition %+v, want False/PodCompleted", r)
			}
			if r := condition(st, corev1.PodReadyToStartContainers); r.Status != corev1.ConditionFalse {
				t.Errorf("sandbox condition %+v, want False once the sandbox is released", r)
			}
			// A finished pod releases its sandbox and never runs again, even when its sandbox is gone.
			if sbs := h.sandboxes(pod.UID); len(sbs) != 1 || sbs[0].State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Fatalf("sandboxes %+v, want one stopped", sbs)
			}
			h.mustSync(pod)
			h.cri.Reboot()
			if st := h.mustSync(pod); st.Phase != tc.wantPhase {
				t.Errorf("phase after resync %s", st.Phase)
			}
			if n := h.cri.Calls("RunPodSandbox"); n != 1 || len(h.containers(pod.UID)) != 1 {
				t.Errorf("finished pod ran again: %d sandboxes, %d containers", n, len(h.containers(pod.UID)))
			}
		})
	}
}

func TestImagePull(t *testing.T) {
	t.Run("missing-then-backoff-then-pulled", func(t *testing.T) {
		h := newHarness(t)
		const img = "registry.example/app:v3"
		pod := testPod("pull", func(p *corev1.Pod) { p.Spec.Containers[0].Image = img })
		_, err := h.sync(pod)
		ce := containerErr(err, "app")
		if ce == nil || ce.Reason != ReasonErrImagePull || !strings.Contains(ce.Message, "no such host") || ce.RetryAfter != 10*time.Second {
			t.Fatalf("want ErrImagePull retry 10s, got %v", err)
		}
		wantWaiting(t, containerStatusOf(t, pod.Status, "app"), ReasonErrImagePull, `Failed to pull image "`+img+`"`)
		if pod.Status.Phase != corev1.PodPending {
			t.Errorf("phase %s, want Pending", pod.Status.Phase)
		}
		h.clock.Step(5 * time.Second)
		if _, err := h.sync(pod); containerErr(err, "app").Reason != ReasonImagePullBackOff {
			t.Fatalf("want ImagePullBackOff, got %v", err)
		}
		wantWaiting(t, containerStatusOf(t, pod.Status, "app"), ReasonImagePullBackOff, "Back-off pulling image")
		if n := h.cri.Calls("PullImage"); n != 1 {
			t.Fatalf("PullImage called %d times during back-off", n)
		}
		h.clock.Step(5 * time.Second)
		if _, err := h.sync(pod); containerErr(err, "app").RetryAfter != 20*time.Second {
			t.Fatalf("want the second pull failure to back off 20s, got %v", err)
		}
		h.cri.SetPullable(img)
		h.clock.Step(20 * time.Second)
		if st := h.mustSync(pod); st.Phase != corev1.PodRunning {
			t.Fatalf("phase %s after the image appeared", st.Phase)
		}
	})

	tests := []struct {
		name       string
		image      string
		policy     corev1.PullPolicy
		present    bool
		wantPulls  int
		wantReason string
	}{
		{"ifnotpresent-local", appImage, corev1.PullIfNotPresent, true, 0, ""},
		{"never-local", appImage, corev1.PullNever, true, 0, ""},
		{"never-missing", "tether/none:v1", corev1.PullNever, false, 0, ReasonErrImageNeverPull},
		// :latest defaults to Always; offline, the local copy is used when the pull fails.
		{"latest-defaults-to-always", "tether/app:latest", "", true, 1, ""},
		{"untagged-missing", "tether/app", "", false, 1, ReasonErrImagePull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.present {
				h.cri.AddImage(tc.image)
			}
			pod := testPod(tc.name, func(p *corev1.Pod) {
				p.Spec.Containers[0].Image = tc.image
				p.Spec.Containers[0].ImagePullPolicy = tc.policy
			})
			_, err := h.sync(pod)
			if n := h.cri.Calls("PullImage"); n != tc.wantPulls {
				t.Errorf("PullImage called %d times, want %d", n, tc.wantPulls)
			}
			if tc.wantReason == "" {
				if err != nil || pod.Status.Phase != corev1.PodRunning {
					t.Fatalf("want Running, got %s %v", pod.Status.Phase, err)
				}
				return
			}
			if ce := containerErr(err, "app"); ce == nil || ce.Reason != tc.wantReason {
				t.Fatalf("want %s, got %v", tc.wantReason, err)
			}
		})
	}
}

func TestInitContainers(t *testing.T) {
	h := newHarness(t)
	pod := testPod("init", func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{
			{Name: "init-a", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent},
			{Name: "init-b", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent},
		}
	})
	st := h.mustSync(pod)
	if st.Phase != corev1.PodPending || condition(st, corev1.PodInitialized).Status != corev1.ConditionFalse {
		t.Fatalf("phase %s initialized %s", st.Phase, condition(st, corev1.PodInitialized).Status)
	}
	wantWaiting(t, containerStatusOf(t, st, "app"), ReasonPodInitializing, "")
	wantWaiting(t, containerStatusOf(t, st, "init-b"), ReasonPodInitializing, "")
	if n := len(h.containers(pod.UID)); n != 1 {
		t.Fatalf("%d containers while the first init container runs", n)
	}
	// A failing init container is retried (policy Always) before anything else starts.
	h.exit(pod.UID, "init-a", 1)
	st = h.mustSync(pod)
	if cs := containerStatusOf(t, st, "init-a"); cs.RestartCount != 1 || cs.State.Running == nil {
		t.Fatalf("init-a after failure: %+v", cs)
	}
	h.exit(pod.UID, "init-a", 0)
	h.mustSync(pod)
	h.exit(pod.UID, "init-b", 0)
	st = h.mustSync(pod)
	if st.Phase != corev1.PodRunning || condition(st, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Fatalf("phase %s initialized %s", st.Phase, condition(st, corev1.PodInitialized).Status)
	}
	if cs := containerStatusOf(t, st, "init-b"); cs.State.Terminated == nil || !cs.Ready {
		t.Errorf("init-b status %+v", cs)
	}
	// Done init containers are not run again on resync.
	creates := h.cri.Calls("CreateContainer")
	h.mustSync(pod)
	if h.cri.Calls("CreateContainer") != creates {
		t.Error("resync created containers")
	}

	t.Run("never-fails-pod", func(t *testing.T) {
		h := newHarness(t)
		pod := testPod("initfail", func(p *corev1.Pod) {
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent}}
		})
		h.mustSync(pod)
		h.exit(pod.UID, "init", 1)
		if st := h.mustSync(pod); st.Phase != corev1.PodFailed {
			t.Fatalf("phase %s, want Failed", st.Phase)
		}
	})
}

func TestSyncErrorsAreContainerErrors(t *testing.T) {
	h := newHarness(t)
	h.cri.FailNext("StartContainer", errors.New("boom"))
	pod := testPod("starterr")
	_, err := h.sync(pod)
	ce := containerErr(err, "app")
	if ce == nil || ce.Reason != ReasonRunContainerError || ce.Pod != "default/starterr" {
		t.Fatalf("want RunContainerError, got %v", err)
	}
	wantWaiting(t, containerStatusOf(t, pod.Status, "app"), ReasonRunContainerError, "boom")
	// The created container is started on the next sync rather than created again.
	st := h.mustSync(pod)
	if st.Phase != corev1.PodRunning || h.cri.Calls("CreateContainer") != 1 {
		t.Fatalf("phase %s, %d creates", st.Phase, h.cri.Calls("CreateContainer"))
	}
}

// tokenObjects adds a token source to fakeObjects.
type tokenObjects struct{ *fakeObjects }

func (tokenObjects) GetServiceAccountToken(_ context.Context, ns, name string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out := req.DeepCopy()
	out.Status.Token = "token-for-" + ns + "/" + name + "/" + req.Spec.BoundObjectRef.Name
	return out, nil
}

// The API server adds a kube-api-access projected volume to every pod; it must work with and without a token
// source.
func TestProjectedVolume(t *testing.T) {
	needRoot(t)
	for _, withToken := range []bool{false, true} {
		t.Run(map[bool]string{false: "no-token-source", true: "token-source"}[withToken], func(t *testing.T) {
			h := newHarness(t)
			h.objs.setConfigMap("kube-root-ca.crt", map[string]string{"ca.crt": "CA"})
			mode := int32(0o644)
			exp := int64(3607)
			pod := testPod("projected", func(p *corev1.Pod) {
				p.Annotations = map[string]string{"b": "2", "a": "1"}
				p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: &mode,
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
							{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
							{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
						}}},
					}}}}}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}
			})
			var getter ObjectGetter = h.objs
			if withToken {
				getter = tokenObjects{h.objs}
			}
			st, err := h.m.SyncPod(h.ctx, pod, getter)
			if err != nil || st.Phase != corev1.PodRunning {
				t.Fatalf("phase %s: %v", st.Phase, err)
			}
			dir := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginProjected, "kube-api-access")
			want := map[string]string{"ca.crt": "CA", "namespace": "default", "annotations": "a=\"1\"\nb=\"2\"\n"}
			if withToken {
				want["token"] = "token-for-default/default/projected"
			}
			for f, content := range want {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != content {
					t.Errorf("%s = %q, %v; want %q", f, b, err, content)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "token")); !withToken && !os.IsNotExist(err) {
				t.Errorf("token file without a token source: %v", err)
			}
		})
	}
}

func TestSecurityContext(t *testing.T) {
	h := newHarness(t)
	yes, no := true, false
	uid, gid, fsGroup := int64(1000), int64(2000), int64(3000)
	pod := testPod("sec", func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, FSGroup: &fsGroup}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsGroup: &gid, ReadOnlyRootFilesystem: &yes,
			AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "priv", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent,
			SecurityContext: &corev1.SecurityContext{Privileged: &yes}})
	})
	h.mustSync(pod)
	if !h.sandboxes(pod.UID)[0].Config.GetLinux().GetSecurityContext().GetPrivileged() {
		t.Error("sandbox of a pod with a privileged container is not privileged")
	}
	sc := h.running(pod.UID, "app").Config.GetLinux().GetSecurityContext()
	if sc.GetPrivileged() || sc.GetRunAsUser().GetValue() != uid || sc.GetRunAsGroup().GetValue() != gid || !sc.GetReadonlyRootfs() ||
		!sc.GetNoNewPrivs() || !slices.Equal(sc.GetCapabilities().GetAddCapabilities(), []string{"NET_ADMIN"}) ||
		!slices.Equal(sc.GetSupplementalGroups(), []int64{fsGroup}) {
		t.Errorf("app security context %v", sc)
	}
	if !h.running(pod.UID, "priv").Config.GetLinux().GetSecurityContext().GetPrivileged() {
		t.Error("privileged container not privileged")
	}
}

func TestMountChecks(t *testing.T) {
	file := corev1.HostPathFile
	tests := []struct {
		name    string
		volume  corev1.VolumeSource
		subPath string
		prepare func(t *testing.T, h *harness, pod *corev1.Pod)
		wantMsg string
	}{
		{name: "hostpath-wrong-type", volume: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/", Type: &file}},
			wantMsg: "is not of type File"},
		{name: "subpath-dotdot", volume: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}, subPath: "../x",
			wantMsg: "unable to provision SubPath `../x`: must not contain '..'"},
		{name: "subpath-symlink-escape", volume: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}, subPath: "evil",
			// A container planted a symlink to / in its writable volume.
			prepare: func(t *testing.T, h *harness, pod *corev1.Pod) {
				dir := filepath.Join(h.root, "pods", string(pod.UID), "volumes", pluginEmptyDir, "v")
				if err := os.MkdirAll(dir, 0o777); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("/", filepath.Join(dir, "evil")); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "resolves outside its volume"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pod := testPod(tc.name, func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: tc.volume}}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v", SubPath: tc.subPath}}
			})
			if tc.prepare != nil {
				tc.prepare(t, h, pod)
			}
			_, err := h.sync(pod)
			if ce := containerErr(err, "app"); ce == nil || ce.Reason != ReasonCreateConfigError || !strings.Contains(ce.Message, tc.wantMsg) {
				t.Fatalf("want CreateContainerConfigError with %q, got %v", tc.wantMsg, err)
			}
		})
	}
}
