//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/tests/framework"
)

const testImage = "docker.io/tether/testapp:v1"

type podEnv struct {
	cp    *framework.ControlPlane
	ctd   *framework.Containerd
	cloud *framework.Cloud
	edge  *framework.Edge
}

// startPodEnv runs the whole system: API server, cloudcore, one edge node on a private containerd.
func startPodEnv(t *testing.T) (*podEnv, func() *framework.Edge) {
	t.Helper()
	cp := framework.StartControlPlane(t)
	ctd := framework.StartContainerd(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	// No kube-controller-manager here: create what it would.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}}
	if err := cp.Client.Create(context.Background(), sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cfg := framework.NewEdgeNodeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"), ctd)
	start := func() *framework.Edge { return framework.StartEdgeNode(t, cfg) }
	env := &podEnv{cp: cp, ctd: ctd, cloud: cloud, edge: start()}
	waitNodeReady(t, cp)
	return env, start
}

func waitNodeReady(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	framework.Eventually(t, 60*time.Second, "node "+node+" Ready", func() bool {
		var n corev1.Node
		if err := cp.Client.Get(context.Background(), client.ObjectKey{Name: node}, &n); err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	})
}

func testPod(name string, mutate func(*corev1.Pod)) *corev1.Pod {
	noToken := false
	grace := int64(2)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostNetwork:                   true,
			AutomountServiceAccountToken:  &noToken,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: testImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "POD_NAME", Value: name}},
			}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func (e *podEnv) create(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := e.cp.Client.Create(context.Background(), p); err != nil {
		t.Fatalf("creating pod %s: %v", p.Name, err)
	}
	return p
}

// waitPod waits until cond holds for the pod as the API server sees it, and returns it.
func (e *podEnv) waitPod(t *testing.T, name, what string, timeout time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	framework.Eventually(t, timeout, "pod "+name+" "+what, func() bool {
		return e.cp.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &p) == nil && cond(&p)
	})
	return &p
}

func running(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 &&
		p.Status.ContainerStatuses[0].State.Running != nil && p.Status.ContainerStatuses[0].Ready
}

// containerIDs are the runtime's running containers of a pod.
func (e *podEnv) containerIDs(t *testing.T, uid types.UID) []string {
	t.Helper()
	cs, err := e.ctd.ListContainers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		if c.Labels["io.kubernetes.pod.uid"] == string(uid) && c.State == 1 /* CONTAINER_RUNNING */ {
			ids = append(ids, c.Id)
		}
	}
	return ids
}

func TestPodRunsOnEdgeAndIsDeleted(t *testing.T) {
	framework.FailOnErrorLogs(t)
	e, _ := startPodEnv(t)
	created := time.Now()
	pod := e.create(t, testPod("hello", nil))
	p := e.waitPod(t, "hello", "Running", 60*time.Second, running)
	t.Logf("pod create -> Running in the API server: %s", time.Since(created).Round(time.Millisecond))

	cs := p.Status.ContainerStatuses[0]
	if !strings.HasPrefix(cs.ContainerID, "containerd://") || cs.RestartCount != 0 || cs.Image == "" {
		t.Errorf("container status = %+v", cs)
	}
	if p.Status.HostIP == "" || p.Status.PodIP == "" || p.Status.StartTime == nil {
		t.Errorf("pod status lacks hostIP/podIP/startTime: %+v", p.Status)
	}
	ids := e.containerIDs(t, p.UID)
	if len(ids) != 1 || "containerd://"+ids[0] != cs.ContainerID {
		t.Errorf("runtime containers = %v, API says %s", ids, cs.ContainerID)
	}
	if !processRunning(fmt.Sprintf("POD_NAME=%s", "hello")) {
		t.Error("the container's process is not visible on the host")
	}

	if err := e.cp.Client.Delete(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 60*time.Second, "pod object removed", func() bool {
		var got corev1.Pod
		return apierrors.IsNotFound(e.cp.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &got))
	})
	framework.Eventually(t, 30*time.Second, "containers removed", func() bool { return len(e.containerIDs(t, p.UID)) == 0 })
}

