package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// copyOf copies the named system binary to dir/name, so that a process started from it has that argv[0].
func copyOf(t *testing.T, tool, dir, name string) string {
	t.Helper()
	src, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("no %s binary", tool)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts bin and reaps it at the end of the test; the caller reaps it earlier with wait.
func run(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, wait func()) {
	t.Helper()
	cmd = exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, reaper(t, cmd)
}

func reaper(t *testing.T, cmd *exec.Cmd) func() {
	var once sync.Once
	wait := func() { once.Do(func() { _ = cmd.Wait() }) }
	t.Cleanup(func() { _ = cmd.Process.Kill(); wait() })
	return wait
}

// zombie returns the PID of a child that has exited and that nobody reaped yet.
func zombie(t *testing.T, bin string, args ...string) int {
	t.Helper()
	cmd, _ := run(t, bin, args...)
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for procState(t, pid) != 'Z' {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pid
}

// procState reads the state letter the kernel reports, independently of Alive.
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return fields[0][0]
}

// reaped returns the PID of a process that has exited and was reaped: nothing runs under it.
func reaped(t *testing.T) int {
	t.Helper()
	cmd, wait := run(t, copyOf(t, "true", t.TempDir(), "true"))
	wait()
	return cmd.Process.Pid
}

func TestPaths(t *testing.T) {
	l := paths.Layout{Root: "/r"}
	for _, tt := range []struct {
		d          Daemon
		config     string
		binary     string
		unit, name string
		log, pid   string
	}{
		{Daemon{"cloudcore", l}, l.CloudCoreConfig(), "/r/usr/local/bin/cloudcore", "/r/etc/systemd/system/cloudcore.service",
			"cloudcore.service", "/r/var/log/kubeedge/cloudcore.log", "/r/var/run/kubeedge/cloudcore.pid"},
		{Daemon{"edgecore", paths.Layout{}}, "/etc/kubeedge/config/edgecore.yaml", "/usr/local/bin/edgecore",
			"/etc/systemd/system/edgecore.service", "edgecore.service", "/var/log/kubeedge/edgecore.log", "/var/run/kubeedge/edgecore.pid"},
	} {
		got := []string{tt.d.Config(), tt.d.Binary(), tt.d.UnitFile(), tt.d.UnitName(), tt.d.LogFile(), tt.d.PIDFile()}
		want := []string{tt.config, tt.binary, tt.unit, tt.name, tt.log, tt.pid}
		if !slices.Equal(got, want) {
			t.Errorf("%s under %q: got %q, want %q", tt.d.Name, tt.d.Layout.Root, got, want)
		}
	}
}

func TestAlive(t *testing.T) {
	sleep := copyOf(t, "sleep", t.TempDir(), "sleep")
	running, _ := run(t, sleep, "60")
	for _, tt := range []struct {
		name string
		pid  func(t *testing.T) int
		want bool
	}{
		{"this process", func(*testing.T) int { return os.Getpid() }, true},
		{"a running child", func(*testing.T) int { return running.Process.Pid }, true},
		// The /proc entry is there, but the process is as good as gone.
		{"zombie", func(t *testing.T) int { return zombie(t, sleep, "0") }, false},
		{"reaped", reaped, false},
		{"no such pid", func(*testing.T) int { return 1 << 30 }, false}, // above the largest pid_max
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Alive(tt.pid(t)); got != tt.want {
				t.Errorf("Alive = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	ours, _ := run(t, copyOf(t, "sleep", filepath.Join(dir, "ours"), "edgecore"), "60")
	// After a reboot or a crash the PID in the file may have gone to another program.
	stranger, _ := run(t, copyOf(t, "sleep", filepath.Join(dir, "other"), "sleep"), "60")
	pid := strconv.Itoa(ours.Process.Pid)
	for _, tt := range []struct {
		name    string
		content string // "" leaves the file out
		want    int
	}{
		{"no PID file", "", 0},
		{"ours", pid + "\n", ours.Process.Pid},
		{"ours, no newline, blanks", "  " + pid + " ", ours.Process.Pid},
		{"reused by another program", strconv.Itoa(stranger.Process.Pid) + "\n", 0},
		{"zombie of ours", strconv.Itoa(zombie(t, copyOf(t, "sleep", filepath.Join(dir, "z"), "edgecore"), "0")) + "\n", 0},
		{"process gone", strconv.Itoa(reaped(t)) + "\n", 0},
		{"garbage", "edgecore\n", 0},
		{"zero", "0\n", 0},
		{"negative", "-1\n", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgecore.pid")
			if tt.content != "" {
				if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := ReadPIDFile(path, "edgecore")
			if ok != (tt.want != 0) || (ok && got != tt.want) {
				t.Errorf("ReadPIDFile = (%d, %v), want %d", got, ok, tt.want)
			}
		})
	}
}

// Processes finds the installed binary's processes whatever the PID file says, and only those: the same
// daemon under another root is someone else's.
func TestProcesses(t *testing.T) {
	d := Daemon{Name: "edgecore", Layout: paths.Layout{Root: t.TempDir()}}
	other := Daemon{Name: "edgecore", Layout: paths.Layout{Root: t.TempDir()}}
	if got := d.Processes(); len(got) != 0 {
		t.Fatalf("nothing started: %v", got)
	}
	for _, x := range []Daemon{d, other} {
		if _, err := x.InstallBinary(copyOf(t, "sleep", t.TempDir(), "sleep")); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := run(t, d.Binary(), "60")
	b, _ := run(t, d.Binary(), "60")
	run(t, other.Binary(), "60")
	zombie(t, d.Binary(), "0")
	got := d.Processes()
	slices.Sort(got)
	want := []int{a.Process.Pid, b.Process.Pid}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Processes = %v, want %v", got, want)
	}
}

// startTrapping starts a shell that ignores SIGTERM and waits until the trap is set.
func startTrapping(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(copyOf(t, "sh", t.TempDir(), "sh"), "-c", `trap "" TERM; echo ready; read x`)
	stdin, err := cmd.StdinPipe() // read blocks on it: no child process to leave behind
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close() })
	reaper(t, cmd)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("shell said %q, %v", line, err)
	}
	return cmd.Process.Pid
}

func TestStop(t *testing.T) {
	d := Daemon{Name: "edgecore"}
	const grace = time.Second
	polite := func(t *testing.T) int {
		cmd, _ := run(t, copyOf(t, "sleep", t.TempDir(), "edgecore"), "60")
		return cmd.Process.Pid
	}
	for _, tt := range []struct {
		name   string
		pids   []func(t *testing.T) int
		killed bool // the grace ran out
	}{
		{"exits on SIGTERM", []func(*testing.T) int{polite}, false},
		{"ignores SIGTERM: killed after the grace", []func(*testing.T) int{startTrapping}, true},
		{"one of each", []func(*testing.T) int{polite, startTrapping}, true},
		{"already gone", []func(*testing.T) int{reaped}, false},
		{"zombie", []func(*testing.T) int{func(t *testing.T) int { return zombie(t, copyOf(t, "sleep", t.TempDir(), "edgecore"), "0") }}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var pids []int
			for _, f := range tt.pids {
				pids = append(pids, f(t))
			}
			begin := time.Now()
			err := d.Stop(context.Background(), grace, pids...)
			took := time.Since(begin)
			if err != nil {
				t.Fatalf("Stop: %v", err)
			}
			for _, pid := range pids {
				if Alive(pid) {
					t.Errorf("pid %d still alive", pid)
				}
			}
			if tt.killed && took < grace {
				t.Errorf("killed after %s, before the grace of %s", took, grace)
			}
			if !tt.killed && took >= grace {
				t.Errorf("took %s: waited out the grace for processes that were gone", took)
			}
		})
	}
}

