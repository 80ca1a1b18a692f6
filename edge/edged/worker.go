package edged

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// work is what a worker has been asked to do; requests coalesce.
type work uint8

const (
	// workSync runs the pod through the runtime, then reports its status.
	workSync work = 1 << iota
	// workFlush sends held status or deletion without touching the runtime.
	workFlush
)

// podWorker serialises everything done to one pod. Fields under mu are written by the message and
// housekeeping goroutines; the rest belong to the worker goroutine.
type podWorker struct {
	pm   *podManager
	uid  types.UID
	wake chan struct{}

	mu      sync.Mutex
	pod     *corev1.Pod
	removed bool   // the cloud deleted the object: kill, send nothing upstream
	grace   *int64 // grace period of the delete, when it carried one
	want    work
	base    corev1.PodStatus // the status the cloud has, as far as edged knows
	baseRV  string

	latest  *corev1.PodStatus
	killed  bool
	lastErr string
	retry   clock.Timer
	backoff time.Duration
}

func newPodWorker(pm *podManager, uid types.UID) *podWorker {
	return &podWorker{pm: pm, uid: uid, wake: make(chan struct{}, 1)}
}

func (w *podWorker) signal(what work) {
	w.mu.Lock()
	w.want |= what
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// update records a newer version of the pod from the cloud or the database.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	old := w.pod
	if old != nil && olderRV(pod.ResourceVersion, old.ResourceVersion) {
		w.mu.Unlock()
		klog.V(4).InfoS("Ignoring stale pod version", "pod", klog.KObj(pod), "resourceVersion", pod.ResourceVersion,
			"have", old.ResourceVersion)
		return
	}
	w.pod = pod
	if !olderRV(pod.ResourceVersion, w.baseRV) {
		w.base, w.baseRV = *pod.Status.DeepCopy(), pod.ResourceVersion
	}
	what := workFlush
	// A status-only change (often the echo of edged's own patch) needs no runtime call.
	// Labels and annotations feed downward-API volumes.
	if old == nil || !equality.Semantic.DeepEqual(old.Spec, pod.Spec) ||
		!maps.Equal(old.Labels, pod.Labels) || !maps.Equal(old.Annotations, pod.Annotations) {
		what = workSync
	}
	w.mu.Unlock()
	w.signal(what)
}

// remove marks the pod deleted in the cloud. final is the object the delete carried, if any.
func (w *podWorker) remove(final *corev1.Pod) {
	w.mu.Lock()
	w.removed = true
	if final != nil && final.DeletionGracePeriodSeconds != nil {
		w.grace = final.DeletionGracePeriodSeconds
	}
	w.mu.Unlock()
	w.signal(workSync)
}

func (w *podWorker) take() (pod *corev1.Pod, removed bool, grace *int64, want work) {
	w.mu.Lock()
	defer w.mu.Unlock()
	want, w.want = w.want, 0
	return w.pod, w.removed, w.grace, want
}

func (w *podWorker) run(ctx context.Context) {
	defer func() {
		if w.retry != nil {
			w.retry.Stop()
		}
	}()
	for {
		var retryC <-chan time.Time
		if w.retry != nil {
			retryC = w.retry.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-retryC:
			w.retry = nil
			w.mu.Lock()
			w.want |= workSync
			w.mu.Unlock()
		}
		pod, removed, grace, want := w.take()
		if pod == nil || want == 0 {
			continue
		}
		if removed || pod.DeletionTimestamp != nil {
			if w.terminate(ctx, pod, removed, grace) {
				w.pm.finish(w, pod.Namespace+"/"+pod.Name)
				return
			}
			continue
		}
		if want&workSync != 0 {
			w.sync(ctx, pod)
		} else {
			w.sendStatus(ctx, pod)
		}
	}
}

func (w *podWorker) sync(ctx context.Context, pod *corev1.Pod) {
	got, err := w.pm.e.rt.SyncPod(ctx, pod, w.pm.getter)
	if ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	base := *w.base.DeepCopy()
	w.mu.Unlock()
	now := metav1.NewTime(w.pm.e.opts.clock.Now())
	st := mergeStatus(pod, w.latest, base, got, now, w.pm.node.hostIP())
	w.latest = &st
	if err != nil {
		// The same failure every resync (a missing image) is logged once.
		if msg := err.Error(); msg != w.lastErr {
			klog.ErrorS(err, "Pod sync incomplete; retrying", "pod", klog.KObj(pod), "podUID", pod.UID)
			w.lastErr = msg
		}
		w.scheduleRetry()
	} else {
		if w.lastErr != "" {
			klog.InfoS("Pod synced", "pod", klog.KObj(pod), "podUID", pod.UID)
		}
		w.lastErr, w.backoff = "", 0
	}
	w.sendStatus(ctx, pod)
}

