package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// HostRoot reports whether the layout is the real host rather than a test or side-by-side --root.
func HostRoot(l paths.Layout) bool {
	return l.Root == "" || filepath.Clean(l.Root) == "/"
}

// SystemdBooted reports whether systemd is the init system, by sd_booted(3)'s own test.
func SystemdBooted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// UseSystemd reports whether systemd manages daemons under l: only on the real host, since a unit under
// another root is not one systemd would load, and only when systemd booted it. booted is asked only then.
func UseSystemd(l paths.Layout, booted func() bool) bool {
	return HostRoot(l) && booted()
}

// Systemctl runs systemctl; its error carries what systemctl said, on one line.
func Systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, oneLine(out))
	}
	return nil
}

func oneLine(out []byte) string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// InstallUnit writes the unit file and has systemd reload it; enabling and starting it is the caller's, as
// the sides differ in how a replaced daemon picks up its new config.
func (d Daemon) InstallUnit(ctx context.Context, unit []byte) error {
	if err := WriteFileAtomic(d.UnitFile(), unit, 0o644); err != nil {
		return err
	}
	return Systemctl(ctx, "daemon-reload")
}
