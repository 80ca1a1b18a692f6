package framework

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers for tests that install Tether as a user does: keadm, cloudcore and edgecore built into one directory
// as a release archive lays them out, keadm init / join under a --root, the daemons detached with PID files and
// log files under that root.

// BuildKeadm starts building keadm, cloudcore and edgecore into one directory, so that init and join find their
// daemon next to keadm. The returned function waits for the build and returns keadm's path.
func BuildKeadm(t testing.TB) func() string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/keadm", "./cmd/cloudcore", "./cmd/edgecore")
	cmd.Dir = RepoRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("building keadm, cloudcore and edgecore: %v", err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return func() string {
		t.Helper()
		waited = true
		if err := cmd.Wait(); err != nil {
			t.Fatalf("building keadm, cloudcore and edgecore: %v\n%s", err, out.String())
		}
		return filepath.Join(dir, "keadm")
	}
}

// KeadmRoot is a --root under /tmp (short paths keep unix sockets short), removed when the test ends.
func KeadmRoot(t testing.TB, prefix string) string {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after any reset registered later.
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

// RunKeadm runs keadm and returns its combined output and exit code (-1 when it could not run). It never stops
// the test, so it may be called from any goroutine.
func RunKeadm(keadm string, args ...string) (string, int) { return RunKeadmIn(nil, keadm, args...) }

// RunKeadmIn is RunKeadm inside network namespace ns (on the host when ns is nil).
func RunKeadmIn(ns *Netns, keadm string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, keadm, args...)
	if ns != nil {
		cmd = ns.CommandContext(ctx, keadm, args...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	return fmt.Sprintf("running keadm %v: %v\n%s", args, err, out.String()), -1
}

// DaemonPID is the PID in the file keadm wrote for daemon ("cloudcore", "edgecore") under root, if that process
// is alive and runs the binary keadm installed there; else 0.
func DaemonPID(root, daemon string) int {
	b, err := os.ReadFile(filepath.Join(root, "var/run/kubeedge", daemon+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if pid <= 0 || !bytes.HasPrefix(cmdline, []byte(filepath.Join(root, "usr/local/bin", daemon)+"\x00")) || !ProcessAlive(pid) {
		return 0
	}
	return pid
}

// DaemonLog is the log file keadm gave daemon under root.
func DaemonLog(root, daemon string) string {
	return filepath.Join(root, "var/log/kubeedge", daemon+".log")
}

// ProcessAlive: running and not a zombie (an orphaned daemon may never be reaped in a container).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// FileTail is the last n bytes of a file, or the error reading it.
func FileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// KlogErrorLines are the error lines of a klog-format log file: those starting with 'E' and a date
// ("E1208 00:31:02.123456 ..."). Continuation lines of a multi-line message are not counted.
func KlogErrorLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l := sc.Text()
		if len(l) > 5 && l[0] == 'E' && isDigits(l[1:5]) {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

// UnallowedErrors is the subset of lines that no entry of allow matches.
func UnallowedErrors(lines []string, allow ...AllowedError) []string {
	var out []string
	for _, line := range lines {
		allowed := false
		for _, a := range allow {
			if a.Pattern.MatchString(line) {
				allowed = true
				break
			}
		}
		if !allowed {
			out = append(out, line)
		}
	}
	return out
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// EventuallyState is Eventually whose cond also describes the state it saw; the last description is logged when
// it times out.
func EventuallyState(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	done := false
	defer func() {
		if !done {
			t.Logf("last state while waiting for %s:\n%s", what, last)
		}
	}()
	Eventually(t, timeout, what, func() bool {
		ok, state := cond()
		last = state
		return ok
	})
	done = true
}