func TestStart(t *testing.T) {
	for _, tt := range []struct {
		name    string
		script  string // "" installs no binary
		wantErr string
		exit    string
		log     []string
	}{
		{"exits at once", "#!/bin/sh\necho \"started with $*\"\necho 'fatal: no cloud' >&2\nexit 3\n", "", "exit status 3",
			[]string{"started with --config {config}", "fatal: no cloud"}},
		{"no binary", "", "starting {binary}: ", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Daemon{Name: "cloudcore", Layout: paths.Layout{Root: t.TempDir()}}
			expand := strings.NewReplacer("{config}", d.Config(), "{binary}", d.Binary()).Replace
			if tt.script != "" {
				if err := WriteFileAtomic(d.Binary(), []byte(tt.script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The log is appended to: what an earlier run said stays.
			if err := WriteFileAtomic(d.LogFile(), []byte("earlier run\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := d.Start()
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), expand(tt.wantErr)) {
					t.Fatalf("Start: %v, want %q", err, expand(tt.wantErr))
				}
				if _, err := os.Stat(d.PIDFile()); !os.IsNotExist(err) {
					t.Errorf("PID file written for a daemon that never started: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(d.PIDFile()); string(data) != strconv.Itoa(s.PID)+"\n" {
				t.Errorf("PID file %q, want %d", data, s.PID)
			}
			select {
			case err := <-s.Exited:
				if err == nil || err.Error() != tt.exit {
					t.Errorf("exit %v, want %s", err, tt.exit)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no exit seen")
			}
			want := []string{"earlier run"}
			for _, l := range tt.log {
				want = append(want, expand(l))
			}
			if got := Tail(d.LogFile(), 10); !slices.Equal(got, want) {
				t.Errorf("log %q, want %q", got, want)
			}
		})
	}
}

// A started daemon leads its own session, so that keadm's terminal and keadm's exit do not reach it.
func TestStartDetaches(t *testing.T) {
	d := Daemon{Name: "edgecore", Layout: paths.Layout{Root: t.TempDir()}}
	if err := WriteFileAtomic(d.Binary(), []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := d.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background(), time.Second, s.PID) })
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.PID))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after "pid (comm)": state, ppid, pgrp, session.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if f[3] != strconv.Itoa(s.PID) {
		t.Errorf("session %s, want its own (%d)", f[3], s.PID)
	}
	if err := d.Stop(context.Background(), time.Second, s.PID); err != nil || Alive(s.PID) {
		t.Errorf("Stop: %v, alive %v", err, Alive(s.PID))
	}
}

