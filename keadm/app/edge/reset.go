package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/security/certs"
)

// podStopGrace is what each pod's containers get between SIGTERM and SIGKILL: the node is going away, so
// this is shorter than the usual 30s.
const podStopGrace = 10 * time.Second

type resetOptions struct {
	force bool
}

func (o *resetOptions) run(ctx context.Context, cmd *cobra.Command, l paths.Layout) error {
	out := cmd.OutOrStdout()
	root := l.Root
	if root == "" {
		root = "/"
	}
	if !o.force {
		fmt.Fprintf(out, "This stops edgecore, removes its pods, and deletes its config, certificates, database, logs and binary under %s. Continue? [y/N] ", root)
		line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("reset aborted, nothing was changed (pass --force to reset without asking)")
		}
	}
	cfg, haveCfg, err := loadConfigLenient(l)
	if err != nil {
		fmt.Fprintf(out, "[reset] %v; using the default paths\n", err)
	}

	what, err := stopEdgecore(ctx, l)
	if err != nil {
		return err
	}
	if what != "" {
		fmt.Fprintf(out, "[reset] %s\n", what)
	}

	// Pods go before the files: the config is the only record of which runtime and cgroup parent they use, so
	// on failure it stays for the next attempt.
	if haveCfg {
		msg, err := removePods(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%w; the config is kept: fix the runtime and run keadm reset edge again", err)
		}
		if msg != "" {
			fmt.Fprintf(out, "[reset] %s\n", msg)
		}
	}

	d := edgecore(l)
	if onSystemd(l) && exists(d.UnitFile()) {
		if err := daemon.Systemctl(ctx, "disable", d.UnitName()); err != nil && !strings.Contains(err.Error(), "does not exist") {
			return err
		}
	}
	removed, err := removeFiles(l, cfg, haveCfg)
	for _, p := range removed {
		fmt.Fprintf(out, "[reset] removed %s\n", p)
	}
	if err != nil {
		return err
	}
	if onSystemd(l) && slices.Contains(removed, d.UnitFile()) {
		if err := daemon.Systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
	}
	if len(removed) == 0 && what == "" {
		fmt.Fprintln(out, "[reset] nothing to remove: this host is not joined")
		return nil
	}
	fmt.Fprintln(out, "[reset] done")
	return nil
}

