package edge

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
)

// unit is build/tools/edgecore.service; a test keeps the two identical (go:embed cannot reach outside the
// package directory).
//
//go:embed edgecore.service
var unit []byte

// How long edgecore gets to exit on SIGTERM before SIGKILL; it closes the database and the link.
const stopTimeout = 15 * time.Second

// edgecore is what keadm installs for edgecore under a root: binary, config, unit, log and PID file.
func edgecore(l paths.Layout) daemon.Daemon {
	return daemon.Daemon{Name: "edgecore", Layout: l}
}

// onSystemd: the real host, booted by systemd; the unit is then the one to start and stop.
func onSystemd(l paths.Layout) bool { return daemon.UseSystemd(l, daemon.SystemdBooted) }

// startSystemd installs the unit and (re)starts it; restart so that --force picks up the new config.
func startSystemd(ctx context.Context, d daemon.Daemon) error {
	if err := d.InstallUnit(ctx, unit); err != nil {
		return err
	}
	for _, args := range [][]string{{"enable", d.UnitName()}, {"restart", d.UnitName()}} {
		if err := daemon.Systemctl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// stopEdgecore stops edgecore however it runs: the unit on a systemd host, else the process in the PID file
// (SIGTERM, then SIGKILL after stopTimeout). It reports what it did in one line, or "" if nothing ran.
func stopEdgecore(ctx context.Context, l paths.Layout) (string, error) {
	d := edgecore(l)
	var done []string
	if onSystemd(l) && exists(d.UnitFile()) {
		// A unit file systemd never loaded (no daemon-reload since) has nothing to stop.
		if err := daemon.Systemctl(ctx, "stop", d.UnitName()); err != nil && !strings.Contains(err.Error(), "not loaded") {
			return "", err
		}
		done = append(done, "stopped "+d.UnitName())
	}
	if pid, ok := d.FromPIDFile(); ok {
		if err := d.Stop(ctx, stopTimeout, pid); err != nil {
			return "", err
		}
		done = append(done, fmt.Sprintf("stopped edgecore (pid %d)", pid))
	}
	if err := os.Remove(d.PIDFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("removing %s: %w", d.PIDFile(), err)
	}
	return strings.Join(done, ", "), nil
}

// lastLogLine is what a user needs first when edgecore dies at start.
func lastLogLine(path string) string {
	lines := daemon.Tail(path, 1)
	if len(lines) == 0 {
		return ""
	}
	return strings.TrimSpace(lines[0])
}
