package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// KillPod stops the pod's containers (all at once, each with the full grace period), then its sandboxes, and
// removes them with the pod's volumes, logs and cgroups. It is idempotent: after a partial failure, calling it
// again finishes the job. Files and cgroups stay while anything of the pod could still run.
func (m *Manager) KillPod(ctx context.Context, uid types.UID, gracePeriod time.Duration) error {
	unlock := m.locks.lock(uid)
	defer unlock()
	sbs, err := m.listSandboxes(ctx, uid)
	if err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	cs, err := m.listContainers(ctx, uid)
	if err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, c := range cs {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			continue
		}
		wg.Go(func() {
			if err := m.stopContainer(ctx, c.GetId(), gracePeriod); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	logDirs := map[string]bool{}
	for _, sb := range sbs {
		md := sb.GetMetadata()
		logDirs[m.podLogDir(md.GetNamespace(), md.GetName(), md.GetUid())] = true
		// Stopping also kills containers that ignored SIGTERM past the grace period.
		if err := m.stopSandbox(ctx, sb.GetId()); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.removeSandbox(ctx, sb.GetId()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range cs {
		l := c.GetLabels()
		logDirs[m.podLogDir(l[LabelPodNamespace], l[LabelPodName], string(uid))] = true
		// Containers of a sandbox that is already gone are not removed with it.
		if err := m.removeContainer(ctx, c.GetId()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kill pod %s: %w", uid, errors.Join(errs...))
	}

	// Secret tmpfs and subPath binds are unmounted first; removal never goes through a mount.
	if err := removePodDir(m.podDir(string(uid))); err != nil {
		errs = append(errs, fmt.Errorf("remove pod directory: %w", err))
	}
	for dir := range logDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove pod logs: %w", err))
		}
	}
	if err := m.removePodCgroups(ctx, uid); err != nil {
		errs = append(errs, err)
	}
	m.crash.forgetPrefix(string(uid) + "/")
	m.pulls.forgetPrefix(string(uid) + "/")
	m.markSynced(uid, false)
	if len(errs) > 0 {
		return fmt.Errorf("kill pod %s: %w", uid, errors.Join(errs...))
	}
	klog.V(2).InfoS("Pod killed and removed", "podUID", uid, "sandboxes", len(sbs), "containers", len(cs))
	return nil
}

// removePodCgroups removes {CgroupParent}/pod{uid} from every hierarchy: containerd removes only the container
// cgroups, and on cgroup v1 each controller (and the "unified" v2 mount of hybrid hosts) has its own copy.
func (m *Manager) removePodCgroups(ctx context.Context, uid types.UID) error {
	if m.opts.CgroupParent == "" {
		return nil
	}
	rel := path.Join(m.opts.CgroupParent, "pod"+string(uid))
	root := m.opts.CgroupRoot
	// The root itself is the hierarchy on a pure cgroup v2 host.
	bases := []string{root}
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("list cgroup hierarchies in %s: %w", root, err)
	}
	for _, e := range entries {
		// Symlinks (cpu -> cpu,cpuacct) are skipped: their target is listed too.
		if e.IsDir() {
			bases = append(bases, filepath.Join(root, e.Name()))
		}
	}
	var errs []error
	for _, b := range bases {
		if err := removeCgroupDir(ctx, filepath.Join(b, rel)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupDir removes a cgroup and its children bottom-up. Cgroup directories are removed with rmdir even
// though they list files; a cgroup still holding exiting processes is busy for a moment, so that is retried.
func removeCgroupDir(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupDir(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for attempt := 0; ; attempt++ {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || attempt == 20 {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("remove cgroup %s: %w", dir, ctx.Err())
		case <-t.C:
		}
	}
}

// RunningPods lists the UIDs of pods that have anything on this node: a sandbox or container of ours in the
// runtime, or a pod directory (volumes) left by a pod deleted while edgecore was down. Edged adopts the ones it
// still has and calls KillPod for the others, which removes all of it.
func (m *Manager) RunningPods(ctx context.Context) ([]types.UID, error) {
	sbs, err := m.listSandboxes(ctx, "")
	if err != nil {
		return nil, err
	}
	cs, err := m.listContainers(ctx, "")
	if err != nil {
		return nil, err
	}
	uids := map[types.UID]bool{}
	for _, sb := range sbs {
		if u := sb.GetLabels()[LabelPodUID]; u != "" {
			uids[types.UID(u)] = true
		}
	}
	for _, c := range cs {
		if u := c.GetLabels()[LabelPodUID]; u != "" {
			uids[types.UID(u)] = true
		}
	}
	dirs, err := os.ReadDir(filepath.Join(m.opts.RootDir, "pods"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("list pod directories: %w", err)
	}
	for _, d := range dirs {
		if d.IsDir() {
			uids[types.UID(d.Name())] = true
		}
	}
	return slices.Sorted(maps.Keys(uids)), nil
}

// GarbageCollect removes, per pod, exited containers beyond the newest exited one of each name (kept for its
// logs, exit status and restart count), then sandboxes that are not ready and hold no containers any more —
// except the newest sandbox of a pod synced since start, whose attempt number the next sandbox continues.
// Whole pods are removed by KillPod, never here: only Edged knows which pods are deleted.
func (m *Manager) GarbageCollect(ctx context.Context) error {
	sbs, err := m.listSandboxes(ctx, "")
	if err != nil {
		return fmt.Errorf("garbage collection: %w", err)
	}
	cs, err := m.listContainers(ctx, "")
	if err != nil {
		return fmt.Errorf("garbage collection: %w", err)
	}
	uids := map[types.UID]bool{}
	for _, sb := range sbs {
		uids[types.UID(sb.GetLabels()[LabelPodUID])] = true
	}
	for _, c := range cs {
		uids[types.UID(c.GetLabels()[LabelPodUID])] = true
	}
	var errs []error
	for _, uid := range slices.Sorted(maps.Keys(uids)) {
		if err := m.gcPod(ctx, uid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) gcPod(ctx context.Context, uid types.UID) error {
	unlock := m.locks.lock(uid)
	defer unlock()
	// Listed again under the pod's lock: a sync may have changed it since the node-wide listing.
	sbs, err := m.listSandboxes(ctx, uid)
	if err != nil {
		return err
	}
	cs, err := m.listContainers(ctx, uid)
	if err != nil {
		return err
	}
	var errs []error
	left := map[string]int{} // containers remaining per sandbox
	keptExited := map[string]bool{}
	removed := 0
	for _, c := range cs { // newest first
		name := c.GetLabels()[LabelContainerName]
		exited := c.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED || c.GetState() == runtimeapi.ContainerState_CONTAINER_UNKNOWN
		if exited && keptExited[name] {
			if err := m.removeContainer(ctx, c.GetId()); err != nil {
				errs = append(errs, err)
			} else {
				removed++
				continue
			}
		}
		if exited {
			keptExited[name] = true
		}
		left[c.GetPodSandboxId()]++
	}
	synced := m.isSynced(uid)
	removedSandboxes := 0
	for i, sb := range sbs { // newest first
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY || left[sb.GetId()] > 0 || (i == 0 && synced) {
			continue
		}
		if err := m.removeSandbox(ctx, sb.GetId()); err != nil {
			errs = append(errs, err)
			continue
		}
		removedSandboxes++
	}
	if removed+removedSandboxes > 0 {
		klog.V(2).InfoS("Garbage collected", "podUID", uid, "containers", removed, "sandboxes", removedSandboxes)
	}
	if len(errs) > 0 {
		return fmt.Errorf("garbage collection of pod %s: %w", uid, errors.Join(errs...))
	}
	return nil
}
