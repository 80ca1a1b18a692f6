package cloud

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
)

type resetOptions struct {
	force      bool
	purge      bool
	kubeConfig string
}

func newResetCommand(layout *paths.Layout, e env) *cobra.Command {
	var o resetOptions
	cmd := &cobra.Command{
		Use:   "cloud",
		Short: "Stop and remove cloudcore",
		Long: `Stop cloudcore (its systemd unit, or the detached process) and remove what keadm init installed: the unit,
cloudcore.yaml, the CA and certificate directories, the cloudcore binary, its log and PID file. The cluster keeps
namespace kubeedge (its Secrets hold the CA edge nodes trust) and the CRDs unless --purge-cluster is given.
Running it again is harmless.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := absLayout(layout)
			if err != nil {
				return err
			}
			return runReset(cmd.Context(), o, l, e, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.force, "force", false, "do not ask for confirmation")
	fs.BoolVar(&o.purge, "purge-cluster", false, "also delete namespace kubeedge: the join token, the CA and the server certificate (joined edge nodes must join again)")
	fs.StringVar(&o.kubeConfig, "kube-config", o.kubeConfig, "kubeconfig for --purge-cluster (default $KUBECONFIG, else ~/.kube/config)")
	return cmd
}

func runReset(ctx context.Context, o resetOptions, l paths.Layout, e env, in io.Reader, out io.Writer) error {
	d := cloudcore(l)
	say := func(step, format string, args ...any) {
		fmt.Fprintf(out, "[%s] %s\n", step, fmt.Sprintf(format, args...))
	}
	useSystemd := daemon.UseSystemd(l, e.systemdBooted)
	remove := removable(d)
	running := d.Processes()

	if len(remove) == 0 && len(running) == 0 {
		say("reset", "cloudcore is not installed under %s: nothing to remove", l.Root)
		if !o.purge {
			return nil
		}
	} else if !o.force {
		what := "stop cloudcore and delete " + strings.Join(remove, ", ")
		if len(remove) == 0 {
			what = "stop cloudcore"
		}
		fmt.Fprintf(out, "This will %s. Continue? [y/N] ", what)
		answer, err := bufio.NewReader(in).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("reading the answer: %w", err)
			}
			return errors.New("aborted: nothing changed (answer y, or pass --force)")
		}
	}

	if len(remove) > 0 || len(running) > 0 {
		stopped, err := stopCloudCore(ctx, d, useSystemd, e.stopGrace)
		if err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		say("stop", "%s", stopped)
		var removed []string
		for _, p := range removable(d) {
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("remove: %w", err)
			}
			removed = append(removed, p)
		}
		if useSystemd && slices.Contains(removed, d.UnitFile()) {
			if err := daemon.Systemctl(ctx, "daemon-reload"); err != nil {
				return fmt.Errorf("remove: %w", err)
			}
		}
		pruneEmptyDirs(l)
		if len(removed) > 0 {
			say("remove", "removed %s", strings.Join(removed, ", "))
		}
	}

	if !o.purge {
		say("cluster", "kept namespace %s and the CRDs, so a new cloudcore keeps the CA joined edge nodes trust (--purge-cluster deletes the namespace)",
			certificate.Namespace)
		return nil
	}
	c, err := e.newClients(o.kubeConfig)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	err = c.kube.CoreV1().Namespaces().Delete(ctx, certificate.Namespace, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		say("cluster", "namespace %s does not exist", certificate.Namespace)
	case err != nil:
		return fmt.Errorf("purge: delete namespace %s on %s: %s", certificate.Namespace, c.host, rootCause(err))
	default:
		say("cluster", "deleting namespace %s (join token, CA, server certificate); the CRDs stay, and with them every Device", certificate.Namespace)
	}
	return nil
}

// removable lists what init installed and is still there. The CA and certificate directories go too: a
// later init must not pick up a CA the cluster no longer has. Shared parents are left to pruneEmptyDirs.
func removable(d daemon.Daemon) []string {
	var out []string
	l := d.Layout
	for _, p := range []string{d.UnitFile(), d.Config(), l.CADir(), l.CertsDir(), d.Binary(), d.LogFile(), d.PIDFile()} {
		if fileExists(p) {
			out = append(out, p)
		}
	}
	return append(out, d.Leftovers()...)
}

// pruneEmptyDirs removes the kubeedge directories init created once nothing is left in them; an edgecore
// sharing the root keeps its own.
func pruneEmptyDirs(l paths.Layout) {
	for _, d := range []string{l.ConfigDir(), filepath.Dir(l.ConfigDir()), l.LogDir(), l.RunDir(), l.StateDir()} {
		_ = os.Remove(d) // fails, as wanted, on a directory that is not empty
	}
}

// stopCloudCore stops the unit (on a systemd host) and any process of the installed binary, and says what it
// did.
func stopCloudCore(ctx context.Context, d daemon.Daemon, useSystemd bool, grace time.Duration) (string, error) {
	var done []string
	if useSystemd && fileExists(d.UnitFile()) {
		if err := daemon.Systemctl(ctx, "disable", "--now", d.UnitName()); err != nil {
			return "", err
		}
		done = append(done, "stopped and disabled "+d.UnitName())
	}
	if pids := d.Processes(); len(pids) > 0 {
		if err := d.Stop(ctx, grace, pids...); err != nil {
			return "", err
		}
		done = append(done, "stopped cloudcore (pid "+daemon.JoinPIDs(pids)+")")
	}
	if len(done) == 0 {
		return "cloudcore was not running", nil
	}
	return strings.Join(done, "; "), nil
}
