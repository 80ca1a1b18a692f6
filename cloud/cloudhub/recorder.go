package cloudhub

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
)

// Defaults of the ObjectSync recorder.
const (
	// DefaultSyncCallTimeout bounds one ObjectSync read or write, so a hung
	// API server cannot hold a delivery worker.
	DefaultSyncCallTimeout = 5 * time.Second
	recorderWorkers        = 4
	// recorderDrain is how long Start's shutdown waits for queued records.
	recorderDrain = 2 * time.Second
)

// recordOp is the newest thing to write into one (Cluster)ObjectSync.
type recordOp struct {
	nodeID string
	q      *queuedMsg
	// hooks are the ACKed messages waiting for this record, for ackHook.
	hooks []*queuedMsg
}

// covers reports whether writing w records what m asked for.
func covers(w, m *queuedMsg) bool { return w.del || (!m.del && m.rv <= w.rv) }

// recorder writes ObjectSync records off the delivery path: an ACK frees the
// node's delivery slot at once and the record follows, so a slow or hung API
// server delays bookkeeping, never delivery. Writes for the same record
// coalesce to the newest (a delete wins), so a brownout grows the backlog by
// objects, not by messages. A record that lags only costs a duplicate
// delivery later, which the edge ignores.
type recorder struct {
	h *CloudHub

	mu      sync.Mutex
	pending map[string]*recordOp // by namespace/name of the record
	queue   workqueue.TypedRateLimitingInterface[string]
}

func newRecorder(h *CloudHub) *recorder {
	return &recorder{h: h, pending: make(map[string]*recordOp)}
}

func recordKey(q *queuedMsg, nodeID string) string {
	return q.namespace + "/" + v1alpha1.SyncName(nodeID, q.uid)
}

// add queues a record of q for nodeID; an ACKed q is reported to ackHook
// once written.
func (r *recorder) add(nodeID string, q *queuedMsg, acked bool) {
	key := recordKey(q, nodeID)
	r.mu.Lock()
	op := r.pending[key]
	switch {
	case op == nil:
		op = &recordOp{nodeID: nodeID, q: q}
		r.pending[key] = op
	case op.q.del:
	case q.del || q.rv > op.q.rv:
		op.q = q
	}
	if acked {
		op.hooks = append(op.hooks, q)
	}
	queue := r.queue
	r.mu.Unlock()
	if queue != nil {
		queue.Add(key)
	}
}

// has reports whether a record for q is waiting to be written.
func (r *recorder) has(nodeID string, q *queuedMsg) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending[recordKey(q, nodeID)] != nil
}

// run writes records until ctx is done, then gives the backlog a moment.
func (r *recorder) run(ctx context.Context) {
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](r.h.opts.RequeueBaseDelay, r.h.opts.RequeueMaxDelay),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "cloudhub-objectsync"})
	r.mu.Lock()
	r.queue = queue
	for k := range r.pending {
		queue.Add(k) // left from an earlier Start
	}
	r.mu.Unlock()

	// Writes use their own context so that records queued just before a
	// shutdown still land within recorderDrain.
	writeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	for range recorderWorkers {
		wg.Go(func() {
			for r.writeNext(writeCtx, queue) {
			}
		})
	}
	<-ctx.Done()
	deadline := time.Now().Add(recorderDrain)
	for queue.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	queue.ShutDown()
	cancel()
	wg.Wait()
	r.mu.Lock()
	r.queue = nil
	left := len(r.pending)
	r.mu.Unlock()
	if left > 0 {
		klog.InfoS("ObjectSync records not written before shutdown; SyncController resends what they would have spared", "records", left)
	}
}

func (r *recorder) writeNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	r.mu.Lock()
	op := r.pending[key]
	var q *queuedMsg
	if op != nil {
		q = op.q
	}
	r.mu.Unlock()
	if op == nil {
		queue.Forget(key)
		return true
	}
	callCtx, cancel := context.WithTimeout(ctx, r.h.opts.SyncCallTimeout)
	err := r.h.recordAck(callCtx, op.nodeID, q)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			klog.ErrorS(err, "Cannot record ACK in ObjectSync; retrying", "node", op.nodeID, "msg", q.msg.String())
			queue.AddRateLimited(key)
		}
		return true
	}
	queue.Forget(key)
	r.mu.Lock()
	var done []*queuedMsg
	if cur := r.pending[key]; cur == op {
		keep := cur.hooks[:0]
		for _, m := range cur.hooks {
			if covers(q, m) {
				done = append(done, m)
			} else {
				keep = append(keep, m)
			}
		}
		cur.hooks = keep
		if cur.q == q {
			delete(r.pending, key)
		} else {
			queue.Add(key) // superseded while written
		}
	}
	r.mu.Unlock()
	if r.h.ackHook != nil {
		for _, m := range done {
			r.h.ackHook(op.nodeID, m.msg.Header.ID)
		}
	}
	return true
}
