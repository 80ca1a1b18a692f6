package framework

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// MosquittoBinary is where Debian's mosquitto package installs the broker.
const MosquittoBinary = "/usr/sbin/mosquitto"

// Mosquitto is a private mosquitto broker on a loopback port, for one test.
type Mosquitto struct {
	// URL is tcp://127.0.0.1:{port}; it stays the same across Stop and Start.
	URL string
	// Dir holds the config and the log (mosquitto.log).
	Dir string

	t    testing.TB
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// HaveMosquitto reports whether Debian's mosquitto is installed.
func HaveMosquitto() bool {
	_, err := os.Stat(MosquittoBinary)
	return err == nil
}

// StartMosquitto starts mosquitto on a free loopback port, stopped when the test ends, and returns its URL.
func StartMosquitto(t testing.TB) string {
	t.Helper()
	return NewMosquitto(t).URL
}

// NewMosquitto starts mosquitto on a free loopback port (anonymous clients allowed, no persistence, log in Dir)
// and stops it when the test ends. Stop and Start restart it on the same port. It needs Debian's mosquitto
// package (hack/install-deps.sh).
func NewMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	if !HaveMosquitto() {
		t.Fatalf("%s not found: run hack/install-deps.sh", MosquittoBinary)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatalf("mosquitto: %v", err)
	}
	dir := t.TempDir()
	// mosquitto 2.x denies anonymous clients once a listener is configured, unless told otherwise; stdout
	// logging is block-buffered when not on a terminal, hence the file.
	// set_tcp_nodelay: mosquitto leaves Nagle on, which adds ~40 ms to every request/reply with a mapper.
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nlog_dest file %s\nlog_type all\n",
		port, filepath.Join(dir, "mosquitto.log"))
	if os.Geteuid() == 0 {
		// Started as root, mosquitto switches to user "mosquitto", which cannot write the log in our temp dir.
		conf += "user root\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatalf("mosquitto: %v", err)
	}
	m := &Mosquitto{URL: "tcp://127.0.0.1:" + strconv.Itoa(port), Dir: dir, t: t, port: port}
	t.Cleanup(m.Stop)
	m.Start()
	return m
}

// Start starts the broker again after Stop, on the same port, and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if m.cmd != nil {
		m.t.Fatalf("mosquitto on %s: already running", m.URL)
	}
	cmd := exec.Command(MosquittoBinary, "-c", filepath.Join(m.Dir, "mosquitto.conf"))
	cmd.Dir = m.Dir
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	m.cmd, m.done = cmd, done

	addr := "127.0.0.1:" + strconv.Itoa(m.port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-done:
			m.cmd = nil
			m.t.Fatalf("mosquitto exited at start (%s); log:\n%s", cmd.ProcessState, m.Log())
		default:
		}
		if time.Now().After(deadline) {
			m.Stop()
			m.t.Fatalf("mosquitto not accepting connections on %s after 10s: %v; log:\n%s", addr, err, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the broker (SIGTERM, then SIGKILL after 5s) and waits for it to exit. Stopping a stopped broker
// does nothing.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Log returns the broker's log so far.
func (m *Mosquitto) Log() string {
	b, err := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}

// freeLoopbackPort asks the kernel for a free port. Another process could take it before mosquitto binds it;
// on loopback in a test run that is rare enough, and Start then fails with the log.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: not a TCP address")
	}
	return addr.Port, nil
}
