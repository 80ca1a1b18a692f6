package cloud

import (
	"bytes"
	"context"
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

const unitName = "cloudcore.service"

// files names what keadm installs for cloudcore under a root.
type files struct {
	layout paths.Layout
}

func (f files) binary() string  { return filepath.Join(f.layout.BinDir(), "cloudcore") }
func (f files) config() string  { return f.layout.CloudCoreConfig() }
func (f files) unit() string    { return filepath.Join(f.layout.SystemdDir(), unitName) }
func (f files) log() string     { return filepath.Join(f.layout.LogDir(), "cloudcore.log") }
func (f files) pidFile() string { return filepath.Join(f.layout.RunDir(), "cloudcore.pid") }

// systemdRoot reports whether systemd manages this root: only the real one, and only when systemd is the init
// system (sd_booted's test), since a unit under a test root would never be loaded.
func systemdRoot(l paths.Layout, booted func() bool) bool {
	return filepath.Clean(l.Root) == "/" && booted()
}

func systemdBooted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// alive reports whether pid runs; a zombie does not count: an orphaned cloudcore may wait for a reaper that
// never comes (a container's init), and it is stopped all the same.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

func argv0(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	first, _, _ := bytes.Cut(b, []byte{0})
	return string(first)
}

// runningCloudCore lists the live processes started from the installed binary, found by argv[0] in /proc
// rather than trusted from the PID file: the file may be stale (its PID reused by a stranger) or gone while
// the process still runs.
func runningCloudCore(bin string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if argv0(pid) == bin && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopPIDs sends SIGTERM, waits up to grace for a clean exit (cloudcore flushes its queues), then SIGKILLs
// what is left.
func stopPIDs(ctx context.Context, pids []int, grace time.Duration) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal cloudcore pid %d: %w", pid, err)
		}
	}
	if waitGone(ctx, pids, grace) {
		return nil
	}
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if waitGone(ctx, pids, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("cloudcore (pid %v) still runs after SIGKILL", pids)
}

func waitGone(ctx context.Context, pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := false
		for _, pid := range pids {
			left = left || alive(pid)
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDetached runs cloudcore in its own session, so that it outlives keadm and a terminal's Ctrl-C does not
// reach it, with its output appended to the log file. The returned channel yields its exit, if keadm is still
// there to see it.
func startDetached(f files) (int, <-chan error, error) {
	if err := os.MkdirAll(filepath.Dir(f.log()), 0o755); err != nil {
		return 0, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(f.pidFile()), 0o755); err != nil {
		return 0, nil, err
	}
	logFile, err := os.OpenFile(f.log(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(f.binary(), "--config", f.config())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", f.binary(), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	if err := writeFileAtomic(f.pidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, nil, err
	}
	return pid, exited, nil
}

// writeFileAtomic replaces path in one rename, so that a crash never leaves half a config or binary and a
// running binary can be replaced (writing over it in place fails with ETXTBSY).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return replaceFile(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func copyFileAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return replaceFile(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func replaceFile(path string, mode os.FileMode, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	err = fill(tmp)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// tailFile returns up to n last lines of path.
func tailFile(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		_, _ = f.Seek(st.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
