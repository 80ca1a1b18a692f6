package edgecontroller

import (
	"context"
	"runtime/debug"
	"sync"

	"k8s.io/klog/v2"
)

// pool runs one kind of edge request on at most workers goroutines with at most size requests waiting. Workers
// start on demand and exit when the queue is empty: KubeEdge's defaults size some kinds at one worker per node, and
// idle kinds should cost nothing.
type pool struct {
	name    string
	queue   chan func(context.Context)
	workers int
	wg      *sync.WaitGroup

	mu     sync.Mutex
	active int
}

func newPool(name string, size, workers int, wg *sync.WaitGroup) *pool {
	return &pool{name: name, queue: make(chan func(context.Context), size), workers: workers, wg: wg}
}

// submit queues job and reports false when the queue is full. It must be called from one goroutine that stops
// calling before wg is waited on.
func (p *pool) submit(ctx context.Context, job func(context.Context)) bool {
	select {
	case p.queue <- job:
	default:
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active < p.workers {
		p.active++
		p.wg.Go(func() { p.work(ctx) })
	}
	return true
}

func (p *pool) work(ctx context.Context) {
	for {
		if ctx.Err() == nil {
			select {
			case job := <-p.queue:
				p.run(ctx, job)
				continue
			default:
			}
		}
		// Checked under the lock submit takes after queueing, so a job queued meanwhile either sees this
		// worker still counted (and it stays) or starts a new one.
		p.mu.Lock()
		if len(p.queue) == 0 || ctx.Err() != nil {
			p.active--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// run isolates a job: its input comes from edge nodes, and a bug triggered by one must not take cloudcore down.
func (p *pool) run(ctx context.Context, job func(context.Context)) {
	defer func() {
		if v := recover(); v != nil {
			klog.ErrorS(nil, "Recovered panic in edge request handler", "pool", p.name, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	job(ctx)
}
