package edge

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// unit is build/tools/edgecore.service; a test keeps the two identical (go:embed cannot reach outside the
// package directory).
//
//go:embed edgecore.service
var unit []byte

const unitName = "edgecore.service"

// How long edgecore gets to exit on SIGTERM before SIGKILL; it closes the database and the link.
const stopTimeout = 15 * time.Second

// isHostRoot is true when keadm works on the real host rather than under a test or side-by-side --root.
func isHostRoot(l paths.Layout) bool {
	return l.Root == "" || filepath.Clean(l.Root) == "/"
}

// systemdRunning reports whether PID 1 is systemd, the test systemd itself documents (sd_booted).
func systemdRunning() bool { return isDir(systemdRunDir) }

// useSystemd: only on the real host, since a unit under another root would not be the one systemd loads.
func useSystemd(l paths.Layout, noSystemd bool) bool {
	return !noSystemd && isHostRoot(l) && systemdRunning()
}

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, oneLine(out))
	}
	return nil
}

// startSystemd installs the unit and (re)starts it; restart so that --force picks up the new config.
func startSystemd(ctx context.Context, l paths.Layout) error {
	if err := writeFileAtomic(unitFile(l), unit, 0o644); err != nil {
		return err
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", unitName}, {"restart", unitName}} {
		if err := systemctl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// started is a background edgecore: its PID and a channel that yields once it exits.
type started struct {
	pid    int
	exited <-chan error
}

// startBackground runs edgecore detached: its own session (setsid), so a Ctrl-C in keadm's terminal or keadm
// exiting does not stop it; output appended to the log file; PID recorded for reset.
func startBackground(l paths.Layout, bin, config string) (*started, error) {
	for _, d := range []string{l.LogDir(), l.RunDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("starting edgecore: %w", err)
		}
	}
	logf, err := os.OpenFile(logFile(l), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting edgecore: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := writeFileAtomic(pidFile(l), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return &started{pid: cmd.Process.Pid, exited: exited}, nil
}

// runningEdgecore reads the PID file and reports a live edgecore. The command line must name edgecore:
// after a reboot or crash the PID may belong to a stranger, who must never be signalled.
func runningEdgecore(pidPath string) (int, bool) {
	data, err := os.ReadFile(pidPath)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if !alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return pid, filepath.Base(string(argv0)) == "edgecore"
}

// alive is false for zombies: a detached edgecore is reaped by whoever adopted it, perhaps never.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after "pid (comm)"; comm may contain spaces and parentheses, so cut at the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// stopEdgecore stops edgecore however it runs: the unit on a systemd host, else the process in the PID file
// (SIGTERM, then SIGKILL after stopTimeout). It reports what it did in one line, or "" if nothing ran.
func stopEdgecore(ctx context.Context, l paths.Layout) (string, error) {
	var done []string
	if isHostRoot(l) && systemdRunning() && exists(unitFile(l)) {
		// A unit file systemd never loaded (no daemon-reload since) has nothing to stop.
		if err := systemctl(ctx, "stop", unitName); err != nil && !strings.Contains(err.Error(), "not loaded") {
			return "", err
		}
		done = append(done, "stopped "+unitName)
	}
	pid, ok := runningEdgecore(pidFile(l))
	if ok {
		if err := killAndWait(ctx, pid); err != nil {
			return "", err
		}
		done = append(done, fmt.Sprintf("stopped edgecore (pid %d)", pid))
	}
	if err := os.Remove(pidFile(l)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("removing %s: %w", pidFile(l), err)
	}
	return strings.Join(done, ", "), nil
}

func killAndWait(ctx context.Context, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping edgecore (pid %d): %w", pid, err)
	}
	if waitGone(ctx, pid, stopTimeout) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing edgecore (pid %d): %w", pid, err)
	}
	if !waitGone(ctx, pid, 5*time.Second) {
		return fmt.Errorf("edgecore (pid %d) still running after SIGKILL", pid)
	}
	return nil
}

func waitGone(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// installBinary copies edgecore into place. Write and rename, so a running edgecore's binary (ETXTBSY on
// write) can still be replaced.
func installBinary(src, dst string) (copied bool, err error) {
	if si, err1 := os.Stat(src); err1 == nil {
		if di, err2 := os.Stat(dst); err2 == nil && os.SameFile(si, di) {
			return false, nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("installing edgecore: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("installing edgecore: %w", err)
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return false, fmt.Errorf("installing edgecore: %w", err)
	}
	_, err = io.Copy(out, in)
	err = errors.Join(err, out.Close())
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("installing edgecore to %s: %w", dst, err)
	}
	return true, nil
}

// lastLogLine is what a user needs first when edgecore dies at start; only the file's tail is read.
func lastLogLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 4096 {
		_, _ = f.Seek(-4096, io.SeekEnd)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
