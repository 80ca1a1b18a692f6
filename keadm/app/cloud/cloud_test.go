package cloud

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	extfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
)

// fakeCluster is an API server that answers SelfSubjectAccessReviews with allowed.
func fakeCluster(allowed bool, objs ...runtime.Object) *fake.Clientset {
	kube := fake.NewClientset(objs...)
	kube.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = allowed
		return true, r, nil
	})
	return kube
}

func testEnv(kube *fake.Clientset) env {
	return env{
		newClients: func(string) (*clients, error) {
			return &clients{kube: kube, ext: extfake.NewClientset(), host: "https://fake:6443", kubeconfig: "/fake/kubeconfig"}, nil
		},
		systemdBooted: func() bool { return false },
		detectIP:      func() (net.IP, error) { return net.ParseIP("192.0.2.7"), nil },
		stopGrace:     time.Second,
	}
}

// fakeCloudCore is an executable that answers --version like cloudcore.
func fakeCloudCore(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cloudcore")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho cloudcore v0.0.0-test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runInit runs `init` with free ports and the fake binary unless args say otherwise.
func runInit(t *testing.T, e env, root string, args ...string) (string, error) {
	t.Helper()
	layout := &paths.Layout{Root: root}
	cmd := newInitCommand(layout, e)
	base := []string{
		"--cloudcore-binary", fakeCloudCore(t),
		"--websocket-port", strconv.Itoa(freePort(t)),
		"--https-port", strconv.Itoa(freePort(t)),
		"--monitor-address", "127.0.0.1:" + strconv.Itoa(freePort(t)),
		"--no-systemd",
	}
	// Later flags win, so args override the defaults above.
	cmd.SetArgs(append(base, args...))
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Errorf("%s changed: has %v", dir, entries)
	}
}

