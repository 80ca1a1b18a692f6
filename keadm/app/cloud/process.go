package cloud

import (
	"os"

	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
)

// cloudcore is what keadm installs for cloudcore under a root: binary, config, unit, log and PID file.
func cloudcore(l paths.Layout) daemon.Daemon {
	return daemon.Daemon{Name: "cloudcore", Layout: l}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
