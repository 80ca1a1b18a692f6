// Package app is the keadm command.
package app

import (
	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/keadm/app/cloud"
	"github.com/tether-edge/tether/keadm/app/edge"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

// NewKeadmCommand returns the keadm root command.
func NewKeadmCommand() *cobra.Command {
	layout := &paths.Layout{}
	cmd := &cobra.Command{
		Use:   "keadm",
		Short: "keadm: install and join Tether (KubeEdge compatible) cloud and edge nodes",
		// No Args validator: cobra's default for a root without Run is what
		// rejects "keadm typo" as an unknown command instead of printing help.
	}
	cmd.PersistentFlags().StringVar(&layout.Root, "root", "/",
		"root directory for every path keadm writes (/etc/kubeedge, /var/lib/kubeedge, units, binaries); for tests and several nodes on one host")
	reset := &cobra.Command{
		Use:   "reset",
		Short: "Undo keadm init (reset cloud) or keadm join (reset edge)",
		Args:  cobra.NoArgs,
	}
	reset.AddCommand(cloud.NewResetCommand(layout), edge.NewResetCommand(layout))
	cmd.AddCommand(
		cloud.NewInitCommand(layout),
		cloud.NewGetTokenCommand(layout),
		cloud.NewRevokeCommand(layout),
		edge.NewJoinCommand(layout),
		edge.NewDebugCommand(layout),
		reset,
	)
	configflag.InitRoot(cmd)
	return cmd
}