func TestConfigMapAndSecretVolumes(t *testing.T) {
	e, _ := startPodEnv(t)
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app-config"}, Data: map[string]string{"greeting": "hello"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app-secret"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	for _, o := range []client.Object{cm, sec} {
		if err := e.cp.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	e.create(t, testPod("with-volumes", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "app-secret"}}},
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}, {Name: "secret", MountPath: "/etc/secret"}}
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "GREETING",
			ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "greeting"}}})
	}))
	p := e.waitPod(t, "with-volumes", "Running", 60*time.Second, running)

	root := e.edgeRoot()
	volFile := func(kind, vol, key string) string {
		b, _ := os.ReadFile(filepath.Join(root, "pods", string(p.UID), "volumes", kind, vol, key))
		return string(b)
	}
	if got := volFile("kubernetes.io~configmap", "config", "greeting"); got != "hello" {
		t.Errorf("configmap volume greeting = %q, want hello", got)
	}
	if got := volFile("kubernetes.io~secret", "secret", "password"); got != "s3cret" {
		t.Errorf("secret volume password = %q, want s3cret", got)
	}

	cm.Data["greeting"] = "bonjour"
	if err := e.cp.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 60*time.Second, "configmap update reaches the volume", func() bool {
		return volFile("kubernetes.io~configmap", "config", "greeting") == "bonjour"
	})
}

func TestCrashingContainerRestartsWithBackoff(t *testing.T) {
	e, _ := startPodEnv(t)
	e.create(t, testPod("crasher", func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env,
			corev1.EnvVar{Name: "EXIT_AFTER", Value: "1"}, corev1.EnvVar{Name: "EXIT_AFTER_CODE", Value: "3"})
	}))
	p := e.waitPod(t, "crasher", "restarted", 90*time.Second, func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 3 {
		t.Errorf("lastState = %+v, want terminated with exit code 3", p.Status.ContainerStatuses[0].LastTerminationState)
	}
}

func TestBadPodSpecsGetReasonsAndOthersRun(t *testing.T) {
	e, _ := startPodEnv(t)
	e.create(t, testPod("no-image", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "docker.io/tether/missing:v0" }))
	e.create(t, testPod("no-configmap", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	}))
	e.create(t, testPod("good", nil))
	e.waitPod(t, "good", "Running", 60*time.Second, running)
	for _, name := range []string{"no-image", "no-configmap"} {
		p := e.waitPod(t, name, "waiting with a reason", 60*time.Second, func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
				p.Status.ContainerStatuses[0].State.Waiting.Reason != "" && p.Status.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating"
		})
		w := p.Status.ContainerStatuses[0].State.Waiting
		t.Logf("%s: %s: %s", name, w.Reason, w.Message)
		if w.Message == "" {
			t.Errorf("%s: waiting reason %s has no message", name, w.Reason)
		}
	}
}

// Autonomy: with cloudcore down, a restarted edgecore adopts the running containers; when the cloud returns the
// node is Ready again and nothing was recreated.
func TestEdgeRestartWhileOfflineAdoptsPods(t *testing.T) {
	e, start := startPodEnv(t)
	e.create(t, testPod("steady", nil))
	p := e.waitPod(t, "steady", "Running", 60*time.Second, running)
	before := e.containerIDs(t, p.UID)

	e.cloud.Stop()
	e.edge.Stop()
	e.edge = start()
	time.Sleep(5 * time.Second) // let edged load from SQLite and resync; any recreation would show below
	if after := e.containerIDs(t, p.UID); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("containers after an offline edgecore restart = %v, want the same %v", after, before)
	}

	e.cloud = framework.StartCloud(t, e.cloud.Config)
	waitNodeReady(t, e.cp)
	e.waitPod(t, "steady", "still Running with the same container", 30*time.Second, func(q *corev1.Pod) bool {
		return running(q) && q.Status.ContainerStatuses[0].ContainerID == p.Status.ContainerStatuses[0].ContainerID
	})
	if after := e.containerIDs(t, p.UID); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("containers after reconnect = %v, want the same %v", after, before)
	}
}

