package nodeauthz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

type podOpt func(*corev1.Pod)

func pod(name, node string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func volume(src corev1.VolumeSource) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("v%d", len(p.Spec.Volumes)), VolumeSource: src})
	}
}

func configMapVol(name string) podOpt {
	return volume(corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}})
}

func secretVol(name string) podOpt {
	return volume(corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}})
}

func tokenVol(audience string, seconds *int64) podOpt {
	return volume(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: audience, ExpirationSeconds: seconds, Path: "t"}},
		{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
	}}})
}

// newAuthorizer returns an Authorizer over a synced fake cluster holding objs.
func newAuthorizer(t testing.TB, reg prometheus.Registerer, objs ...*corev1.Pod) *Authorizer {
	t.Helper()
	kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", UID: "uid-edge-1"}})
	f := informers.NewSharedInformerFactory(kube, 0)
	pods := f.Core().V1().Pods().Informer()
	a, err := New(Options{Pods: pods, Nodes: f.Core().V1().Nodes().Lister(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range objs {
		if err := pods.GetIndexer().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	for _, p := range objs {
		_ = pods.GetIndexer().Update(p) // the informer's initial list replaced the store
	}
	return a
}

func wantRule(t *testing.T, err error, rule Rule) {
	t.Helper()
	if rule == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	ref, ok := IsRefusal(err)
	if !ok || ref.Rule != rule {
		t.Fatalf("err = %v, want a refusal by rule %s", err, rule)
	}
	if !strings.Contains(err.Error(), string(rule)) {
		t.Errorf("message %q does not name the rule", err)
	}
}

func TestMayRead(t *testing.T) {
	a := newAuthorizer(t, nil,
		pod("web", "edge-1", configMapVol("cfg"), secretVol("tls"), tokenVol("", nil),
			func(p *corev1.Pod) {
				p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "pull"}}
				p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}}}}}
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}})
			}),
		pod("db", "edge-2", secretVol("db-pass")),
		pod("pending", "", secretVol("pending-pass")))
	tests := []struct {
		node, kind, ns, name string
		want                 Rule
	}{
		{"edge-1", KindConfigMap, "default", "cfg", ""},
		{"edge-1", KindConfigMap, "default", "kube-root-ca.crt", ""},
		{"edge-1", KindSecret, "default", "tls", ""},
		{"edge-1", KindSecret, "default", "pull", ""},
		{"edge-1", KindSecret, "default", "env", ""},
		{"edge-1", KindPVC, "default", "data", ""},
		{"edge-1", KindPod, "default", "web", ""},
		{"edge-1", KindServiceAccount, "default", "default", ""},
		{"edge-1", KindSecret, "default", "db-pass", RuleReferenced},      // another node's pod
		{"edge-1", KindSecret, "default", "pending-pass", RuleReferenced}, // an unscheduled pod
		{"edge-1", KindSecret, "kubeedge", "casecret", RuleReferenced},
		{"edge-1", KindConfigMap, "kube-system", "cfg", RuleReferenced}, // same name, other namespace
		{"edge-1", KindSecret, "default", "cfg", RuleReferenced},        // same name, other kind
		{"edge-2", KindSecret, "default", "tls", RuleReferenced},
		{"edge-2", KindSecret, "default", "db-pass", ""},
		{"edge-1", KindPod, "default", "db", RuleReferenced},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %s/%s", tt.node, tt.kind, tt.ns, tt.name), func(t *testing.T) {
			wantRule(t, a.MayRead(tt.node, tt.kind, tt.ns, tt.name), tt.want)
			wantRule(t, a.MayHold(tt.node, tt.kind, tt.ns, tt.name), tt.want)
		})
	}
	if err := a.MayHold("edge-1", "node", "", "edge-2"); err != nil {
		t.Errorf("types outside the graph are their controllers' business: %v", err)
	}
}

func TestMayReadPV(t *testing.T) {
	a := newAuthorizer(t, nil, pod("web", "edge-1", volume(corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}})))
	claims := map[string]string{"default/data": "pv-1", "default/other": "pv-2"}
	claim := func(ns, name string) (*corev1.PersistentVolumeClaim, error) {
		return &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: claims[ns+"/"+name]}}, nil
	}
	wantRule(t, a.MayReadPV("edge-1", "pv-1", claim), "")
	wantRule(t, a.MayReadPV("edge-1", "pv-2", claim), RuleReferenced)
	wantRule(t, a.MayReadPV("edge-2", "pv-1", claim), RuleReferenced)
}

