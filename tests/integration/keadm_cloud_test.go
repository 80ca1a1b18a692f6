//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	cloudcfg "github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/tests/framework"
)

// keadm init / gettoken / reset cloud as a user runs them: real binaries, a real API server, a detached
// cloudcore under a private --root.
func TestKeadmCloud(t *testing.T) {
	cp := framework.StartControlPlane(t)
	bin := keadmCloudBuild(t)

	t.Run("preflight failures", func(t *testing.T) {
		keadmCloudPreflightFailures(t, cp, bin)
	})

	root := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() { keadmCloudKillLeftovers(root) })
	ws, https := framework.FreePort(t), framework.FreePort(t)
	initArgs := []string{"init", "--root", root, "--kube-config", cp.Kubeconfig, "--advertise-address", "127.0.0.1",
		"--websocket-port", keadmCloudItoa(ws), "--https-port", keadmCloudItoa(https), "--monitor-address", "127.0.0.1:" + keadmCloudItoa(framework.FreePort(t)),
		"--no-systemd", "--cloudcore-binary", filepath.Join(bin, "cloudcore")}

	out, errOut, err := keadmCloudRun(t, bin, initArgs...)
	if err != nil {
		t.Fatalf("keadm init: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	t.Logf("keadm init:\n%s", out)
	for _, want := range []string{"[preflight] ok:", "[crds] applied and Established", "[namespace]", "[config] wrote", "[install] copied",
		"[start] cloudcore runs detached", "[wait] cloudcore ready",
		"keadm join --cloudcore-ipport=127.0.0.1:" + keadmCloudItoa(ws) + " --token=<token> --certport=" + keadmCloudItoa(https)} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q", want)
		}
	}

	pid := keadmCloudPID(t, root)
	if pid == 0 {
		t.Fatal("cloudcore is not running after init")
	}
	for _, name := range []string{"devices.devices.kubeedge.io", "devicemodels.devices.kubeedge.io",
		"objectsyncs.reliablesyncs.kubeedge.io", "clusterobjectsyncs.reliablesyncs.kubeedge.io"} {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := cp.Client.Get(context.Background(), types.NamespacedName{Name: name}, &crd); err != nil {
			t.Fatalf("CRD %s: %v", name, err)
		}
		established, byKeadm := false, false
		for _, c := range crd.Status.Conditions {
			established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
		}
		for _, m := range crd.ManagedFields {
			byKeadm = byKeadm || m.Manager == "keadm"
		}
		if !established || !byKeadm {
			t.Errorf("CRD %s: Established %v, applied by keadm %v", name, established, byKeadm)
		}
	}
	token := framework.Token(t, cp)

	t.Run("gettoken", func(t *testing.T) {
		out, errOut, err := keadmCloudRun(t, bin, "gettoken", "--kube-config", cp.Kubeconfig)
		if err != nil {
			t.Fatalf("keadm gettoken: %v\n%s", err, errOut)
		}
		got := strings.TrimSpace(out)
		if got != token || len(strings.Split(got, ".")) != 4 {
			t.Errorf("gettoken printed %q, want the 4-part token %q", got, token)
		}
	})

	t.Run("init again refuses", func(t *testing.T) {
		_, errOut, err := keadmCloudRun(t, bin, initArgs...)
		keadmCloudOneLineFailure(t, err, errOut, "cloudcore is already installed under "+root, "--force")
		if keadmCloudPID(t, root) != pid {
			t.Error("the refused init touched the running cloudcore")
		}
	})

	t.Run("init --force replaces", func(t *testing.T) {
		out, errOut, err := keadmCloudRun(t, bin, append(initArgs, "--force")...)
		if err != nil {
			t.Fatalf("keadm init --force: %v\n%s%s", err, out, errOut)
		}
		if !strings.Contains(out, "[replace] replacing the existing install") || !strings.Contains(out, "[wait] cloudcore ready") {
			t.Errorf("init --force output:\n%s", out)
		}
		newPID := keadmCloudPID(t, root)
		if newPID == 0 || newPID == pid || framework.ProcessAlive(pid) {
			t.Errorf("after --force: old pid %d alive %v, new pid %d", pid, framework.ProcessAlive(pid), newPID)
		}
		pid = newPID
	})

	t.Run("reset", func(t *testing.T) {
		out, errOut, err := keadmCloudRun(t, bin, "reset", "cloud", "--root", root, "--force")
		if err != nil {
			t.Fatalf("keadm reset cloud: %v\n%s%s", err, out, errOut)
		}
		t.Logf("keadm reset cloud:\n%s", out)
		if framework.ProcessAlive(pid) {
			t.Errorf("cloudcore (pid %d) still runs after reset", pid)
		}
		for _, p := range []string{"etc/kubeedge", "usr/local/bin/cloudcore", "var/log/kubeedge", "var/run/kubeedge"} {
			if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left after reset: %v", p, err)
			}
		}
		out, errOut, err = keadmCloudRun(t, bin, "reset", "cloud", "--root", root, "--force")
		if err != nil || !strings.Contains(out, "nothing to remove") {
			t.Errorf("second reset: %v\n%s%s", err, out, errOut)
		}
	})
}