func (w *podWorker) scheduleRetry() {
	o := w.pm.e.opts
	w.backoff = min(max(2*w.backoff, o.retryMin), o.resyncInterval)
	if w.retry != nil {
		w.retry.Stop()
	}
	w.retry = o.clock.NewTimer(w.backoff)
}

// sendStatus patches the pod's status in the cloud when it differs from what the cloud has. While the cloud
// is unreachable the latest status is kept and sent once it is back.
func (w *podWorker) sendStatus(ctx context.Context, pod *corev1.Pod) {
	if w.latest == nil {
		return
	}
	w.mu.Lock()
	base := *w.base.DeepCopy()
	w.mu.Unlock()
	if equalStatus(base, *w.latest) || !w.pm.link.up() {
		return
	}
	patch, ok, err := podStatusPatch(pod.UID, base, *w.latest)
	if err != nil {
		klog.ErrorS(err, "Cannot build pod status patch", "pod", klog.KObj(pod))
		return
	}
	sent := *w.latest.DeepCopy()
	if ok {
		var obj json.RawMessage
		obj, err = w.pm.meta.patchPodStatus(ctx, pod.Namespace, pod.Name, patch)
		w.pm.link.observe(err)
		switch {
		case err == nil:
			klog.V(3).InfoS("Pod status reported", "pod", klog.KObj(pod), "phase", sent.Phase)
			w.acked(sent, resourceVersionOf(obj))
		case errors.Is(err, errUnreachable):
			klog.V(4).InfoS("Pod status held until the cloud is back", "pod", klog.KObj(pod), "err", err)
		case isNotFound(err) || rejectedWith(err, metav1.StatusReasonConflict, 409, "precondition"):
			// Gone or replaced: the cloud will send the delete; repeating the patch cannot succeed.
			klog.V(2).InfoS("Pod status dropped: the pod is gone from the cloud", "pod", klog.KObj(pod), "err", err)
			w.acked(sent, "")
		default:
			klog.ErrorS(err, "Pod status refused by the cloud; next sync retries", "pod", klog.KObj(pod))
		}
		return
	}
	w.acked(sent, "")
}

// acked records the status as the cloud's.
func (w *podWorker) acked(st corev1.PodStatus, rv string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.base = st
	if rv != "" && !olderRV(rv, w.baseRV) {
		w.baseRV = rv
	}
}

// terminate kills the pod's containers and, if the API object still exists, asks the cloud to delete it. It
// reports whether the worker is done.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod, removed bool, grace *int64) bool {
	if !w.killed {
		gp := gracePeriod(pod, grace)
		klog.InfoS("Killing pod", "pod", klog.KObj(pod), "podUID", pod.UID, "gracePeriod", gp, "deletedInCloud", removed)
		if err := w.pm.e.rt.KillPod(ctx, pod.UID, gp); err != nil {
			if ctx.Err() == nil {
				klog.ErrorS(err, "Cannot kill pod; retrying", "pod", klog.KObj(pod), "podUID", pod.UID)
				w.scheduleRetry()
			}
			return false
		}
		w.killed = true
	}
	if removed {
		return true
	}
	if !w.pm.link.up() {
		klog.V(2).InfoS("Pod deletion held until the cloud is back", "pod", klog.KObj(pod))
		return false
	}
	err := w.pm.meta.deletePod(ctx, pod.Namespace, pod.Name, pod.UID)
	w.pm.link.observe(err)
	switch {
	case err == nil:
		klog.InfoS("Pod deleted", "pod", klog.KObj(pod), "podUID", pod.UID)
		return true
	case errors.Is(err, errUnreachable):
		klog.V(2).InfoS("Pod deletion held until the cloud is back", "pod", klog.KObj(pod), "err", err)
		return false
	default:
		// Already gone, or replaced (UID precondition): nothing left for this worker to delete.
		klog.InfoS("Pod deletion refused; treating the pod as gone", "pod", klog.KObj(pod), "err", err)
		return true
	}
}

func gracePeriod(pod *corev1.Pod, override *int64) time.Duration {
	var s *int64
	switch {
	case override != nil:
		s = override
	case pod.DeletionGracePeriodSeconds != nil:
		s = pod.DeletionGracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		s = pod.Spec.TerminationGracePeriodSeconds
	default:
		return DefaultGracePeriod
	}
	return time.Duration(max(*s, 0)) * time.Second
}

func resourceVersionOf(obj json.RawMessage) string {
	if len(obj) == 0 {
		return ""
	}
	var m struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(obj, &m) != nil {
		return ""
	}
	return m.Metadata.ResourceVersion
}