func TestNotSyncedRefuses(t *testing.T) {
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	a, err := New(Options{Pods: f.Core().V1().Pods().Informer(), Nodes: f.Core().V1().Nodes().Lister()})
	if err != nil {
		t.Fatal(err)
	}
	wantRule(t, a.MayRead("edge-1", KindSecret, "default", "x"), RuleNotReady)
}

func TestNodeLabels(t *testing.T) {
	a := newAuthorizer(t, nil)
	tests := []struct {
		name     string
		old, new map[string]string
		want     Rule
	}{
		{"kubelet labels on registration", nil, map[string]string{"kubernetes.io/hostname": "e", "kubernetes.io/arch": "arm64",
			"beta.kubernetes.io/os": "linux", "topology.kubernetes.io/zone": "z", "node.kubernetes.io/instance-type": "pi4",
			"kubelet.kubernetes.io/x": "1", "foo.node.kubernetes.io/y": "2", "site": "shop-7", "example.com/rack": "3"}, ""},
		{"edge roles", nil, map[string]string{EdgeRoleLabel: "", AgentRoleLabel: ""}, ""},
		{"node-restriction on registration", nil, map[string]string{"node-restriction.kubernetes.io/pci": "true"}, RuleNodeLabels},
		{"node-restriction subdomain", nil, map[string]string{"x.node-restriction.kubernetes.io/pci": "true"}, RuleNodeLabels},
		{"control-plane role", nil, map[string]string{"node-role.kubernetes.io/control-plane": ""}, RuleNodeLabels},
		{"other k8s.io label", nil, map[string]string{"k8s.io/owner": "me"}, RuleNodeLabels},
		{"unchanged forbidden label an admin set", map[string]string{"node-restriction.kubernetes.io/pci": "true"},
			map[string]string{"node-restriction.kubernetes.io/pci": "true", "site": "b"}, ""},
		{"removing a forbidden label", map[string]string{"node-restriction.kubernetes.io/pci": "true"}, map[string]string{}, RuleNodeLabels},
		{"changing a forbidden label", map[string]string{"node-restriction.kubernetes.io/pci": "true"},
			map[string]string{"node-restriction.kubernetes.io/pci": "false"}, RuleNodeLabels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRule(t, a.NodeLabels("edge-1", tt.old, tt.new), tt.want) })
	}
}

func TestNodeSpec(t *testing.T) {
	a := newAuthorizer(t, nil)
	base := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}}}
	src := &corev1.NodeConfigSource{ConfigMap: &corev1.ConfigMapNodeConfigSource{Namespace: "kube-system", Name: "c", KubeletConfigKey: "k"}}
	untainted := base.DeepCopy()
	untainted.Spec.Taints = nil
	withSrc := base.DeepCopy()
	withSrc.Spec.ConfigSource = src
	owned := base.DeepCopy()
	owned.OwnerReferences = []metav1.OwnerReference{{Name: "x"}}
	wantRule(t, a.NodeSpec("edge-1", nil, base), "")
	wantRule(t, a.NodeSpec("edge-1", nil, withSrc), RuleNodeSpec)
	wantRule(t, a.NodeSpec("edge-1", base, base.DeepCopy()), "")
	wantRule(t, a.NodeSpec("edge-1", base, untainted), RuleNodeSpec)
	wantRule(t, a.NodeSpec("edge-1", base, withSrc), RuleNodeSpec)
	wantRule(t, a.NodeSpec("edge-1", base, owned), RuleNodeSpec)
}

