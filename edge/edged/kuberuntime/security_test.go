package kuberuntime

import (
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func ptr[T any](v T) *T { return &v }

// orNothing lets table entries leave their pod mutation out.
func orNothing(f func(*corev1.Pod)) func(*corev1.Pod) {
	if f == nil {
		return func(*corev1.Pod) {}
	}
	return f
}

func profile(t runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.SecurityProfile {
	return &runtimeapi.SecurityProfile{ProfileType: t, LocalhostRef: ref}
}

var (
	unconfined     = profile(runtimeapi.SecurityProfile_Unconfined, "")
	runtimeDefault = profile(runtimeapi.SecurityProfile_RuntimeDefault, "")
)

// TestContainerSecurityRequest checks the CRI security context Edged sends for each kind of securityContext,
// field by field, against what the kubelet sends.
func TestContainerSecurityRequest(t *testing.T) {
	masked, readonly := defaultMaskedPaths(), defaultReadonlyPaths
	tests := []struct {
		name           string
		seccompDefault bool
		imageUID       *int64
		imageName      string
		mutate         func(p *corev1.Pod)
		// want is the expected container security context; NamespaceOptions is filled in by the test.
		want *runtimeapi.LinuxContainerSecurityContext
	}{{
		name:     "no-security-context",
		imageUID: ptr(int64(0)),
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 0},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name:     "image-user-name",
		imageUID: nil, imageName: "nobody",
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "nobody",
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name: "pod-user-group-groups-fsgroup",
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(2000)),
				SupplementalGroups: []int64{5, 6}, FSGroup: ptr(int64(3000)),
				SupplementalGroupsPolicy: ptr(corev1.SupplementalGroupsPolicyStrict)}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000},
			RunAsGroup: &runtimeapi.Int64Value{Value: 2000}, SupplementalGroups: []int64{3000, 5, 6},
			SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict,
			MaskedPaths:              masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name: "container-overrides-pod",
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(2000)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				SELinuxOptions: &corev1.SELinuxOptions{Level: "s0:c1"}}
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(1001)), RunAsGroup: ptr(int64(2001)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
				SELinuxOptions: &corev1.SELinuxOptions{Level: "s0:c2"}}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1001},
			RunAsGroup: &runtimeapi.Int64Value{Value: 2001}, SelinuxOptions: &runtimeapi.SELinuxOption{Level: "s0:c2"},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name: "hardened",
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
				RunAsUser: ptr(int64(65534)), ReadOnlyRootFilesystem: ptr(true), AllowPrivilegeEscalation: ptr(false),
				Capabilities:   &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 65534}, ReadonlyRootfs: true,
			NoNewPrivs:   true,
			Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_BIND_SERVICE"}, DropCapabilities: []string{"ALL"}},
			MaskedPaths:  masked, ReadonlyPaths: readonly, Seccomp: runtimeDefault},
	}, {
		// allowPrivilegeEscalation true, like nil, leaves no_new_privs off (the kubelet's AddNoNewPrivileges).
		name: "privilege-escalation-allowed",
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(1)), AllowPrivilegeEscalation: ptr(true)}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name: "proc-mount-unmasked",
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(1)), ProcMount: ptr(corev1.UnmaskedProcMount)}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1}, Seccomp: unconfined},
	}, {
		name: "privileged-gets-no-masks",
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(0)), Privileged: ptr(true)}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 0}, Privileged: true,
			Seccomp: unconfined},
	}, {
		name:           "node-seccomp-default",
		seccompDefault: true,
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(7))}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 7},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: runtimeDefault},
	}, {
		// An explicit Unconfined stays unconfined on a seccompDefault node.
		name:           "explicit-unconfined-beats-node-default",
		seccompDefault: true,
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(7)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 7},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined},
	}, {
		name: "seccomp-localhost",
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(7)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr("profiles/audit.json")}}
		},
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 7},
			MaskedPaths: masked, ReadonlyPaths: readonly,
			Seccomp: profile(runtimeapi.SecurityProfile_Localhost, "ROOT/seccomp/profiles/audit.json")},
	}, {
		name: "apparmor-field-and-annotation",
		mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "app": "localhost/edge-app"}
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(7)),
				AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		},
		// The container's annotation wins over the pod's field, as with the kubelet.
		want: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 7},
			MaskedPaths: masked, ReadonlyPaths: readonly, Seccomp: unconfined,
			Apparmor: profile(runtimeapi.SecurityProfile_Localhost, "edge-app"), ApparmorProfile: "localhost/edge-app"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.m.opts.SeccompDefault = tc.seccompDefault
			h.m.appArmorHost = func() error { return nil }
			h.cri.SetImageUser(appImage, tc.imageUID, tc.imageName)
			pod := testPod(tc.name, orNothing(tc.mutate))
			h.mustSync(pod)
			got := h.running(pod.UID, "app").Config.GetLinux().GetSecurityContext()
			want := proto.Clone(tc.want).(*runtimeapi.LinuxContainerSecurityContext)
			want.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE,
				Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
			if s := want.GetSeccomp(); s.GetLocalhostRef() != "" {
				s.LocalhostRef = filepath.Join(h.root, "seccomp", "profiles/audit.json")
			}
			if !proto.Equal(got, want) {
				t.Errorf("container security context\n got: %v\nwant: %v", got, want)
			}
		})
	}
}