func TestInitFlagValidation(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--advertise-address", "edge.example.com"}, `--advertise-address "edge.example.com" is not an IP address`},
		{[]string{"--advertise-address", "0.0.0.0"}, "is a wildcard"},
		{[]string{"--advertise-address", "10.0.0.1,bogus"}, `"bogus" is not an IP address`},
		{[]string{"--domainname", "Not_A_Name"}, `--domainname "Not_A_Name" is not a DNS name`},
		{[]string{"--websocket-port", "0"}, "--websocket-port 0 is out of range"},
		{[]string{"--https-port", "70000"}, "--https-port 70000 is out of range"},
		{[]string{"--websocket-port", "10000", "--https-port", "10000"}, "both 10000"},
		{[]string{"--monitor-address", "localhost"}, `--monitor-address "localhost" is not IP:port`},
		{[]string{"--timeout", "0s"}, "--timeout 0s must be positive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			root := t.TempDir()
			_, err := runInit(t, testEnv(fakeCluster(true)), root, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
			assertEmptyDir(t, root)
		})
	}

	t.Run("no address and none detectable", func(t *testing.T) {
		e := testEnv(fakeCluster(true))
		e.detectIP = func() (net.IP, error) { return nil, os.ErrNotExist }
		_, err := runInit(t, e, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "--advertise-address is required") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestPreflightFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	closed := freePort(t) // nothing listens there
	unreachable := filepath.Join(t.TempDir(), "kubeconfig")
	writeKubeconfig(t, unreachable, "https://127.0.0.1:"+strconv.Itoa(closed))

	real := testEnv(nil)
	real.newClients = loadClients

	tests := []struct {
		name    string
		env     env
		prepare func(root string)
		args    []string
		want    []string
	}{
		{name: "websocket port busy", env: testEnv(fakeCluster(true)), args: []string{"--websocket-port", busyPort},
			want: []string{"preflight: port " + busyPort + " (websocket) is in use", "--websocket-port"}},
		{name: "https port busy", env: testEnv(fakeCluster(true)), args: []string{"--https-port", busyPort},
			want: []string{"port " + busyPort + " (https) is in use", "--https-port"}},
		{name: "kubeconfig missing", env: real, args: []string{"--kube-config", "/nonexistent/kubeconfig"},
			want: []string{"preflight: kubeconfig /nonexistent/kubeconfig does not exist", "--kube-config"}},
		{name: "API server unreachable", env: real, args: []string{"--kube-config", unreachable},
			want: []string{"preflight: API server https://127.0.0.1:" + strconv.Itoa(closed), "is unreachable", "connection refused"}},
		{name: "no permissions", env: testEnv(fakeCluster(false)),
			want: []string{"may not create customresourcedefinitions.apiextensions.k8s.io, patch customresourcedefinitions.apiextensions.k8s.io, create namespaces, create secrets in namespace kubeedge", "cluster-admin"}},
		{name: "binary missing", env: testEnv(fakeCluster(true)), args: []string{"--cloudcore-binary", "/nonexistent/cloudcore"},
			want: []string{"cloudcore binary /nonexistent/cloudcore is missing", "--cloudcore-binary"}},
		{name: "binary is not cloudcore", env: testEnv(fakeCluster(true)), args: []string{"--cloudcore-binary", "/bin/true"},
			want: []string{"/bin/true is not a working cloudcore"}},
		{name: "already installed", env: testEnv(fakeCluster(true)),
			prepare: func(root string) {
				cfg := paths.Layout{Root: root}.CloudCoreConfig()
				if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cfg, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"cloudcore is already installed under", "cloudcore.yaml exists", "keadm reset cloud", "--force"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.prepare != nil {
				tt.prepare(root)
			}
			before := listTree(t, root)
			out, err := runInit(t, tt.env, root, tt.args...)
			if err == nil {
				t.Fatalf("init succeeded:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if after := listTree(t, root); !slices.Equal(before, after) {
				t.Errorf("preflight failure changed %s: %v -> %v", root, before, after)
			}
		})
	}
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + server + `", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		out = append(out, p)
		return err
	})
	return out
}

func TestDryRun(t *testing.T) {
	root := t.TempDir()
	out, err := runInit(t, testEnv(fakeCluster(true)), root, "--dry-run", "--advertise-address", "192.0.2.1,192.0.2.2", "--domainname", "cloud.example.com")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	wantPrefixes := []string{
		"[dry-run] checks run for real; nothing is changed",
		"[preflight] ok: cloudcore v0.0.0-test (",
		"[crds] would apply 4 CRDs (devicemodels.devices.kubeedge.io, devices.devices.kubeedge.io, clusterobjectsyncs.reliablesyncs.kubeedge.io, objectsyncs.reliablesyncs.kubeedge.io)",
		"[namespace] would create namespace kubeedge",
		"[config] would write " + filepath.Join(root, "etc/kubeedge/config/cloudcore.yaml") + ": server certificate SANs 192.0.2.1, 192.0.2.2, cloud.example.com,",
		"[install] would copy ",
		"[start] would start " + filepath.Join(root, "usr/local/bin/cloudcore") + " --config " + filepath.Join(root, "etc/kubeedge/config/cloudcore.yaml") + " detached, log " + filepath.Join(root, "var/log/kubeedge/cloudcore.log"),
		"[wait] would wait up to 2m0s until ports",
		"dry run done: nothing was changed",
	}
	if len(lines) != len(wantPrefixes) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(wantPrefixes), out)
	}
	for i, w := range wantPrefixes {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %q\nwant prefix %q", i, lines[i], w)
		}
	}
	assertEmptyDir(t, root)

	// The namespace may already be there.
	out, err = runInit(t, testEnv(fakeCluster(true, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeedge"}})), root, "--dry-run")
	if err != nil || !strings.Contains(out, "[namespace] kubeedge exists\n") || !strings.Contains(out, "192.0.2.7 (detected; set with --advertise-address)") {
		t.Errorf("dry run with namespace and detected address: %v\n%s", err, out)
	}
}

// The config init writes is what cloudcore loads: every path under the root, the flags applied.
func TestCloudCoreConfig(t *testing.T) {
	root := t.TempDir()
	l := paths.Layout{Root: root}
	o := defaultInitOptions()
	o.wsPort, o.httpsPort, o.monitorAddress, o.domainNames = 20000, 20002, "", []string{"cloud.example.com"}
	cfg := cloudCoreConfig(l, o, "/etc/kubernetes/admin.conf", []string{"192.0.2.1"})
	r := &initRunner{opts: o, layout: l, core: cloudcore(l), out: &bytes.Buffer{}}
	if err := r.writeConfig(cfg, false); err != nil {
		t.Fatal(err)
	}
	got, err := v1alpha1.Load(l.CloudCoreConfig())
	if err != nil {
		t.Fatalf("cloudcore cannot load what init wrote: %v", err)
	}
	hub := got.Modules.CloudHub
	checks := map[string][2]any{
		"kubeConfig":       {got.KubeAPIConfig.KubeConfig, "/etc/kubernetes/admin.conf"},
		"advertiseAddress": {strings.Join(hub.AdvertiseAddress, ","), "192.0.2.1"},
		"dnsNames":         {strings.Join(hub.DNSNames, ","), "cloud.example.com"},
		"tlsCAFile":        {hub.TLSCAFile, filepath.Join(root, "etc/kubeedge/ca/rootCA.crt")},
		"tlsCAKeyFile":     {hub.TLSCAKeyFile, filepath.Join(root, "etc/kubeedge/ca/rootCA.key")},
		"tlsCertFile":      {hub.TLSCertFile, filepath.Join(root, "etc/kubeedge/certs/server.crt")},
		"tlsPrivateKey":    {hub.TLSPrivateKeyFile, filepath.Join(root, "etc/kubeedge/certs/server.key")},
		"websocket":        {hub.WebSocket.Port, int32(20000)},
		"https":            {hub.HTTPS.Port, int32(20002)},
		"monitor":          {got.CommonConfig.MonitorServer.BindAddress, ""},
		"unixsocket":       {hub.UnixSocket.Address, "unix://" + filepath.Join(root, "var/lib/kubeedge/kubeedge.sock")},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if st, err := os.Stat(l.CADir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("CA dir: %v, %v; want mode 0700", st, err)
	}
}

func TestEmbeddedCRDs(t *testing.T) {
	list, err := embeddedCRDs()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../../crds/*.yaml")
	if len(list) != len(files) || len(list) == 0 {
		t.Fatalf("embedded %d CRDs, crds/ has %d files", len(list), len(files))
	}
}

func TestUnitFile(t *testing.T) {
	want, err := os.ReadFile("../../../build/tools/cloudcore.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unitFile, want) {
		t.Fatal("keadm/app/cloud/cloudcore.service differs from build/tools/cloudcore.service: copy it over")
	}
	for _, line := range []string{"Type=simple", "ExecStart=/usr/local/bin/cloudcore", "Restart=always", "RestartSec=10", "WantedBy=multi-user.target"} {
		if !bytes.Contains(want, []byte("\n"+line+"\n")) {
			t.Errorf("unit lacks %s (spec §16.4)", line)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install Debian package systemd (hack/install-deps.sh)")
	}
	// verify insists that ExecStart exists on this host; point it at a binary that does, keep the rest.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "cloudcore.service")
	body := strings.Replace(string(want), "ExecStart=/usr/local/bin/cloudcore", "ExecStart="+self, 1)
	if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestGetToken(t *testing.T) {
	var out bytes.Buffer
	err := runGetToken(context.Background(), testEnv(fakeCluster(true)), "", &out)
	if err == nil || !strings.Contains(err.Error(), "no join token in Secret kubeedge/tokensecret") || !strings.Contains(err.Error(), "keadm init") {
		t.Errorf("without the Secret: %v", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubeedge", Name: "tokensecret"}, Data: map[string][]byte{"tokendata": []byte("a.b.c.d")}}
	out.Reset()
	if err := runGetToken(context.Background(), testEnv(fakeCluster(true, secret)), "", &out); err != nil || out.String() != "a.b.c.d\n" {
		t.Errorf("got %q, %v", out.String(), err)
	}
}

// installFake lays out what init leaves behind, with bin copied as the cloudcore binary, and starts it with
// args; it returns the running command.
func installFake(t *testing.T, l paths.Layout, bin string, args ...string) *exec.Cmd {
	t.Helper()
	d := cloudcore(l)
	for _, dir := range []string{l.CADir(), l.CertsDir(), l.LogDir(), l.RunDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{d.Config(), filepath.Join(l.CADir(), "rootCA.crt"), d.LogFile()} {
		if err := daemon.WriteFileAtomic(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.InstallBinary(bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.Binary(), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := daemon.WriteFileAtomic(d.PIDFile(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func runResetCmd(t *testing.T, e env, root, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newResetCommand(&paths.Layout{Root: root}, e)
	cmd.SetArgs(args)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestReset(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	root := t.TempDir()
	l := paths.Layout{Root: root}
	cmd := installFake(t, l, sleep, "60")
	e := testEnv(fakeCluster(true))

	out, err := runResetCmd(t, e, root, "n\n")
	if err == nil || !strings.Contains(err.Error(), "aborted") || !daemon.Alive(cmd.Process.Pid) || !fileExists(l.CloudCoreConfig()) {
		t.Fatalf("answering n: %v, still running %v\n%s", err, daemon.Alive(cmd.Process.Pid), out)
	}
	if !strings.Contains(out, "Continue? [y/N]") {
		t.Errorf("no prompt:\n%s", out)
	}

	out, err = runResetCmd(t, e, root, "y\n")
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	if daemon.Alive(cmd.Process.Pid) {
		t.Error("cloudcore still runs")
	}
	if !strings.Contains(out, "[stop] stopped cloudcore (pid "+strconv.Itoa(cmd.Process.Pid)+")") || !strings.Contains(out, "[remove] removed "+l.CloudCoreConfig()) {
		t.Errorf("output:\n%s", out)
	}
	// System directories such as usr/local/bin stay, empty; the kubeedge ones are gone.
	for _, p := range listTree(t, root) {
		if st, err := os.Stat(p); err != nil || !st.IsDir() || strings.Contains(p, "kubeedge") {
			t.Errorf("left behind: %s", p)
		}
	}

	out, err = runResetCmd(t, e, root, "", "--force")
	if err != nil || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second reset: %v\n%s", err, out)
	}
}

// A cloudcore that ignores SIGTERM is killed once the grace period is over.
func TestResetKillsAfterGrace(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	root := t.TempDir()
	l := paths.Layout{Root: root}
	// read blocks on a pipe nobody writes to: no child process to leave behind.
	d := cloudcore(l)
	if _, err := d.InstallBinary(sh); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.Binary(), "-c", `trap "" TERM; read x`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(200 * time.Millisecond) // let the trap be set
	e := testEnv(fakeCluster(true))
	e.stopGrace = 300 * time.Millisecond
	out, err := runResetCmd(t, e, root, "", "--force")
	if err != nil || daemon.Alive(cmd.Process.Pid) {
		t.Fatalf("reset: %v, alive %v\n%s", err, daemon.Alive(cmd.Process.Pid), out)
	}
}

func TestResetPurge(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeedge"}}
	kube := fakeCluster(true, ns)
	out, err := runResetCmd(t, testEnv(kube), t.TempDir(), "", "--force", "--purge-cluster")
	if err != nil || !strings.Contains(out, "[cluster] deleting namespace kubeedge") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	if _, err := kube.CoreV1().Namespaces().Get(context.Background(), "kubeedge", metav1.GetOptions{}); err == nil {
		t.Error("namespace kubeedge still there")
	}
	out, err = runResetCmd(t, testEnv(kube), t.TempDir(), "", "--force", "--purge-cluster")
	if err != nil || !strings.Contains(out, "namespace kubeedge does not exist") {
		t.Errorf("second purge: %v\n%s", err, out)
	}
}