func TestMirrorPod(t *testing.T) {
	a := newAuthorizer(t, nil)
	mirror := func(opts ...podOpt) *corev1.Pod {
		p := pod("static", "edge-1", opts...)
		p.Annotations = map[string]string{MirrorPodAnnotation: "h"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "edge-1", UID: "uid-edge-1", Controller: ptr.To(true)}}
		return p
	}
	edit := func(f func(*corev1.Pod)) *corev1.Pod { p := mirror(); f(p); return p }
	tests := []struct {
		name string
		pod  *corev1.Pod
		want string // in the reason; "" allows
	}{
		{"mirror pod", mirror(), ""},
		{"mirror pod with a downward API volume", mirror(volume(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{DownwardAPI: &corev1.DownwardAPIProjection{}}}}})), ""},
		{"not a mirror pod", edit(func(p *corev1.Pod) { p.Annotations = nil }), "only mirror pods"},
		{"for another node", edit(func(p *corev1.Pod) { p.Spec.NodeName = "edge-2" }), "spec.nodeName set to itself"},
		{"no owner", edit(func(p *corev1.Pod) { p.OwnerReferences = nil }), "single owner reference"},
		{"two owners", edit(func(p *corev1.Pod) { p.OwnerReferences = append(p.OwnerReferences, p.OwnerReferences[0]) }), "single owner reference"},
		{"owned by another node", edit(func(p *corev1.Pod) { p.OwnerReferences[0].Name = "edge-2" }), "owner reference set to itself"},
		{"not controller", edit(func(p *corev1.Pod) { p.OwnerReferences[0].Controller = nil }), "controller owner reference"},
		{"blockOwnerDeletion", edit(func(p *corev1.Pod) { p.OwnerReferences[0].BlockOwnerDeletion = ptr.To(true) }), "blockOwnerDeletion"},
		{"forged node UID", edit(func(p *corev1.Pod) { p.OwnerReferences[0].UID = "x" }), "UID"},
		{"service account", edit(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "admin" }), "serviceaccounts"},
		{"secret volume", mirror(secretVol("s")), "secrets"},
		{"configmap volume", mirror(configMapVol("c")), "configmaps"},
		{"token volume", mirror(tokenVol("", nil)), "configmaps"},
		{"claim", mirror(volume(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}})), "persistentvolumeclaims"},
		{"CSI", mirror(volume(corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d"}})), "csidrivers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.MirrorPod("edge-1", tt.pod)
			if tt.want == "" {
				wantRule(t, err, "")
				return
			}
			wantRule(t, err, RuleMirrorPod)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestTokenRequest(t *testing.T) {
	a := newAuthorizer(t, nil)
	web := pod("web", "edge-1", tokenVol("", ptr.To[int64](3607)), tokenVol("vault", nil))
	ref := &authv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "web", UID: "uid-web"}
	req := func(f func(*authv1.TokenRequestSpec)) *authv1.TokenRequest {
		tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{BoundObjectRef: ref.DeepCopy()}}
		if f != nil {
			f(&tr.Spec)
		}
		return tr
	}
	other := pod("web", "edge-2", tokenVol("", nil))
	tests := []struct {
		name    string
		sa      string
		tr      *authv1.TokenRequest
		pod     *corev1.Pod
		want    Rule
		wantExp int64
	}{
		{"kube-api-access", "default", req(nil), web, "", 3607},
		{"shorter than the volume", "default", req(func(s *authv1.TokenRequestSpec) { s.ExpirationSeconds = ptr.To[int64](600) }), web, "", 600},
		{"vault audience", "default", req(func(s *authv1.TokenRequestSpec) { s.Audiences = []string{"vault"} }), web, "", 3600},
		{"no binding", "default", req(func(s *authv1.TokenRequestSpec) { s.BoundObjectRef = nil }), web, RuleServiceAccountToken, 0},
		{"bound to a secret", "default", req(func(s *authv1.TokenRequestSpec) { s.BoundObjectRef.Kind = "Secret" }), web, RuleServiceAccountToken, 0},
		{"no uid", "default", req(func(s *authv1.TokenRequestSpec) { s.BoundObjectRef.UID = "" }), web, RuleServiceAccountToken, 0},
		{"stale uid", "default", req(func(s *authv1.TokenRequestSpec) { s.BoundObjectRef.UID = "old" }), web, RuleServiceAccountToken, 0},
		{"pod gone", "default", req(nil), nil, RuleServiceAccountToken, 0},
		{"pod on another node", "default", req(func(s *authv1.TokenRequestSpec) { s.BoundObjectRef.UID = other.UID }), other, RuleServiceAccountToken, 0},
		{"another service account", "admin", req(nil), web, RuleServiceAccountToken, 0},
		{"unmounted audience", "default", req(func(s *authv1.TokenRequestSpec) { s.Audiences = []string{"kafka"} }), web, RuleServiceAccountToken, 0},
		{"two audiences", "default", req(func(s *authv1.TokenRequestSpec) { s.Audiences = []string{"", "vault"} }), web, RuleServiceAccountToken, 0},
		{"a year", "default", req(func(s *authv1.TokenRequestSpec) { s.ExpirationSeconds = ptr.To[int64](365 * 86400) }), web, RuleServiceAccountToken, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantRule(t, a.TokenRequest("edge-1", "default", tt.sa, tt.tr, tt.pod), tt.want)
			if tt.wantExp != 0 && ptr.Deref(tt.tr.Spec.ExpirationSeconds, 0) != tt.wantExp {
				t.Errorf("expirationSeconds = %v, want %d", tt.tr.Spec.ExpirationSeconds, tt.wantExp)
			}
		})
	}
}

