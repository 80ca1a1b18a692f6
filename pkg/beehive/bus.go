// Package beehive is the in-process message bus that connects modules, after
// KubeEdge's beehive framework: each enabled module gets a buffered mailbox,
// messages are addressed by module name or by group, and synchronous calls
// are correlated by header.parent_msg_id.
//
// A Bus is an ordinary value with no package-level state, so tests and
// processes can run several side by side. Modules typically receive the
// *Bus through their constructor and call Receive with their own name.
package beehive

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// Defaults.
const (
	DefaultMailboxSize = 1024
	DefaultSyncTimeout = 30 * time.Second
	// stopLogInterval is how often Run names the modules it still waits for.
	stopLogInterval = 5 * time.Second
)

// Errors returned by the bus; match them with errors.Is.
var (
	ErrUnknownModule = errors.New("beehive: unknown or disabled module")
	ErrUnknownGroup  = errors.New("beehive: group has no enabled modules")
	ErrStopped       = errors.New("beehive: bus stopped")
	ErrTimeout       = errors.New("beehive: timed out waiting for response")
	ErrNoWaiter      = errors.New("beehive: no sender waiting for response")
)

// errTimeoutCause also matches context.DeadlineExceeded, so callers that
// only check the context error keep working.
var errTimeoutCause = fmt.Errorf("%w (%w)", ErrTimeout, context.DeadlineExceeded)

// Options configures a Bus.
type Options struct {
	// MailboxSize is the capacity of each module's mailbox (default 1024).
	MailboxSize int
}

// Bus routes messages between registered modules.
type Bus struct {
	mailboxSize int
	// stopped is closed when Run begins shutting down; it is the "closed
	// mailbox" signal. The mailbox channels themselves are never closed,
	// because a concurrent Send would then panic.
	stopped chan struct{}

	mu      sync.RWMutex
	started bool
	order   []*entry // registration order, for deterministic start and fan-out
	modules map[string]*entry
	groups  map[string][]*entry

	waitMu  sync.Mutex
	waiters map[string]*waiter
}

type entry struct {
	module  Module
	enabled bool
	mailbox chan model.Message
}

// waiter collects the responses a sync send expects. ch has room for all of
// them, so SendResp never blocks.
type waiter struct {
	ch        chan model.Message
	remaining int
}

// New returns an empty bus.
func New(opts Options) *Bus {
	if opts.MailboxSize <= 0 {
		opts.MailboxSize = DefaultMailboxSize
	}
	return &Bus{
		mailboxSize: opts.MailboxSize,
		stopped:     make(chan struct{}),
		modules:     make(map[string]*entry),
		groups:      make(map[string][]*entry),
		waiters:     make(map[string]*waiter),
	}
}

// Register adds m. Enabled modules get their mailbox now, so messages sent
// before Run are buffered rather than lost. Registration closes once Run
// has been called.
func (b *Bus) Register(m Module) error {
	if m == nil {
		return errors.New("register module: nil module")
	}
	name := m.Name()
	if name == "" {
		return fmt.Errorf("register module of type %T: empty name", m)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return fmt.Errorf("register module %q: bus already running", name)
	}
	if _, dup := b.modules[name]; dup {
		return fmt.Errorf("register module %q: name already registered", name)
	}
	e := &entry{module: m, enabled: m.Enable()}
	if e.enabled {
		e.mailbox = make(chan model.Message, b.mailboxSize)
		if g := m.Group(); g != "" {
			b.groups[g] = append(b.groups[g], e)
		}
	}
	b.modules[name] = e
	b.order = append(b.order, e)
	klog.V(2).InfoS("Registered module", "module", name, "group", m.Group(), "enabled", e.enabled)
	return nil
}