// Each preflight failure is a non-zero exit with one line saying what to fix, and leaves nothing behind.
func keadmCloudPreflightFailures(t *testing.T, cp *framework.ControlPlane, bin string) {
	busy, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	unreachable := filepath.Join(t.TempDir(), "unreachable.kubeconfig")
	closedPort := framework.FreePort(t)
	keadmCloudWriteKubeconfig(t, unreachable, "https://127.0.0.1:"+keadmCloudItoa(closedPort), nil, "x")
	nobody := keadmCloudUnprivilegedKubeconfig(t, cp)

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"port busy", []string{"--websocket-port", keadmCloudItoa(busyPort)}, []string{"port " + keadmCloudItoa(busyPort) + " (websocket) is in use", "--websocket-port"}},
		{"kubeconfig missing", []string{"--kube-config", "/nonexistent/kubeconfig"}, []string{"kubeconfig /nonexistent/kubeconfig does not exist", "--kube-config"}},
		{"API server unreachable", []string{"--kube-config", unreachable}, []string{"API server https://127.0.0.1:" + keadmCloudItoa(closedPort), "is unreachable", "connection refused"}},
		{"no permissions", []string{"--kube-config", nobody}, []string{"may not create customresourcedefinitions.apiextensions.k8s.io", "cluster-admin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			args := append([]string{"init", "--root", root, "--kube-config", cp.Kubeconfig, "--advertise-address", "127.0.0.1",
				"--websocket-port", keadmCloudItoa(framework.FreePort(t)), "--https-port", keadmCloudItoa(framework.FreePort(t)), "--monitor-address", "",
				"--no-systemd", "--cloudcore-binary", filepath.Join(bin, "cloudcore")}, tt.args...)
			_, errOut, err := keadmCloudRun(t, bin, args...)
			keadmCloudOneLineFailure(t, err, errOut, append([]string{"keadm: error: preflight: "}, tt.want...)...)
			if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed preflight created %s", root)
			}
		})
	}
}

// The in-cluster manifests are accepted by a real API server, and their RBAC is enough for cloudcore.
func TestKeadmCloudManifests(t *testing.T) {
	cp := framework.StartControlPlane(t)
	ctx := context.Background()
	dir := filepath.Join(framework.RepoRoot(), "build", "manifests", "cloudcore")
	// A server-side dry run creates nothing, so the namespaced objects would not find their namespace.
	if err := cp.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeedge"}}); err != nil {
		t.Fatal(err)
	}
	out, err := cp.Kubectl(ctx, "apply", "--dry-run=server", "-f", dir)
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, out)
	}
	for _, want := range []string{"namespace/kubeedge", "serviceaccount/cloudcore", "clusterrole.rbac.authorization.k8s.io/cloudcore",
		"clusterrolebinding.rbac.authorization.k8s.io/cloudcore", "role.rbac.authorization.k8s.io/cloudcore", "rolebinding.rbac.authorization.k8s.io/cloudcore",
		"configmap/cloudcore", "deployment.apps/cloudcore", "service/cloudcore"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, out)
		}
	}

	// The ConfigMap's cloudcore.yaml loads as it is.
	var cm corev1.ConfigMap
	data, err := os.ReadFile(filepath.Join(dir, "03-configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "cloudcore.yaml")
	writeFile(t, cfgPath, cm.Data["cloudcore.yaml"])
	if _, err := cloudcfg.Load(cfgPath); err != nil {
		t.Errorf("the ConfigMap's cloudcore.yaml does not load: %v", err)
	}

	if out, err := cp.Kubectl(ctx, "apply", "-f", dir); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	// What cloudcore does with the API (spec §5-§8); and no Secret writes outside its namespace.
	const sa = "system:serviceaccount:kubeedge:cloudcore"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", "nodes"}, "yes"}, {[]string{"create", "nodes"}, "yes"}, {[]string{"patch", "nodes", "--subresource=status"}, "yes"},
		{[]string{"watch", "pods", "-A"}, "yes"}, {[]string{"delete", "pods", "-A"}, "yes"}, {[]string{"update", "pods", "--subresource=status", "-A"}, "yes"},
		{[]string{"watch", "configmaps", "-A"}, "yes"}, {[]string{"watch", "secrets", "-A"}, "yes"},
		{[]string{"create", "events", "-A"}, "yes"}, {[]string{"patch", "events.events.k8s.io", "-A"}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io", "-n", "kube-node-lease"}, "yes"},
		{[]string{"create", "serviceaccounts", "--subresource=token", "-A"}, "yes"},
		{[]string{"patch", "devices.devices.kubeedge.io", "-A"}, "yes"}, {[]string{"update", "devices.devices.kubeedge.io", "--subresource=status", "-A"}, "yes"},
		{[]string{"watch", "devicemodels.devices.kubeedge.io", "-A"}, "yes"},
		{[]string{"create", "objectsyncs.reliablesyncs.kubeedge.io", "-A"}, "yes"}, {[]string{"update", "objectsyncs.reliablesyncs.kubeedge.io", "--subresource=status", "-A"}, "yes"},
		{[]string{"delete", "clusterobjectsyncs.reliablesyncs.kubeedge.io"}, "yes"}, {[]string{"update", "clusterobjectsyncs.reliablesyncs.kubeedge.io", "--subresource=status"}, "yes"},
		{[]string{"list", "customresourcedefinitions.apiextensions.k8s.io"}, "yes"},
		{[]string{"update", "secrets", "-n", "kubeedge"}, "yes"},
		{[]string{"update", "secrets", "-n", "default"}, "no"},
		{[]string{"create", "pods", "--subresource=eviction", "-A"}, "no"},
		{[]string{"create", "customresourcedefinitions.apiextensions.k8s.io"}, "no"},
	} {
		out, _ := cp.Kubectl(ctx, append([]string{"auth", "can-i", "--as", sa}, c.args...)...) // "no" exits 1
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("cloudcore can-i %v: %q, want %q", c.args, got, c.want)
		}
	}

	// cloudcore with the service account's rights alone starts and publishes the join token.
	kubeconfig := keadmCloudTokenKubeconfig(t, cp, "kubeedge", "cloudcore")
	cfg := framework.NewCloudConfig(t, cp, t.TempDir())
	cfg.KubeAPIConfig.KubeConfig = kubeconfig
	framework.StartCloud(t, cfg)
	framework.Token(t, cp)
}

