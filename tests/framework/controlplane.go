// Package framework starts the real Kubernetes control plane (kube-apiserver + etcd built by
// hack/build-tools.sh) for integration tests, and gives them clients and a kubectl bound to it.
package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tetherscheme "github.com/tether-edge/tether/pkg/apis/scheme"
)

// ControlPlane is a running kube-apiserver with etcd, with the project's CRDs installed.
type ControlPlane struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a typed client that knows the core types and the project's API types.
	Client client.Client
	// Scheme backs Client.
	Scheme *k8sruntime.Scheme
	// Kubeconfig is a kubeconfig file for a cluster admin, for kubectl and for our binaries.
	Kubeconfig string

	env *envtest.Environment
}

// RepoRoot is the root of the repository, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ToolsBin is where hack/build-tools.sh puts kube-apiserver, etcd and kubectl.
func ToolsBin() string {
	if d := os.Getenv("TETHER_TOOLS_BIN"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "_output", "tools", "bin")
}

// ControlPlaneOption changes how StartControlPlane runs kube-apiserver.
type ControlPlaneOption func(*envtest.Environment)

// WithAPIServerFlag sets a kube-apiserver flag (name without dashes), e.g.
// WithAPIServerFlag("default-unreachable-toleration-seconds", "5").
func WithAPIServerFlag(name, value string) ControlPlaneOption {
	return func(env *envtest.Environment) { env.ControlPlane.GetAPIServer().Configure().Set(name, value) }
}

// StartControlPlane starts etcd and kube-apiserver, installs crds/, and stops everything when the test ends.
func StartControlPlane(t testing.TB, opts ...ControlPlaneOption) *ControlPlane {
	t.Helper()
	bin := ToolsBin()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			t.Fatalf("control plane binary %s missing in %s: run hack/build-tools.sh (or make tools) first", name, bin)
		}
	}
	scheme, err := tetherscheme.New()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "crds")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})

	admin, err := env.AddUser(envtest.User{Name: "tether-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("creating admin user: %v", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatalf("rendering admin kubeconfig: %v", err)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	return &ControlPlane{Config: cfg, Client: c, Scheme: scheme, Kubeconfig: kubeconfigPath, env: env}
}

// KubectlPath prefers the kubectl built at the API server's version, then one on PATH.
func KubectlPath() (string, error) {
	if p := filepath.Join(ToolsBin(), "kubectl"); isExecutable(p) {
		return p, nil
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("no kubectl in %s or on PATH: %w", ToolsBin(), err)
	}
	return p, nil
}

// Kubectl runs kubectl against the control plane and returns its stdout; stderr goes into the error.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	kubectl, err := KubectlPath()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %v: %w: %s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