// Run starts every enabled module, blocks until ctx is done or a module has
// failed for good, then stops the bus and waits for all module goroutines to
// return. It returns the failure (wrapping ErrModuleFailed), or nil. It can be
// called once.
func (b *Bus) Run(parent context.Context) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("run bus: already started")
	}
	b.started = true
	var mods []Module
	for _, e := range b.order {
		if e.enabled {
			mods = append(mods, e.module)
		} else {
			klog.InfoS("Module disabled, not starting", "module", e.module.Name())
		}
	}
	b.mu.Unlock()

	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	exited := make(chan string, len(mods))
	for _, m := range mods {
		go func() {
			defer func() { exited <- m.Name() }()
			if err := supervise(ctx, m); err != nil {
				cancel(err)
			}
		}()
	}

	<-ctx.Done()
	failure := context.Cause(ctx)
	if parent.Err() != nil || !errors.Is(failure, ErrModuleFailed) {
		failure = nil
	}
	klog.InfoS("Stopping bus", "cause", context.Cause(ctx))
	close(b.stopped)

	running := make(map[string]bool, len(mods))
	for _, m := range mods {
		running[m.Name()] = true
	}
	tick := time.NewTicker(stopLogInterval)
	defer tick.Stop()
	for len(running) > 0 {
		select {
		case name := <-exited:
			delete(running, name)
		case <-tick.C:
			names := make([]string, 0, len(running))
			for n := range running {
				names = append(names, n)
			}
			slices.Sort(names)
			klog.InfoS("Waiting for modules to stop", "modules", names)
		}
	}

	for _, e := range b.order {
		if n := len(e.mailbox); n > 0 {
			klog.InfoS("Discarding undelivered messages", "module", e.module.Name(), "count", n)
		}
	}
	klog.InfoS("Bus stopped")
	return failure
}

// Send puts msg into module's mailbox, blocking while it is full.
func (b *Bus) Send(ctx context.Context, module string, msg model.Message) error {
	e, err := b.lookup(module)
	if err != nil {
		return fmt.Errorf("send message %s: %w", msg.Header.ID, err)
	}
	return b.put(ctx, e, msg)
}

// Receive takes the next message from module's mailbox, blocking while it
// is empty.
func (b *Bus) Receive(ctx context.Context, module string) (model.Message, error) {
	e, err := b.lookup(module)
	if err != nil {
		return model.Message{}, fmt.Errorf("receive: %w", err)
	}
	// Checked first because select picks randomly among ready cases.
	select {
	case <-b.stopped:
		return model.Message{}, fmt.Errorf("receive for module %q: %w", module, ErrStopped)
	default:
	}
	select {
	case msg := <-e.mailbox:
		return msg, nil
	case <-ctx.Done():
		return model.Message{}, fmt.Errorf("receive for module %q: %w", module, context.Cause(ctx))
	case <-b.stopped:
		return model.Message{}, fmt.Errorf("receive for module %q: %w", module, ErrStopped)
	}
}

// Serve is a module's main loop: it hands each message of module's mailbox
// to handle, one at a time and in order, until ctx is done or the bus
// stops, which both end it with nil. Any other receive error (an unknown
// module) is returned.
func (b *Bus) Serve(ctx context.Context, module string, handle func(model.Message)) error {
	for {
		msg, err := b.Receive(ctx, module)
		switch {
		case err == nil:
			handle(msg)
		case ctx.Err() != nil, errors.Is(err, ErrStopped):
			return nil
		default:
			return fmt.Errorf("serving %s: %w", module, err)
		}
	}
}

// Pending is the number of messages waiting in module's mailbox, 0 for an unknown module. A module that can
// handle several messages at once (one database commit for many) asks it whether more are coming.
func (b *Bus) Pending(module string) int {
	e, err := b.lookup(module)
	if err != nil {
		return 0
	}
	return len(e.mailbox)
}

// SendSync sets header.sync, sends msg to module and waits for the response
// whose parent_msg_id is msg's id. timeout <= 0 means DefaultSyncTimeout;
// it covers both enqueueing and waiting. On timeout the error wraps
// ErrTimeout (and context.DeadlineExceeded).
func (b *Bus) SendSync(ctx context.Context, module string, msg model.Message, timeout time.Duration) (model.Message, error) {
	e, err := b.lookup(module)
	if err != nil {
		return model.Message{}, fmt.Errorf("send sync message %s: %w", msg.Header.ID, err)
	}
	resps, err := b.sendSync(ctx, []*entry{e}, msg, timeout)
	if err != nil {
		return model.Message{}, fmt.Errorf("send sync to module %q: %w", module, err)
	}
	return resps[0], nil
}

// SendResp hands resp to the SendSync or SendToGroupSync call waiting for
// header.parent_msg_id. It never blocks; with no such caller (unknown id,
// already answered, or timed out) the response is dropped and the error
// wraps ErrNoWaiter.
func (b *Bus) SendResp(resp model.Message) error {
	pid := resp.Header.ParentID
	b.waitMu.Lock()
	w, ok := b.waiters[pid]
	if ok {
		w.ch <- resp
		if w.remaining--; w.remaining == 0 {
			delete(b.waiters, pid)
		}
	}
	b.waitMu.Unlock()
	if !ok {
		klog.V(2).InfoS("No sender is waiting for response",
			"parentID", pid, "msgID", resp.Header.ID, "source", resp.Router.Source, "resource", resp.Router.Resource)
		return fmt.Errorf("send response %s for parent %q: %w", resp.Header.ID, pid, ErrNoWaiter)
	}
	return nil
}