func TestUseSystemd(t *testing.T) {
	yes, no := func() bool { return true }, func() bool { return false }
	asked := func() bool { t.Error("booted asked for a root other than /"); return true }
	for _, tt := range []struct {
		root   string
		booted func() bool
		want   bool
	}{
		{"/", yes, true},
		{"", yes, true},
		{"//", yes, true},
		{"/", no, false},
		{"/tmp/x", asked, false},
		{"relative", asked, false},
	} {
		if got := UseSystemd(paths.Layout{Root: tt.root}, tt.booted); got != tt.want {
			t.Errorf("UseSystemd(%q) = %v, want %v", tt.root, got, tt.want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		path string
		old  string // "" for none
		mode os.FileMode
	}{
		{"new, in a new directory", filepath.Join(dir, "a", "b", "edgecore.yaml"), "", 0o600},
		{"replaces, taking the new mode", filepath.Join(dir, "cloudcore.yaml"), "old", 0o644},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.old != "" {
				if err := os.WriteFile(tt.path, []byte(tt.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFileAtomic(tt.path, []byte("new"), tt.mode); err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(tt.path); string(data) != "new" {
				t.Errorf("content %q", data)
			}
			if fi, err := os.Stat(tt.path); err != nil || fi.Mode().Perm() != tt.mode {
				t.Errorf("mode %v, %v; want %v", fi.Mode(), err, tt.mode)
			}
			if left := leftovers(tt.path); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	if err := WriteFileAtomic(filepath.Join(dir, "cloudcore.yaml", "x"), nil, 0o644); err == nil ||
		!strings.HasPrefix(err.Error(), "writing "+filepath.Join(dir, "cloudcore.yaml", "x")+": ") {
		t.Errorf("under a file: %v", err)
	}
}

// A reset removes what an interrupted write left, and nothing else.
func TestLeftovers(t *testing.T) {
	d := Daemon{Name: "edgecore", Layout: paths.Layout{Root: t.TempDir()}}
	var want []string
	for _, p := range []string{d.Config(), d.Binary(), d.UnitFile(), d.PIDFile()} {
		left := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".123456")
		want = append(want, left)
		for _, f := range []string{left, p, filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".bak"), p + ".123"} {
			if err := WriteFileAtomic(f, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := d.Leftovers(); !slices.Equal(got, want) {
		t.Errorf("Leftovers = %q, want %q", got, want)
	}
}

func TestInstallBinary(t *testing.T) {
	d := Daemon{Name: "edgecore", Layout: paths.Layout{Root: t.TempDir()}}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte("binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		src    string
		copied bool
	}{
		{"fresh", src, true},
		{"again", src, true},
		// Installing the installed binary over itself is a no-op, not a truncation.
		{"over itself", d.Binary(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			copied, err := d.InstallBinary(tt.src)
			if err != nil || copied != tt.copied {
				t.Fatalf("InstallBinary = (%v, %v), want copied %v", copied, err, tt.copied)
			}
			if fi, err := os.Stat(d.Binary()); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("installed %v, %v; want mode 0755", fi, err)
			}
			if data, _ := os.ReadFile(d.Binary()); string(data) != "binary" {
				t.Errorf("content %q", data)
			}
		})
	}
	if _, err := d.InstallBinary(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing source: %v", err)
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 100<<10) + "\nlast\n"
	for _, tt := range []struct {
		name    string
		content string // "" leaves the file out
		n       int
		want    []string
	}{
		{"no file", "", 3, nil},
		{"blank", "\n \n", 3, nil},
		{"fewer lines than asked", "a\nb\n", 3, []string{"a", "b"}},
		{"last lines", "a\nb\nc\n", 2, []string{"b", "c"}},
		{"trailing blank lines", "a\nb\n\n  \n", 1, []string{"b"}},
		{"no final newline", "a\nb", 1, []string{"b"}},
		{"large file", long, 1, []string{"last"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if tt.content != "" {
				if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := Tail(path, tt.n); !slices.Equal(got, tt.want) {
				t.Errorf("Tail = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestJoinPIDs(t *testing.T) {
	for _, tt := range []struct {
		pids []int
		want string
	}{{nil, ""}, {[]int{7}, "7"}, {[]int{7, 42}, "7, 42"}} {
		if got := JoinPIDs(tt.pids); got != tt.want {
			t.Errorf("JoinPIDs(%v) = %q, want %q", tt.pids, got, tt.want)
		}
	}
}
