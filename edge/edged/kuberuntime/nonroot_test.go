package kuberuntime

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestVerifyRunAsNonRoot(t *testing.T) {
	const pod = `"nonroot_default(uid-nonroot)"`
	tests := []struct {
		name      string
		podSC     *corev1.PodSecurityContext
		cSC       *corev1.SecurityContext
		imageUID  *int64
		imageName string
		wantErr   string
	}{
		{name: "not-asked", imageUID: ptr(int64(0))},
		{name: "asked-false", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(false)}, imageUID: ptr(int64(0))},
		{name: "root-image", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, imageUID: ptr(int64(0)),
			wantErr: "container has runAsNonRoot and image will run as root (pod: " + pod + ", container: app)"},
		{name: "container-asks", cSC: &corev1.SecurityContext{RunAsNonRoot: ptr(true)}, imageUID: ptr(int64(0)),
			wantErr: "container has runAsNonRoot and image will run as root (pod: " + pod + ", container: app)"},
		{name: "container-lifts-pod-requirement", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)},
			cSC: &corev1.SecurityContext{RunAsNonRoot: ptr(false)}, imageUID: ptr(int64(0))},
		{name: "non-root-image", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, imageUID: ptr(int64(1000))},
		{name: "named-image-user", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, imageName: "app",
			wantErr: "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: " + pod + ", container: app)"},
		{name: "root-by-name", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, imageName: "root",
			wantErr: "container has runAsNonRoot and image has non-numeric user (root), cannot verify user is non-root (pod: " + pod + ", container: app)"},
		{name: "run-as-user-zero", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(0))}, imageUID: ptr(int64(1000)),
			wantErr: "container's runAsUser breaks non-root policy (pod: " + pod + ", container: app)"},
		{name: "run-as-user-wins-over-root-image", cSC: &corev1.SecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(1000))},
			imageUID: ptr(int64(0))},
		{name: "run-as-user-wins-over-named-image", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(1000))},
			imageName: "root"},
		{name: "invalid-image-uid", podSC: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, imageUID: ptr(int64(1) << 40),
			wantErr: fmt.Sprintf("container has runAsNonRoot and image has an invalid user id (%d). (Must be 1-(2147483647))", int64(1)<<40)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod("nonroot", func(p *corev1.Pod) {
				p.Spec.SecurityContext = tc.podSC
				p.Spec.Containers[0].SecurityContext = tc.cSC
			})
			err := verifyRunAsNonRoot(p, &p.Spec.Containers[0], imageUser{uid: tc.imageUID, name: tc.imageName})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || len(err.Error()) < len(tc.wantErr) || err.Error()[:len(tc.wantErr)] != tc.wantErr):
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// Through SyncPod: the runtime reports the image's user, and a root image under runAsNonRoot never gets a
// container, with the kubelet's reason and message.
func TestRunAsNonRootAgainstImageUser(t *testing.T) {
	tests := []struct {
		name      string
		imageUID  *int64
		imageName string
		wantMsg   string
	}{
		{name: "image-without-user", wantMsg: `container has runAsNonRoot and image will run as root (pod: "app_default(uid-app)", container: app)`},
		{name: "image-user-0", imageUID: ptr(int64(0)), wantMsg: "image will run as root"},
		{name: "image-user-name", imageName: "daemon", wantMsg: "image has non-numeric user (daemon)"},
		{name: "image-user-1000", imageUID: ptr(int64(1000))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.cri.SetImageUser(appImage, tc.imageUID, tc.imageName)
			pod := testPod("app", func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}
			})
			st, err := h.sync(pod)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := h.running(pod.UID, "app").Config.GetLinux().GetSecurityContext().GetRunAsUser().GetValue(); got != 1000 {
					t.Errorf("runAsUser %d, want the image's 1000", got)
				}
				return
			}
			if ce := containerErr(err, "app"); ce == nil || ce.Reason != ReasonCreateConfigError {
				t.Fatalf("want CreateContainerConfigError, got %v", err)
			}
			wantWaiting(t, containerStatusOf(t, st, "app"), ReasonCreateConfigError, tc.wantMsg)
			if n := h.cri.Calls("CreateContainer"); n != 0 {
				t.Errorf("CreateContainer called %d times for a container that must not run", n)
			}
		})
	}
}
