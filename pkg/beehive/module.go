package beehive

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"k8s.io/klog/v2"
)

// Module is a unit of work on the bus. Its name is its mailbox address and
// must be unique; its group is the address used by SendToGroup.
type Module interface {
	Name() string
	Group() string
	// Enable is read once, at registration. Disabled modules get no mailbox
	// and are never started.
	Enable() bool
	// Start runs the module's main loop and must return once ctx is done.
	Start(ctx context.Context) error
}

// Restartable is implemented by modules that choose how they are restarted
// when Start returns. Modules without one get DefaultRestartPolicy.
type Restartable interface {
	RestartPolicy() *RestartPolicy
}

// RestartType says when a module is restarted.
type RestartType int

const (
	// RestartAlways restarts after every return from Start.
	RestartAlways RestartType = iota + 1
	// RestartOnFailure restarts only after an error or a panic.
	RestartOnFailure
)

// Defaults applied to zero RestartPolicy fields, as in KubeEdge.
const (
	DefaultRestartInterval      = time.Second
	DefaultRestartIntervalLimit = 30 * time.Second
)

// DefaultRestartPolicy applies to modules that do not choose one: a failure
// or panic is retried with back-off (1, 2, 4, 8, 16 s), which covers a
// passing fault; a module that still fails has a lasting one, and the bus
// stops so that the process exits and its service manager restarts it whole,
// rather than running on without the module.
func DefaultRestartPolicy() *RestartPolicy {
	return &RestartPolicy{Type: RestartOnFailure, Retries: 5, Interval: time.Second, GrowthRate: 2}
}

// ErrModuleFailed is wrapped by Run's error when a module failed for good.
var ErrModuleFailed = errors.New("beehive: module failed for good")

// RestartPolicy controls how a module is restarted.
type RestartPolicy struct {
	Type RestartType
	// Retries bounds the number of restarts; 0 means unlimited.
	Retries int
	// Interval is the wait before the first restart (default 1s).
	Interval time.Duration
	// GrowthRate multiplies the interval after each restart when > 1.
	GrowthRate float64
	// IntervalLimit caps the interval (default 30s).
	IntervalLimit time.Duration
	// ErrorHandler, if set, is called once when the module failed and will
	// not be restarted again (retries exhausted). It runs on the module's
	// supervisor goroutine, so it delays shutdown if it blocks.
	ErrorHandler func(module string, err error)
}

// ErrPanic is wrapped by the error of a Start call that panicked.
var ErrPanic = errors.New("beehive: module panicked")

// supervise runs m until it ends for good or ctx is done, applying its
// restart policy. It returns the error that ended m for good (its last
// failure once no restart is left), or nil.
func supervise(ctx context.Context, m Module) error {
	name := m.Name()
	policy := *DefaultRestartPolicy()
	if r, ok := m.(Restartable); ok {
		if p := r.RestartPolicy(); p != nil {
			policy = *p
		}
	}
	if policy.Interval <= 0 {
		policy.Interval = DefaultRestartInterval
	}
	if policy.IntervalLimit <= 0 {
		policy.IntervalLimit = DefaultRestartIntervalLimit
	}
	interval := min(policy.Interval, policy.IntervalLimit)

	for restarts := 0; ; restarts++ {
		klog.InfoS("Starting module", "module", name, "restarts", restarts)
		err := runOnce(ctx, m)
		if ctx.Err() != nil {
			klog.InfoS("Module stopped", "module", name, "err", err)
			return nil
		}
		if err != nil {
			klog.ErrorS(err, "Module failed", "module", name, "restarts", restarts)
		} else {
			klog.InfoS("Module exited", "module", name, "restarts", restarts)
		}

		restart := policy.Type == RestartAlways || (policy.Type == RestartOnFailure && err != nil)
		if restart && policy.Retries > 0 && restarts >= policy.Retries {
			klog.InfoS("Module restart retries exhausted", "module", name, "retries", policy.Retries)
			restart = false
		}
		if !restart {
			if err == nil {
				return nil
			}
			if policy.ErrorHandler != nil {
				policy.ErrorHandler(name, err)
			}
			return fmt.Errorf("%w: %q after %d restarts: %w", ErrModuleFailed, name, restarts, err)
		}

		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if policy.GrowthRate > 1 {
			interval = min(time.Duration(float64(interval)*policy.GrowthRate), policy.IntervalLimit)
		}
	}
}

// runOnce turns a panic into an error so one broken module cannot take the
// process down with it.
func runOnce(ctx context.Context, m Module) (err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Recovered panic in module", "module", m.Name(), "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %q: %v", ErrPanic, m.Name(), r)
		}
	}()
	return m.Start(ctx)
}