// Autonomy after a reboot: no cloud, no sandboxes; edgecore rebuilds every pod from SQLite alone.
func TestRebootWhileOfflineRecreatesPodsFromSQLite(t *testing.T) {
	e, start := startPodEnv(t)
	var uids []types.UID
	for i := range 3 {
		p := e.create(t, testPod(fmt.Sprintf("boot-%d", i), nil))
		uids = append(uids, p.UID)
	}
	for i := range 3 {
		e.waitPod(t, fmt.Sprintf("boot-%d", i), "Running", 60*time.Second, running)
	}
	e.cloud.Stop()
	e.edge.Stop()
	if err := e.ctd.RemoveAllPods(context.Background()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	e.edge = start()
	framework.Eventually(t, 60*time.Second, "all pods running again without the cloud", func() bool {
		for _, uid := range uids {
			if len(e.containerIDs(t, uid)) != 1 {
				return false
			}
		}
		return true
	})
	t.Logf("reboot recovery: %d pods running %s after edgecore start", len(uids), time.Since(began).Round(time.Millisecond))
}

func (e *podEnv) edgeRoot() string { return e.edge.Config.Modules.Edged.RootDirectory }

// processRunning looks for a process whose environment holds marker, as a person would with ps.
func processRunning(marker string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, f := range procs {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), marker) {
			return true
		}
	}
	return false
}

// A Deployment with a nodeSelector for the edge node, scheduled by the real kube-scheduler and expanded by the
// real kube-controller-manager, runs its replicas on the edge.
func TestDeploymentReplicasRunOnEdge(t *testing.T) {
	e, _ := startPodEnv(t)
	framework.StartKubeControllers(t, e.cp)
	replicas := int32(2)
	tmpl := testPod("", nil)
	tmpl.Spec.NodeName = ""
	tmpl.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	tmpl.Labels = map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
		},
	}
	dep.Spec.Template.Namespace, dep.Spec.Template.Name = "", ""
	if err := e.cp.Client.Create(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 90*time.Second, "deployment web available with 2 replicas", func() bool {
		var d appsv1.Deployment
		return e.cp.Client.Get(context.Background(), client.ObjectKeyFromObject(dep), &d) == nil && d.Status.AvailableReplicas == replicas
	})
	var pods corev1.PodList
	if err := e.cp.Client.List(context.Background(), &pods, client.InNamespace("default"), client.MatchingLabels{"app": "web"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != node || !running(&p) || len(e.containerIDs(t, p.UID)) != 1 {
			t.Errorf("pod %s: node %q, phase %s, runtime containers %v", p.Name, p.Spec.NodeName, p.Status.Phase, e.containerIDs(t, p.UID))
		}
	}
}

// TestPodForceDeletedWhileCloudDownLeavesTheEdge: a pod force-deleted while cloudcore is down (no delete event ever
// reaches the edge) is removed from the edge once cloudcore is back, from its ObjectSync record; a pod that stayed
// keeps its container.
func TestPodForceDeletedWhileCloudDownLeavesTheEdge(t *testing.T) {
	framework.FailOnErrorLogs(t, framework.AllowedError{
		Pattern: regexp.MustCompile(`"(Lost connection to cloud|Cannot connect to cloud)`),
		Reason:  "the test stops cloudcore on purpose; edgecore reports the link it lost",
	}, framework.AllowedError{
		Pattern: regexp.MustCompile(`"Failed to watch" err=".*context canceled"`),
		Reason:  "client-go's reflector reports a watch that cloudcore's own shutdown cancelled",
	})
	e, _ := startPodEnv(t)
	doomed := e.create(t, testPod("doomed", nil))
	e.create(t, testPod("stays", nil))
	d := e.waitPod(t, "doomed", "Running", 60*time.Second, running)
	s := e.waitPod(t, "stays", "Running", 60*time.Second, running)
	// The delivery of both was recorded, so a restarted cloudcore knows what the edge holds.
	framework.Eventually(t, 30*time.Second, "ObjectSync records of both pods", func() bool {
		var syncs v1alpha1.ObjectSyncList
		if err := e.cp.Client.List(context.Background(), &syncs, client.InNamespace("default")); err != nil {
			return false
		}
		n := 0
		for _, o := range syncs.Items {
			if o.Spec.ObjectKind == "Pod" && (o.Spec.ObjectName == "doomed" || o.Spec.ObjectName == "stays") {
				n++
			}
		}
		return n == 2
	})
	staysIDs := e.containerIDs(t, s.UID)

	e.cloud.Stop()
	if err := e.cp.Client.Delete(context.Background(), doomed, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	e.cloud = framework.StartCloud(t, e.cloud.Config)
	framework.Eventually(t, 60*time.Second, "the force-deleted pod's containers removed from the edge", func() bool {
		return len(e.containerIDs(t, d.UID)) == 0
	})
	if got := e.containerIDs(t, s.UID); fmt.Sprint(got) != fmt.Sprint(staysIDs) {
		t.Errorf("containers of the pod that stayed = %v, want the same %v", got, staysIDs)
	}
}
