package kuberuntime

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podRuntime is what the runtime holds for one pod: every sandbox and container, newest first (highest attempt
// or restart count).
type podRuntime struct {
	sandboxes  []*runtimeapi.PodSandbox
	containers []*containerRecord
	// sandboxIP is the pod network address of the newest sandbox ("" for hostNetwork or when unknown).
	sandboxIP string
}

// containerRecord is a listed container; status is filled for the two newest of each name, which is all that
// decisions and the API status need.
type containerRecord struct {
	c      *runtimeapi.Container
	status *runtimeapi.ContainerStatus
}

func (r *containerRecord) id() string          { return r.c.GetId() }
func (r *containerRecord) name() string        { return r.c.GetLabels()[LabelContainerName] }
func (r *containerRecord) sandboxID() string   { return r.c.GetPodSandboxId() }
func (r *containerRecord) hash() string        { return r.c.GetAnnotations()[AnnotationContainerHash] }
func (r *containerRecord) restartCount() int32 { return restartCountOf(r.c) }

func (r *containerRecord) state() runtimeapi.ContainerState {
	if r.status != nil {
		return r.status.GetState()
	}
	return r.c.GetState()
}

// exited counts UNKNOWN as exited: the kubelet does too, and such a container is not serving anyway.
func (r *containerRecord) exited() bool {
	s := r.state()
	return s == runtimeapi.ContainerState_CONTAINER_EXITED || s == runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func (r *containerRecord) exitCode() int32 {
	if r.status == nil || r.state() == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
		return 137
	}
	return r.status.GetExitCode()
}

// finishedAt falls back to the creation time: a container that never ran still needs a back-off reference.
func (r *containerRecord) finishedAt() time.Time {
	if ns := r.status.GetFinishedAt(); ns > 0 {
		return time.Unix(0, ns)
	}
	return time.Unix(0, r.c.GetCreatedAt())
}

func (p *podRuntime) newestSandbox() *runtimeapi.PodSandbox {
	if len(p.sandboxes) == 0 {
		return nil
	}
	return p.sandboxes[0]
}

// byName returns the containers with that name, newest first.
func (p *podRuntime) byName(name string) []*containerRecord {
	var out []*containerRecord
	for _, r := range p.containers {
		if r.name() == name {
			out = append(out, r)
		}
	}
	return out
}

func (p *podRuntime) latest(name string) *containerRecord {
	for _, r := range p.containers {
		if r.name() == name {
			return r
		}
	}
	return nil
}

func managedSelector(uid types.UID) map[string]string {
	sel := map[string]string{LabelManaged: managedValue}
	if uid != "" {
		sel[LabelPodUID] = string(uid)
	}
	return sel
}

// listSandboxes lists our sandboxes, of one pod or (uid "") of all, newest first.
func (m *Manager) listSandboxes(ctx context.Context, uid types.UID) ([]*runtimeapi.PodSandbox, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: managedSelector(uid)},
	})
	if err != nil {
		return nil, fmt.Errorf("list sandboxes of pod %q: %w", uid, err)
	}
	items := resp.GetItems()
	// Attempts order sandboxes, creation times only break ties: edge devices without a real-time clock boot
	// with the wrong time, and a new sandbox must not sort behind the one it replaced.
	slices.SortStableFunc(items, func(a, b *runtimeapi.PodSandbox) int {
		return cmp.Or(cmp.Compare(b.GetMetadata().GetAttempt(), a.GetMetadata().GetAttempt()),
			cmp.Compare(b.GetCreatedAt(), a.GetCreatedAt()))
	})
	return items, nil
}

// listContainers lists our containers, of one pod or (uid "") of all, newest first.
func (m *Manager) listContainers(ctx context.Context, uid types.UID) ([]*runtimeapi.Container, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.ListContainers(cctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: managedSelector(uid)},
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of pod %q: %w", uid, err)
	}
	items := resp.GetContainers()
	// Restart counts order the instances of a container, for the same reason as sandbox attempts.
	slices.SortStableFunc(items, func(a, b *runtimeapi.Container) int {
		return cmp.Or(cmp.Compare(restartCountOf(b), restartCountOf(a)), cmp.Compare(b.GetCreatedAt(), a.GetCreatedAt()))
	})
	return items, nil
}

// podState reads the pod's sandboxes and containers. withIP asks the newest sandbox for its pod network
// address, which only non-hostNetwork pods have.
func (m *Manager) podState(ctx context.Context, uid types.UID, withIP bool) (*podRuntime, error) {
	sbs, err := m.listSandboxes(ctx, uid)
	if err != nil {
		return nil, err
	}
	cs, err := m.listContainers(ctx, uid)
	if err != nil {
		return nil, err
	}
	p := &podRuntime{sandboxes: sbs}
	perName := map[string]int{}
	for _, c := range cs {
		r := &containerRecord{c: c}
		name := r.name()
		if perName[name] < 2 {
			st, err := m.containerStatus(ctx, c.GetId())
			switch {
			case isNotFound(err):
				// Removed between list and status (GC or a concurrent kill): not part of the pod any more.
				continue
			case err != nil:
				return nil, err
			}
			r.status = st
		}
		perName[name]++
		p.containers = append(p.containers, r)
	}
	if sb := p.newestSandbox(); withIP && sb != nil {
		st, err := m.sandboxStatus(ctx, sb.GetId())
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		p.sandboxIP = st.GetNetwork().GetIp()
	}
	return p, nil
}

func (m *Manager) containerStatus(ctx context.Context, id string) (*runtimeapi.ContainerStatus, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, fmt.Errorf("status of container %s: %w", id, err)
	}
	return resp.GetStatus(), nil
}

func (m *Manager) sandboxStatus(ctx context.Context, id string) (*runtimeapi.PodSandboxStatus, error) {
	cctx, cancel := m.callCtx(ctx)
	defer cancel()
	resp, err := m.rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		return nil, fmt.Errorf("status of sandbox %s: %w", id, err)
	}
	return resp.GetStatus(), nil
}