// removePods removes every pod edgecore created (sandboxes labelled tether.io/managed=true, their containers,
// volumes, logs and cgroups) the way edged itself does, through CRI on the configured runtime.
func removePods(ctx context.Context, cfg *v1alpha2.EdgeCore) (string, error) {
	e := cfg.Modules.Edged
	k := e.TailoredKubeletConfig
	sock, err := socketPath(k.ContainerRuntimeEndpoint)
	if err != nil {
		return "", fmt.Errorf("removing pods: %w", err)
	}
	if !exists(sock) {
		return fmt.Sprintf("container runtime socket %s not found: no pods to remove", sock), nil
	}
	rt, err := kuberuntime.New(kuberuntime.Options{
		Endpoint:       k.ContainerRuntimeEndpoint,
		ImageEndpoint:  k.ImageServiceEndpoint,
		RootDir:        e.RootDirectory,
		LogDir:         k.PodLogsDir,
		CgroupParent:   k.CgroupRoot,
		RequestTimeout: 30 * time.Second,
	})
	if err != nil {
		return "", fmt.Errorf("removing pods: %w", err)
	}
	defer rt.Close()
	uids, err := rt.RunningPods(ctx)
	if err != nil {
		return "", fmt.Errorf("removing pods: %w", err)
	}
	var errs []error
	for _, uid := range uids {
		if err := rt.KillPod(ctx, uid, podStopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("removing pods from %s: %w", k.ContainerRuntimeEndpoint, err)
	}
	if len(uids) == 0 {
		return "no pods to remove in " + k.ContainerRuntimeEndpoint, nil
	}
	return fmt.Sprintf("removed %d pods (containers, sandboxes, volumes, logs, cgroups) from %s", len(uids), k.ContainerRuntimeEndpoint), nil
}

// removeFiles deletes what join and edgecore wrote. Directories that are edgecore's alone go entirely;
// shared ones (/etc/kubeedge, /var/lib/kubeedge, ...; cloudcore may live there too) lose edgecore's files and
// go only if that leaves them empty. Under a --root other than /, emptied parents up to the root go too, so a
// test root ends up empty.
func removeFiles(l paths.Layout, cfg *v1alpha2.EdgeCore, haveCfg bool) ([]string, error) {
	kubeedgeDir := filepath.Dir(l.ConfigDir())
	core := edgecore(l)
	files := append([]string{
		core.Config(),
		filepath.Join(kubeedgeDir, "bootstrap-edgecore.conf"),
		caFile(l), certFile(l), keyFile(l), certs.PendingPairFile(certFile(l)),
		core.PIDFile(), core.LogFile(), core.Binary(), core.UnitFile(),
	}, core.Leftovers()...)
	dbs := []string{dbFile(l)}
	var ownDirs []string
	if haveCfg {
		hub := cfg.Modules.EdgeHub
		files = append(files, hub.TLSCAFile, hub.TLSCertFile, hub.TLSPrivateKeyFile)
		if hub.TLSCertFile != "" {
			// A certificate switch that a crash interrupted leaves its journal, which holds a key.
			files = append(files, certs.PendingPairFile(hub.TLSCertFile))
		}
		dbs = append(dbs, cfg.Database.DataSource)
		// Named in the config but perhaps outside the layout: removed only once empty.
		ownDirs = append(ownDirs, cfg.Modules.Edged.RootDirectory, cfg.Modules.Edged.TailoredKubeletConfig.PodLogsDir)
	}
	for _, db := range dbs {
		files = append(files, db, db+"-wal", db+"-shm", db+"-journal")
	}

	var removed []string
	var errs []error
	seen := map[string]bool{}
	for _, f := range files {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		if err := os.Remove(f); err == nil {
			removed = append(removed, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", f, err))
		}
	}
	// Pods whose runtime was already gone still have their tmpfs and subPath bind mounts; removing through a bind
	// would delete the host directory behind it.
	roots := []string{l.KubeletDir()}
	if haveCfg {
		roots = append(roots, cfg.Modules.Edged.RootDirectory)
	}
	for _, r := range roots {
		if r != "" && exists(r) {
			if err := kuberuntime.UnmountAll(r); err != nil {
				return removed, fmt.Errorf("unmounting pod volumes under %s before removing it: %w", r, err)
			}
		}
	}
	for _, d := range []string{l.KubeletDir(), l.PodLogsDir()} {
		if !exists(d) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
			continue
		}
		removed = append(removed, d)
		seen[d] = true
	}
	for _, d := range append(ownDirs, l.CertsDir(), l.CADir(), l.ConfigDir(), kubeedgeDir, l.StateDir(), l.LogDir(), l.RunDir()) {
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		if removeIfEmpty(d) {
			removed = append(removed, d)
		}
	}
	if !daemon.HostRoot(l) {
		pruneParents(l.Root, removed)
	}
	return removed, errors.Join(errs...)
}

// removeIfEmpty is rmdir: it never deletes anything but an empty directory.
func removeIfEmpty(dir string) bool {
	return syscall.Rmdir(dir) == nil
}

// pruneParents removes the directories that removing paths left empty, up to but not including root.
func pruneParents(root string, removed []string) {
	root = filepath.Clean(root)
	for _, p := range removed {
		for d := filepath.Dir(p); strings.HasPrefix(d, root+string(filepath.Separator)); d = filepath.Dir(d) {
			if !removeIfEmpty(d) {
				break
			}
		}
	}
}
