package kuberuntime

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSeccompResolution(t *testing.T) {
	local := func(name string) *corev1.SeccompProfile {
		return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &name}
	}
	rd := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	unc := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	tests := []struct {
		name           string
		pod, container *corev1.SeccompProfile
		nodeDefault    bool
		want           *runtimeapi.SecurityProfile
		wantErr        string
	}{
		{name: "nothing", want: unconfined},
		{name: "nothing-node-default", nodeDefault: true, want: runtimeDefault},
		{name: "pod", pod: rd, want: runtimeDefault},
		{name: "container-over-pod", pod: rd, container: unc, want: unconfined},
		{name: "container-over-node-default", container: unc, nodeDefault: true, want: unconfined},
		{name: "localhost", container: local("team/app.json"),
			want: profile(runtimeapi.SecurityProfile_Localhost, "/var/lib/kubelet/seccomp/team/app.json")},
		{name: "localhost-pod", pod: local("app.json"),
			want: profile(runtimeapi.SecurityProfile_Localhost, "/var/lib/kubelet/seccomp/app.json")},
		{name: "localhost-empty", container: local(""), wantErr: "localhostProfile must be set"},
		{name: "localhost-absolute", container: local("/etc/x.json"), wantErr: "must be a relative path without '..'"},
		{name: "localhost-dotdot", pod: local("a/../../x.json"), wantErr: "must be a relative path without '..'"},
		{name: "unknown", pod: &corev1.SeccompProfile{Type: "Loose"}, wantErr: `unknown type "Loose"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manager{opts: Options{SeccompDefault: tc.nodeDefault, SeccompProfileRoot: "/var/lib/kubelet/seccomp"}}
			p := testPod("p", func(p *corev1.Pod) {
				if tc.pod != nil {
					p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: tc.pod}
				}
				if tc.container != nil {
					p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{SeccompProfile: tc.container}
				}
			})
			got, err := m.seccompProfile(p, &p.Spec.Containers[0])
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestAppArmorResolution(t *testing.T) {
	const key = corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "app"
	rd := &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	unc := &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	tests := []struct {
		name           string
		annotation     string
		pod, container *corev1.AppArmorProfile
		want           *runtimeapi.SecurityProfile
		wantLegacy     string
		wantErr        string
	}{
		{name: "none"},
		{name: "pod", pod: rd, want: runtimeDefault, wantLegacy: "runtime/default"},
		{name: "annotation-over-pod", pod: rd, annotation: "unconfined", want: unconfined, wantLegacy: "unconfined"},
		{name: "container-over-annotation", annotation: "localhost/x", container: rd, want: runtimeDefault, wantLegacy: "runtime/default"},
		{name: "annotation-localhost", annotation: "localhost/edge-app",
			want: profile(runtimeapi.SecurityProfile_Localhost, "edge-app"), wantLegacy: "localhost/edge-app"},
		{name: "invalid-annotation-ignored", annotation: "bogus", pod: unc, want: unconfined, wantLegacy: "unconfined"},
		{name: "localhost-empty", container: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: ptr(" ")},
			wantErr: "invalid empty AppArmor profile name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod("p", func(p *corev1.Pod) {
				if tc.annotation != "" {
					p.Annotations = map[string]string{key: tc.annotation}
				}
				if tc.pod != nil {
					p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: tc.pod}
				}
				if tc.container != nil {
					p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: tc.container}
				}
			})
			got, legacy, err := appArmorProfile(p, &p.Spec.Containers[0])
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.want) || legacy != tc.wantLegacy {
				t.Fatalf("got %v %q, %v; want %v %q", got, legacy, err, tc.want, tc.wantLegacy)
			}
		})
	}
}

// A pod asking for AppArmor on a host without it is rejected as the kubelet rejects it, never run unconfined;
// unconfined requests and pods without AppArmor run.
func TestAppArmorAdmission(t *testing.T) {
	tests := []struct {
		name       string
		hostErr    error
		annotation string
		pod        *corev1.AppArmorProfile
		wantReject bool
	}{
		{name: "no-apparmor-host-runtime-default", hostErr: errNoAppArmor,
			pod: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}, wantReject: true},
		{name: "no-apparmor-host-legacy-annotation", hostErr: errNoAppArmor, annotation: "localhost/edge", wantReject: true},
		{name: "no-apparmor-host-unconfined", hostErr: errNoAppArmor,
			pod: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}},
		{name: "no-apparmor-host-nothing-asked", hostErr: errNoAppArmor},
		{name: "apparmor-host", pod: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.m.appArmorHost = func() error { return tc.hostErr }
			pod := testPod("aa", func(p *corev1.Pod) {
				if tc.annotation != "" {
					p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "app": tc.annotation}
				}
				if tc.pod != nil {
					p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: tc.pod}
				}
			})
			st, err := h.sync(pod)
			if !tc.wantReject {
				if err != nil || st.Phase != corev1.PodRunning {
					t.Fatalf("phase %s, %v; want Running", st.Phase, err)
				}
				return
			}
			want := "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"
			if err != nil || st.Phase != corev1.PodFailed || st.Reason != ReasonAppArmor || st.Message != want {
				t.Fatalf("status %s %q %q, %v; want Failed %q %q", st.Phase, st.Reason, st.Message, err, ReasonAppArmor, want)
			}
			if n := h.cri.Calls("RunPodSandbox"); n != 0 {
				t.Errorf("RunPodSandbox called %d times for a rejected pod", n)
			}
			// The rejection is final: later syncs keep it and still start nothing.
			st2, err := h.sync(pod)
			if err != nil || st2.Phase != corev1.PodFailed || st2.Reason != ReasonAppArmor || h.cri.Calls("RunPodSandbox") != 0 {
				t.Fatalf("second sync: %s %q, %v, %d sandboxes", st2.Phase, st2.Reason, err, h.cri.Calls("RunPodSandbox"))
			}
		})
	}
	// A pod already running when edgecore restarts is not judged again (kubelet admission is for new pods).
	t.Run("running-pod-not-rejected", func(t *testing.T) {
		h := newHarness(t)
		h.m.appArmorHost = func() error { return nil }
		pod := testPod("aa", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		})
		h.mustSync(pod)
		m := h.newManager()
		m.appArmorHost = func() error { return errors.New("AppArmor is not enabled on the host") }
		if st := h.mustSyncWith(m, pod); st.Phase != corev1.PodRunning {
			t.Fatalf("phase %s after restart, want Running", st.Phase)
		}
	})
}

func TestHostAppArmorMatchesKernel(t *testing.T) {
	_, statErr := os.Stat("/sys/kernel/security/apparmor")
	enabled := statErr == nil && strings.HasPrefix(readTrimmed("/sys/module/apparmor/parameters/enabled"), "Y")
	if got := hostAppArmor() == nil; got != enabled {
		t.Fatalf("hostAppArmor() enabled = %v, the kernel says %v", got, enabled)
	}
}
