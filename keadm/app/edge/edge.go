// Package edge holds keadm's edge-side commands: join, reset edge, debug.
//
// Every path goes through paths.Layout, so --root moves the whole installation (tests, several nodes on one
// host). Nothing is downloaded: join installs the edgecore binary found next to keadm or on PATH.
package edge

import (
	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/keadm/app/paths"
)

// NewJoinCommand is `keadm join`.
func NewJoinCommand(layout *paths.Layout) *cobra.Command {
	o := &joinOptions{}
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Install edgecore and join this host to a cloudcore",
		Long: `Join this host to a cloudcore as an edge node.

Preflight checks run first and change nothing: cloudcore's ports are reachable, the token is well formed,
unexpired and issued by that cloudcore, its certificate covers the address used, the node name is free,
the container runtime socket exists, the cgroup driver agrees with containerd, and the host is not joined
yet. Then keadm writes edgecore.yaml, installs edgecore, starts it (systemd, or in the background with a
PID file), and waits until it is connected (and, with --kube-config, until the Node is Ready).`,
		Example: `  keadm join --cloudcore-ipport 192.168.1.10:10000 --token $(cat token) --edgenode-name edge1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd, *layout)
		},
	}
	o.addFlags(cmd)
	return cmd
}

// NewResetCommand is `keadm reset edge`.
func NewResetCommand(layout *paths.Layout) *cobra.Command {
	o := &resetOptions{}
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Stop edgecore and remove what keadm join installed",
		Long: `Stop edgecore, remove the pods it created (every sandbox labelled tether.io/managed=true on the
configured runtime, with containers, volumes, logs and cgroups), then remove its config, certificates,
database, kubelet directory, pod logs, binary and unit. Running it again is harmless.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd, *layout)
		},
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "do not ask for confirmation")
	return cmd
}

// NewDebugCommand is `keadm debug`.
func NewDebugCommand(layout *paths.Layout) *cobra.Command {
	cmd := &cobra.Command{Use: "debug", Short: "Inspect an edge node's local state", Args: cobra.NoArgs}
	cmd.AddCommand(newDebugGetCommand(layout))
	return cmd
}