// keadmCloudBuild builds keadm and cloudcore into one directory, as a release lays them out.
func keadmCloudBuild(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"keadm", "cloudcore"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/tether-edge/tether/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

func keadmCloudRun(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "keadm"), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	// The detached cloudcore inherits nothing that would keep Wait from returning: its output goes to its log.
	err = cmd.Run()
	return o.String(), e.String(), err
}

func keadmCloudOneLineFailure(t *testing.T, err error, stderr string, want ...string) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("want a non-zero exit, got %v; stderr:\n%s", err, stderr)
	}
	line := strings.TrimSuffix(stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Errorf("stderr is not one line:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("stderr %q lacks %q", line, w)
		}
	}
}

// keadmCloudPID is the PID in the file init wrote, if that process runs our cloudcore; else 0.
func keadmCloudPID(t *testing.T, root string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "var/run/kubeedge/cloudcore.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if pid == 0 || !bytes.HasPrefix(cmdline, []byte(filepath.Join(root, "usr/local/bin/cloudcore")+"\x00")) || !framework.ProcessAlive(pid) {
		return 0
	}
	return pid
}

// keadmCloudKillLeftovers stops a cloudcore a failed test left running.
func keadmCloudKillLeftovers(root string) {
	b, err := os.ReadFile(filepath.Join(root, "var/run/kubeedge/cloudcore.pid"))
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if pid > 0 && bytes.HasPrefix(cmdline, []byte(filepath.Join(root, "usr/local/bin/cloudcore")+"\x00")) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func keadmCloudWriteKubeconfig(t *testing.T, path, server string, caData []byte, token string) {
	t.Helper()
	cluster := &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caData, InsecureSkipTLSVerify: caData == nil}
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"c": cluster},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"u": {Token: token}},
		Contexts:       map[string]*clientcmdapi.Context{"c": {Cluster: "c", AuthInfo: "u"}},
		CurrentContext: "c",
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		t.Fatal(err)
	}
}

// keadmCloudTokenKubeconfig is a kubeconfig for a service account, which has exactly the rights RBAC gives it.
func keadmCloudTokenKubeconfig(t *testing.T, cp *framework.ControlPlane, namespace, name string) string {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	ttl := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", namespace, name, err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	keadmCloudWriteKubeconfig(t, path, cp.Config.Host, cp.Config.CAData, tr.Status.Token)
	return path
}

// keadmCloudUnprivilegedKubeconfig is a user the API server knows and RBAC grants nothing.
func keadmCloudUnprivilegedKubeconfig(t *testing.T, cp *framework.ControlPlane) string {
	return keadmCloudTokenKubeconfig(t, cp, "default", "keadm-nobody")
}

func keadmCloudItoa[T ~int | ~int32](n T) string { return strconv.Itoa(int(n)) }
