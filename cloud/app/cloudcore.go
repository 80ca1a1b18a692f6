// Package app is the cloudcore command.
package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

// NewCloudCoreCommand returns the cloudcore root command.
func NewCloudCoreCommand() *cobra.Command {
	opts := configflag.NewOptions(v1alpha1.DefaultConfigFile)
	var showVersion bool
	cmd := &cobra.Command{
		Use:   "cloudcore",
		Short: "cloudcore: the cloud side of Tether, KubeEdge compatible",
		Long: `cloudcore connects edge nodes to a Kubernetes cluster: it terminates their
connections (cloudHub), issues their certificates and keeps nodes, pods and
devices in sync between the apiserver and the edge.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				return configflag.PrintVersion(cmd)
			}
			printed, err := opts.PrintIfRequested(cmd.OutOrStdout(),
				func() any { return v1alpha1.NewDefaultCloudCore() },
				func() any { return v1alpha1.NewMinCloudCore() })
			if printed || err != nil {
				return err
			}
			cfg, err := v1alpha1.Load(opts.ConfigFile)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w (start from `cloudcore --minconfig`)", err)
			}
			if err != nil {
				return err
			}
			logConfig(opts.ConfigFile, cfg)
			return Run(cmd.Context(), cfg)
		},
	}
	opts.AddFlags(cmd)
	cmd.Flags().BoolVar(&showVersion, "version", false, "print the version and exit")
	configflag.InitRoot(cmd)
	return cmd
}

func logConfig(path string, cfg *v1alpha1.CloudCore) {
	hub := cfg.Modules.CloudHub
	listen := func(enabled bool, addr string, port int32) string {
		if !enabled {
			return "disabled"
		}
		return net.JoinHostPort(addr, strconv.Itoa(int(port)))
	}
	kube := "in-cluster"
	if k := cfg.KubeAPIConfig; k.Master != "" || k.KubeConfig != "" {
		kube = fmt.Sprintf("master=%q kubeConfig=%q", k.Master, k.KubeConfig)
	}
	klog.InfoS("Loaded configuration", "file", path,
		"modules", cfg.EnabledModules(),
		"kubeAPI", kube,
		"advertiseAddress", hub.AdvertiseAddress,
		"websocket", listen(hub.WebSocket.Enable, hub.WebSocket.Address, hub.WebSocket.Port),
		"quic", listen(hub.Quic.Enable, hub.Quic.Address, hub.Quic.Port),
		"https", listen(hub.HTTPS.Enable, hub.HTTPS.Address, hub.HTTPS.Port),
		"nodeLimit", hub.NodeLimit)
}
