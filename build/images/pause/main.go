// Command pause is the pod sandbox's init process: it holds the pod's namespaces open, reaps any orphans that land
// on it as PID 1, and exits 0 on SIGTERM or SIGINT so StopPodSandbox is quick. It is built static and packed into
// the tether/pause image by hack/build-images.sh, because edge hosts may have no registry to pull one from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Signals coalesce: one SIGCHLD may stand for several exits, so reap until nothing is left.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
