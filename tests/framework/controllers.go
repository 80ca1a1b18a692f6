package framework

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StartKubeControllers runs the real kube-controller-manager and kube-scheduler against the control plane, for
// tests that need Deployments scheduled, default ServiceAccounts and garbage collection. They serve no HTTPS
// (port 0), so they need no certificates of their own. controllerManagerArgs are added to
// kube-controller-manager's command line, e.g. "--node-monitor-grace-period=10s" for faster node lifecycle timers.
func StartKubeControllers(t testing.TB, cp *ControlPlane, controllerManagerArgs ...string) {
	t.Helper()
	logDir := t.TempDir()
	start := func(name string, args ...string) {
		bin := filepath.Join(ToolsBin(), name)
		if !isExecutable(bin) {
			t.Fatalf("%s missing in %s: run hack/build-tools.sh %s", name, ToolsBin(), name)
		}
		logPath := filepath.Join(logDir, name+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			logFile.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("%s log tail:\n%s", name, tail(b, 20))
			}
		})
	}
	common := []string{"--kubeconfig=" + cp.Kubeconfig, "--leader-elect=false", "--secure-port=0"}
	// Without the API server's service-account signing key the token controller cannot run; tests do not need
	// it, pods there do not mount tokens.
	kcm := append(append(common, "--controllers=*,-serviceaccount-token", "--use-service-account-credentials=false"), controllerManagerArgs...)
	start("kube-controller-manager", kcm...)
	start("kube-scheduler", common...)
}
