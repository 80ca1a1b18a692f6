package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval is how often Stop looks whether the processes are gone.
const pollInterval = 50 * time.Millisecond

// killWait bounds the wait after SIGKILL, which nothing but an uninterruptible sleep delays.
const killWait = 5 * time.Second

// Alive reports whether pid runs. A zombie does not count: a detached daemon is reaped by whoever adopted
// it, perhaps never (a container's init), and it is stopped all the same.
func Alive(pid int) bool {
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

// ReadPIDFile returns the PID recorded in path when that process is alive and its argv[0] is a binary called
// name: after a reboot or crash the PID may belong to a stranger, who must never be signalled.
func ReadPIDFile(path, name string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 || !Alive(pid) {
		return 0, false
	}
	return pid, filepath.Base(argv0(pid)) == name
}

// FromPIDFile is ReadPIDFile for the daemon's own PID file.
func (d Daemon) FromPIDFile() (int, bool) { return ReadPIDFile(d.PIDFile(), d.Name) }

// Processes lists the live processes started from the installed binary, found by argv[0] in /proc rather than
// trusted from the PID file, which may be stale or gone while the process still runs. Matching the whole
// path keeps daemons installed under other roots out.
func (d Daemon) Processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	bin, self := d.Binary(), os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if argv0(pid) == bin && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Stop sends the processes SIGTERM, gives them grace to exit cleanly (the daemons flush queues and close
// their database), then SIGKILLs what is left.
func (d Daemon) Stop(ctx context.Context, grace time.Duration, pids ...int) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stopping %s (pid %d): %w", d.Name, pid, err)
		}
	}
	if waitGone(ctx, pids, grace) {
		return nil
	}
	for _, pid := range pids {
		if !Alive(pid) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing %s (pid %d): %w", d.Name, pid, err)
		}
	}
	if waitGone(ctx, pids, killWait) {
		return nil
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("stopping %s (pid %s): %w", d.Name, JoinPIDs(pids), err)
	}
	return fmt.Errorf("%s (pid %s) still running after SIGKILL", d.Name, JoinPIDs(pids))
}

func waitGone(ctx context.Context, pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := false
		for _, pid := range pids {
			left = left || Alive(pid)
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// JoinPIDs formats PIDs the way keadm's messages list them: "12, 34".
func JoinPIDs(pids []int) string {
	s := make([]string, len(pids))
	for i, pid := range pids {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ", ")
}
