// Package daemon is how keadm runs a daemon (cloudcore, edgecore) on a host: as a systemd unit when systemd
// manages the host, else as a detached process with a PID file and a log, everything under a paths.Layout.
//
// It holds the mechanics only. What a side waits for once its daemon runs (ports and a token, a Ready node),
// the unit file's contents and which systemctl verbs start or stop it stay with the cloud and edge commands.
package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// Daemon is one daemon as keadm installs it under a layout.
type Daemon struct {
	// Name is the binary's file name and the stem of its config, unit, log and PID file names.
	Name   string
	Layout paths.Layout
}

// Binary is where keadm installs the daemon's executable.
func (d Daemon) Binary() string { return filepath.Join(d.Layout.BinDir(), d.Name) }

// Config is the daemon's config file, which it is started with.
func (d Daemon) Config() string { return filepath.Join(d.Layout.ConfigDir(), d.Name+".yaml") }

// UnitName is the systemd unit's name, as systemctl takes it.
func (d Daemon) UnitName() string { return d.Name + ".service" }

// UnitFile is where the unit file goes.
func (d Daemon) UnitFile() string { return filepath.Join(d.Layout.SystemdDir(), d.UnitName()) }

// LogFile receives the output of a detached daemon; under systemd the journal has it.
func (d Daemon) LogFile() string { return filepath.Join(d.Layout.LogDir(), d.Name+".log") }

// PIDFile records the PID of a detached daemon.
func (d Daemon) PIDFile() string { return filepath.Join(d.Layout.RunDir(), d.Name+".pid") }

// Leftovers lists the temporary files an interrupted WriteFileAtomic left next to the files keadm writes for
// the daemon, so that a reset can remove them and then the directories.
func (d Daemon) Leftovers() []string {
	var out []string
	for _, p := range []string{d.Config(), d.Binary(), d.UnitFile(), d.PIDFile()} {
		out = append(out, leftovers(p)...)
	}
	return out
}

// Started is a detached daemon keadm started.
type Started struct {
	PID int
	// Exited yields the daemon's exit once, for as long as keadm runs to see it.
	Exited <-chan error
}

// Start runs the installed binary with --config in its own session (setsid), so that it outlives keadm and a
// Ctrl-C in keadm's terminal does not reach it, appends its output to the log file and records its PID.
func (d Daemon) Start() (*Started, error) {
	for _, dir := range []string{filepath.Dir(d.LogFile()), filepath.Dir(d.PIDFile())} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("starting %s: %w", d.Name, err)
		}
	}
	logf, err := os.OpenFile(d.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", d.Name, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(d.Binary(), "--config", d.Config())
	cmd.Stdout, cmd.Stderr = logf, logf
	// Started from /, it holds no directory of keadm's caller busy, as systemd would start it.
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", d.Binary(), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	if err := WriteFileAtomic(d.PIDFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		// Without the PID file no reset would find it.
		_ = cmd.Process.Kill()
		return nil, err
	}
	return &Started{PID: pid, Exited: exited}, nil
}
