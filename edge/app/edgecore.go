// Package app is the edgecore command.
package app

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

// NewEdgeCoreCommand returns the edgecore root command.
func NewEdgeCoreCommand() *cobra.Command {
	opts := configflag.NewOptions(v1alpha2.DefaultConfigFile)
	var showVersion bool
	cmd := &cobra.Command{
		Use:   "edgecore",
		Short: "edgecore: the edge side of Tether, KubeEdge compatible",
		Long: `edgecore runs on an edge node: it keeps a connection to cloudcore, runs pods
through the container runtime, stores metadata locally so the node keeps
working offline, and bridges devices over MQTT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				return configflag.PrintVersion(cmd)
			}
			printed, err := opts.PrintIfRequested(cmd.OutOrStdout(),
				func() any { return v1alpha2.NewDefaultEdgeCore() },
				func() any { return v1alpha2.NewMinEdgeCore() })
			if printed || err != nil {
				return err
			}
			cfg, err := v1alpha2.Load(opts.ConfigFile)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w (start from `edgecore --minconfig`, or join with `keadm join`)", err)
			}
			if err != nil {
				return err
			}
			logConfig(opts.ConfigFile, cfg)
			return Run(cmd.Context(), cfg, WithConfigFile(opts.ConfigFile))
		},
	}
	opts.AddFlags(cmd)
	cmd.Flags().BoolVar(&showVersion, "version", false, "print the version and exit")
	configflag.InitRoot(cmd)
	return cmd
}

// logConfig leaves out the token and the MQTT password.
func logConfig(path string, cfg *v1alpha2.EdgeCore) {
	m := cfg.Modules
	cloud := "disabled"
	if m.EdgeHub.Enable {
		cloud = m.EdgeHub.WebSocket.Server
	}
	klog.InfoS("Loaded configuration", "file", path,
		"node", cfg.NodeName(),
		"nodeIP", m.Edged.NodeIP,
		"modules", cfg.EnabledModules(),
		"cloudHub", cloud,
		"httpServer", m.EdgeHub.HTTPServer,
		"runtime", m.Edged.TailoredKubeletConfig.ContainerRuntimeEndpoint,
		"mqttMode", m.EventBus.MQTTMode,
		"database", cfg.Database.DataSource)
}