// SendToGroup delivers a copy of msg to every enabled member of group,
// concurrently so that one full mailbox does not delay the others. It
// returns once every copy is enqueued or failed.
func (b *Bus) SendToGroup(ctx context.Context, group string, msg model.Message) error {
	members, err := b.members(group)
	if err != nil {
		return fmt.Errorf("send message %s to group: %w", msg.Header.ID, err)
	}
	return b.fanOut(ctx, members, msg)
}

// SendToGroupSync sends a copy of msg (same id, header.sync set) to every
// member of group and waits until each has answered via SendResp.
// Responses are returned in arrival order.
func (b *Bus) SendToGroupSync(ctx context.Context, group string, msg model.Message, timeout time.Duration) ([]model.Message, error) {
	members, err := b.members(group)
	if err != nil {
		return nil, fmt.Errorf("send sync message %s to group: %w", msg.Header.ID, err)
	}
	resps, err := b.sendSync(ctx, members, msg, timeout)
	if err != nil {
		return nil, fmt.Errorf("send sync to group %q: %w", group, err)
	}
	return resps, nil
}

func (b *Bus) sendSync(ctx context.Context, targets []*entry, msg model.Message, timeout time.Duration) ([]model.Message, error) {
	id := msg.Header.ID
	if id == "" {
		return nil, errors.New("message has no id to correlate the response with")
	}
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeoutCause)
	defer cancel()

	w := &waiter{ch: make(chan model.Message, len(targets)), remaining: len(targets)}
	b.waitMu.Lock()
	if _, dup := b.waiters[id]; dup {
		b.waitMu.Unlock()
		return nil, fmt.Errorf("message %s: a sync send with this id is already waiting", id)
	}
	b.waiters[id] = w
	b.waitMu.Unlock()
	defer func() {
		b.waitMu.Lock()
		if b.waiters[id] == w {
			delete(b.waiters, id)
		}
		b.waitMu.Unlock()
	}()

	msg.Header.Sync = true
	if err := b.fanOut(ctx, targets, msg); err != nil {
		return nil, err
	}
	resps := make([]model.Message, 0, len(targets))
	for len(resps) < len(targets) {
		select {
		case r := <-w.ch:
			resps = append(resps, r)
		case <-ctx.Done():
			return nil, fmt.Errorf("message %s: got %d of %d responses: %w", id, len(resps), len(targets), context.Cause(ctx))
		case <-b.stopped:
			return nil, fmt.Errorf("message %s: %w", id, ErrStopped)
		}
	}
	return resps, nil
}

// fanOut sends to all targets and waits for every send to finish.
func (b *Bus) fanOut(ctx context.Context, targets []*entry, msg model.Message) error {
	if len(targets) == 1 {
		return b.put(ctx, targets[0], msg)
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, e := range targets {
		// Each member gets its own copy so one cannot alter another's.
		c := *msg.Clone()
		wg.Go(func() { errs[i] = b.put(ctx, e, c) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (b *Bus) put(ctx context.Context, e *entry, msg model.Message) error {
	name := e.module.Name()
	select {
	case <-b.stopped:
		return fmt.Errorf("send message %s to module %q: %w", msg.Header.ID, name, ErrStopped)
	default:
	}
	select {
	case e.mailbox <- msg:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("send message %s to module %q: %w", msg.Header.ID, name, context.Cause(ctx))
	case <-b.stopped:
		return fmt.Errorf("send message %s to module %q: %w", msg.Header.ID, name, ErrStopped)
	}
}

func (b *Bus) lookup(module string) (*entry, error) {
	b.mu.RLock()
	e, ok := b.modules[module]
	b.mu.RUnlock()
	if !ok || !e.enabled {
		return nil, fmt.Errorf("module %q: %w", module, ErrUnknownModule)
	}
	return e, nil
}

func (b *Bus) members(group string) ([]*entry, error) {
	b.mu.RLock()
	members := b.groups[group]
	b.mu.RUnlock()
	if len(members) == 0 {
		return nil, fmt.Errorf("group %q: %w", group, ErrUnknownGroup)
	}
	return members, nil
}
