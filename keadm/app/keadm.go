// Package app is the keadm command.
package app

import (
	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/pkg/util/configflag"
)

// NewKeadmCommand returns the keadm root command.
func NewKeadmCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keadm",
		Short: "keadm: install and join Tether (KubeEdge compatible) cloud and edge nodes",
		// No Args validator: cobra's default for a root without Run is what
		// rejects "keadm typo" as an unknown command instead of printing help.
	}
	configflag.InitRoot(cmd)
	return cmd
}
