// Package configflag is what Tether's binaries share on their command lines:
// the --config/--defaultconfig/--minconfig flags, version printing, and
// running a root command with signal handling and one-line errors. Loading
// the files is pkg/util/configload's.
package configflag

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/util/configload"
	"github.com/tether-edge/tether/pkg/version"
)

// Options holds the config flags every Tether daemon takes (spec §16.1).
type Options struct {
	// ConfigFile is the YAML file to load.
	ConfigFile string
	// PrintDefault asks for the full default config instead of running.
	PrintDefault bool
	// PrintMin asks for the minimal config instead of running.
	PrintMin bool
}

// NewOptions returns options whose --config defaults to defaultPath.
func NewOptions(defaultPath string) *Options {
	return &Options{ConfigFile: defaultPath}
}

// AddFlags registers --config, --defaultconfig and --minconfig on cmd.
func (o *Options) AddFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&o.ConfigFile, "config", o.ConfigFile, "path to the configuration file")
	fs.BoolVar(&o.PrintDefault, "defaultconfig", false, "print the full default configuration as YAML and exit")
	fs.BoolVar(&o.PrintMin, "minconfig", false, "print the minimal configuration to start from as YAML and exit")
	cmd.MarkFlagsMutuallyExclusive("defaultconfig", "minconfig")
}

// PrintIfRequested writes the default or the minimal config to w when the
// matching flag is set and reports whether it did, in which case the caller
// should stop without running. The constructors are only called when needed
// because building defaults probes the host.
func (o *Options) PrintIfRequested(w io.Writer, defaults, minimal func() any) (printed bool, err error) {
	var obj any
	switch {
	case o.PrintDefault:
		obj = defaults()
	case o.PrintMin:
		obj = minimal()
	default:
		return false, nil
	}
	out, err := configload.Marshal(obj)
	if err != nil {
		return true, fmt.Errorf("rendering config: %w", err)
	}
	_, err = w.Write(out)
	return true, err
}

// InitRoot gives a binary's root command what all Tether binaries share:
// klog's flags (-v, --vmodule, --log-file, ...), dash/underscore-insensitive
// flag names, a "version" subcommand, and quiet failures — Execute prints the
// error once, and a usage dump would bury it.
func InitRoot(cmd *cobra.Command) {
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	// A private flag.FlagSet, so nothing touches flag.CommandLine.
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gfs)
	cmd.PersistentFlags().AddGoFlagSet(gfs)
	cmd.SetGlobalNormalizationFunc(WordSepNormalizeFunc)
	cmd.AddCommand(NewVersionCommand())
}

// WordSepNormalizeFunc lets klog's underscore flags (--log_file) also be
// spelled with dashes (--log-file) like every other flag.
func WordSepNormalizeFunc(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
}

// PrintVersion writes "<root command> <version>" to the command's stdout.
func PrintVersion(cmd *cobra.Command) error {
	_, err := fmt.Fprintln(cmd.OutOrStdout(), cmd.Root().Name(), version.Get())
	return err
}

// NewVersionCommand returns the "version" subcommand all binaries share.
func NewVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return PrintVersion(cmd)
		},
	}
}