func TestEvent(t *testing.T) {
	a := newAuthorizer(t, nil)
	web := pod("web", "edge-1")
	other := pod("other", "edge-2")
	ev := func(ns, kind, objNS, name string, uid types.UID) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "e"},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: objNS, Name: name, UID: uid}}
	}
	tests := []struct {
		name string
		ev   *corev1.Event
		pod  *corev1.Pod
		want Rule
	}{
		{"own node", ev("default", "Node", "", "edge-1", ""), nil, ""},
		{"own pod", ev("default", "Pod", "default", "web", "uid-web"), web, ""},
		{"other node", ev("default", "Node", "", "edge-2", ""), nil, RuleEvent},
		{"own node in another namespace", ev("kube-system", "Node", "", "edge-1", ""), nil, RuleEvent},
		{"other node's pod", ev("default", "Pod", "default", "other", ""), other, RuleEvent},
		{"gone pod", ev("default", "Pod", "default", "web", ""), nil, RuleEvent},
		{"earlier pod", ev("default", "Pod", "default", "web", "old"), web, RuleEvent},
		{"pod in another namespace", ev("kube-system", "Pod", "default", "web", ""), web, RuleEvent},
		{"service account", ev("default", "ServiceAccount", "default", "default", ""), nil, RuleEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRule(t, a.Event("edge-1", tt.ev, tt.pod), tt.want) })
	}
}

func TestRefusalsCountedByRule(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := newAuthorizer(t, reg)
	_ = a.OwnNode("edge-1", "edge-2")
	_ = a.MayRead("edge-1", KindSecret, "kubeedge", "casecret")
	_ = a.MayRead("edge-1", KindSecret, "kubeedge", "tokensecret")
	if got := testutil.ToFloat64(a.refusals.WithLabelValues(string(RuleReferenced))); got != 2 {
		t.Errorf("referenced-object refusals = %v, want 2", got)
	}
	if got := testutil.ToFloat64(a.refusals.WithLabelValues(string(RuleOwnNode))); got != 1 {
		t.Errorf("own-node refusals = %v, want 1", got)
	}
	// A second authorizer on the same registry shares the counter instead of failing.
	b := newAuthorizer(t, reg)
	if b.refusals != a.refusals {
		t.Error("second authorizer did not share the registered counter")
	}
}

func TestPodReferences(t *testing.T) {
	p := pod("p", "n", configMapVol("a"), configMapVol("a"), secretVol("s1"), tokenVol("", nil), func(p *corev1.Pod) {
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "s0"}}
		p.Spec.InitContainers = []corev1.Container{{Name: "i", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}}}}}}
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debug", Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s2"}}}}}}}}
		p.Spec.Volumes = append(p.Spec.Volumes,
			corev1.Volume{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d", NodePublishSecretRef: &corev1.LocalObjectReference{Name: "s3"}}}},
			corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
			corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}})
	})
	r := PodReferences(p)
	if !slices.Equal(r.ConfigMaps, []string{"a", "b", "kube-root-ca.crt"}) || !slices.Equal(r.Secrets, []string{"s0", "s1", "s2", "s3"}) ||
		!slices.Equal(r.PVCs, []string{"data", "p-scratch"}) {
		t.Errorf("references = %+v", r)
	}
}