func TestSandboxSecurityRequest(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *corev1.Pod)
		want   *runtimeapi.LinuxSandboxSecurityContext
	}{{
		name: "plain",
		want: &runtimeapi.LinuxSandboxSecurityContext{Seccomp: runtimeDefault},
	}, {
		name: "pod-security-context",
		mutate: func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(2000)),
				SupplementalGroups: []int64{5}, FSGroup: ptr(int64(3000)),
				// The pause container keeps RuntimeDefault whatever the pod's profile.
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
		},
		want: &runtimeapi.LinuxSandboxSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000},
			RunAsGroup: &runtimeapi.Int64Value{Value: 2000}, SupplementalGroups: []int64{3000, 5}, Seccomp: runtimeDefault},
	}, {
		name: "privileged-init-container",
		mutate: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent,
				SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}
		},
		want: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true, Seccomp: runtimeDefault},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pod := testPod(tc.name, orNothing(tc.mutate))
			_, _ = h.sync(pod)
			sbs := h.sandboxes(pod.UID)
			if len(sbs) != 1 {
				t.Fatalf("%d sandboxes, want 1", len(sbs))
			}
			got := sbs[0].Config.GetLinux().GetSecurityContext()
			want := proto.Clone(tc.want).(*runtimeapi.LinuxSandboxSecurityContext)
			want.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE,
				Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
			if !proto.Equal(got, want) {
				t.Errorf("sandbox security context\n got: %v\nwant: %v", got, want)
			}
		})
	}
}

// The masks are the kubelet's v1.37 defaults; the per-CPU thermal_throttle entries depend on the host.
func TestDefaultProcPaths(t *testing.T) {
	want := []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	got := defaultMaskedPaths()
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("masked paths %v, want %v first", got, want)
	}
	for _, p := range got[len(want):] {
		if matched, _ := filepath.Match("/sys/devices/system/cpu/cpu*/thermal_throttle", p); !matched {
			t.Errorf("unexpected masked path %s", p)
		}
	}
	if want := []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}; !slices.Equal(readonlyPaths(nil), want) {
		t.Errorf("readonly paths %v, want %v", readonlyPaths(nil), want)
	}
	// Callers get copies: changing one request must not change the next.
	maskedPaths(nil)[0] = "changed"
	if defaultMaskedPaths()[0] != "/proc/asound" {
		t.Error("maskedPaths returned the shared default list")
	}
	for in, want := range map[string][]int{"0-3": {0, 1, 2, 3}, "0,2-3": {0, 2, 3}, "5": {5}, "": nil, "x": nil, "3-1": nil} {
		if got := parseCPUList(in); !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSecurityConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(p *corev1.Pod)
		wantMsg string
	}{
		{"localhost-without-name", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost}}
		}, "container app seccompProfile: localhostProfile must be set if seccompProfile type is Localhost"},
		{"localhost-escaping", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{
				Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr("../../etc/evil.json")}}
		}, `pod seccompProfile: localhostProfile "../../etc/evil.json" must be a relative path without '..'`},
		{"unknown-seccomp-type", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: "Strict"}}
		}, `unknown type "Strict"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pod := testPod(tc.name, orNothing(tc.mutate))
			st, err := h.sync(pod)
			if ce := containerErr(err, "app"); ce == nil || ce.Reason != ReasonCreateConfigError {
				t.Fatalf("want CreateContainerConfigError, got %v", err)
			}
			wantWaiting(t, containerStatusOf(t, st, "app"), ReasonCreateConfigError, tc.wantMsg)
			if n := h.cri.Calls("CreateContainer"); n != 0 {
				t.Errorf("CreateContainer called %d times", n)
			}
		})
	}
	t.Run("unknown-supplemental-groups-policy", func(t *testing.T) {
		h := newHarness(t)
		pod := testPod("policy", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroupsPolicy: ptr(corev1.SupplementalGroupsPolicy("Loose"))}
		})
		st, err := h.sync(pod)
		if err == nil || h.cri.Calls("RunPodSandbox") != 0 {
			t.Fatalf("want no sandbox and an error, got %v", err)
		}
		wantWaiting(t, containerStatusOf(t, st, "app"), ReasonContainerCreating, "unsupported supplementalGroupsPolicy: Loose")
	})
}
