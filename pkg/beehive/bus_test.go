package beehive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// testWait bounds waits that should finish almost immediately, so a bug
// fails the test instead of hanging it.
const testWait = 10 * time.Second

type testModule struct {
	name, group string
	disabled    bool
	start       func(ctx context.Context) error
	policy      *RestartPolicy
}

func (m *testModule) Name() string                  { return m.name }
func (m *testModule) Group() string                 { return m.group }
func (m *testModule) Enable() bool                  { return !m.disabled }
func (m *testModule) RestartPolicy() *RestartPolicy { return m.policy }
func (m *testModule) Start(ctx context.Context) error {
	if m.start == nil {
		<-ctx.Done()
		return nil
	}
	return m.start(ctx)
}

func newBus(t *testing.T, opts Options, mods ...Module) *Bus {
	t.Helper()
	b := New(opts)
	for _, m := range mods {
		if err := b.Register(m); err != nil {
			t.Fatalf("Register(%s): %v", m.Name(), err)
		}
	}
	return b
}

// runBus runs b until the test ends and checks that Run returns.
func runBus(t *testing.T, b *Bus) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(testWait):
			t.Fatal("Run did not return after cancel")
		}
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(stop) })
	return func() { once.Do(stop) }
}

func msg(id string) model.Message {
	return model.Message{Header: model.MessageHeader{ID: id}}
}

func TestRegister(t *testing.T) {
	b := New(Options{})
	aStarted := make(chan struct{})
	a := &testModule{name: "a", group: "g", start: func(ctx context.Context) error {
		close(aStarted)
		<-ctx.Done()
		return nil
	}}
	tests := []struct {
		name    string
		m       Module
		wantErr string
	}{
		{"ok", a, ""},
		{"disabled ok", &testModule{name: "off", group: "g", disabled: true}, ""},
		{"nil", nil, "nil module"},
		{"empty name", &testModule{}, "empty name"},
		{"duplicate", &testModule{name: "a"}, "already registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Register(tt.m)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Register = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}

	ctx := context.Background()
	for _, name := range []string{"off", "missing"} {
		if err := b.Send(ctx, name, msg("1")); !errors.Is(err, ErrUnknownModule) || !strings.Contains(err.Error(), name) {
			t.Errorf("Send(%s) = %v, want ErrUnknownModule naming it", name, err)
		}
		if _, err := b.Receive(ctx, name); !errors.Is(err, ErrUnknownModule) {
			t.Errorf("Receive(%s) = %v, want ErrUnknownModule", name, err)
		}
		if _, err := b.SendSync(ctx, name, msg("1"), time.Second); !errors.Is(err, ErrUnknownModule) {
			t.Errorf("SendSync(%s) = %v, want ErrUnknownModule", name, err)
		}
	}
	if got := cap(b.modules["a"].mailbox); got != DefaultMailboxSize {
		t.Errorf("mailbox size = %d, want %d", got, DefaultMailboxSize)
	}

	stop := runBus(t, b)
	<-aStarted // Run has closed registration by now.
	if err := b.Register(&testModule{name: "late"}); err == nil {
		t.Error("Register after Run: want error")
	}
	if err := b.Run(context.Background()); err == nil {
		t.Error("second Run: want error")
	}
	stop()
}

func TestPerSenderOrdering(t *testing.T) {
	const senders, perSender = 4, 500
	// A tiny mailbox makes senders block and contend, which is where
	// reordering would show up.
	b := newBus(t, Options{MailboxSize: 2}, &testModule{name: "sink"})
	ctx := context.Background()

	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range perSender {
				m := msg(fmt.Sprint(s, "-", i))
				m.Router.Source = fmt.Sprint("sender", s)
				m.Content = i
				if err := b.Send(ctx, "sink", m); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
			}
		})
	}
	next := map[string]int{}
	for range senders * perSender {
		m, err := b.Receive(ctx, "sink")
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		src := m.Router.Source
		if got := m.Content.(int); got != next[src] {
			t.Fatalf("%s: got seq %d, want %d", src, got, next[src])
		}
		next[src]++
	}
	wg.Wait()
}

func TestServe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		module  string
		end     func(cancel context.CancelFunc, stop context.CancelFunc)
		wantErr string
	}{
		{name: "context done", module: "sink", end: func(cancel, _ context.CancelFunc) { cancel() }},
		{name: "bus stopped", module: "sink", end: func(_, stop context.CancelFunc) { stop() }},
		{name: "unknown module", module: "nobody", wantErr: `serving nobody: receive: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBus(t, Options{}, &testModule{name: "sink"})
			stop := runBus(t, b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range 3 {
				if err := b.Send(ctx, "sink", msg(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			got := make(chan string, 3)
			done := make(chan error, 1)
			go func() {
				done <- b.Serve(ctx, tc.module, func(m model.Message) { got <- m.GetID() })
			}()
			if tc.end != nil {
				for i := range 3 {
					if id := <-got; id != fmt.Sprint(i) {
						t.Fatalf("message %d: got id %q", i, id)
					}
				}
				tc.end(cancel, stop)
			}
			select {
			case err := <-done:
				if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Fatalf("Serve = %v, want error containing %q", err, tc.wantErr)
				}
			case <-time.After(testWait):
				t.Fatal("Serve did not return")
			}
		})
	}
}

func TestSendBlocksWhileFull(t *testing.T) {
	b := newBus(t, Options{MailboxSize: 1}, &testModule{name: "m"})
	if err := b.Send(context.Background(), "m", msg("1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Send(ctx, "m", msg("2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send into full mailbox = %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := b.Receive(context.Background(), "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Receive(ctx, "m"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive from empty mailbox = %v, want Canceled", err)
	}
}

// respond answers n requests arriving at module with content "from <module>".
// With late set, a response nobody waits for any more is not an error.
func respond(t *testing.T, b *Bus, module string, n int, late bool) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for range n {
			req, err := b.Receive(context.Background(), module)
			if err != nil {
				t.Errorf("%s Receive: %v", module, err)
				return
			}
			if !req.IsSync() {
				t.Errorf("%s: request %s not marked sync", module, req.GetID())
			}
			err = b.SendResp(*model.NewRespByMessage(&req, "from "+module))
			if err != nil && !(late && errors.Is(err, ErrNoWaiter)) {
				t.Errorf("%s SendResp: %v", module, err)
			}
		}
	})
	return &wg
}

func TestSendSync(t *testing.T) {
	b := newBus(t, Options{}, &testModule{name: "server"})
	wg := respond(t, b, "server", 1, false)
	defer wg.Wait()

	req := model.NewMessage("").BuildRouter("client", "g", "default/pod/p", model.QueryOperation)
	resp, err := b.SendSync(context.Background(), "server", *req, time.Second)
	if err != nil {
		t.Fatalf("SendSync: %v", err)
	}
	if resp.GetParentID() != req.GetID() || resp.Content != "from server" {
		t.Fatalf("response %v content %v does not answer %s", &resp, resp.Content, req.GetID())
	}
	if req.IsSync() {
		t.Error("SendSync mutated the caller's message")
	}
}

func TestSendSyncTimeout(t *testing.T) {
	b := newBus(t, Options{}, &testModule{name: "silent"})
	req := msg("req-1")

	_, err := b.SendSync(context.Background(), "silent", req, 20*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendSync = %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "silent") || !strings.Contains(err.Error(), "req-1") {
		t.Errorf("error %q should name module and message", err)
	}
	// A late response finds nobody waiting.
	late := model.NewRespByMessage(&req, nil)
	if err := b.SendResp(*late); !errors.Is(err, ErrNoWaiter) {
		t.Fatalf("late SendResp = %v, want ErrNoWaiter", err)
	}

	// Cancelling the caller's context is not a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.SendSync(ctx, "silent", msg("req-2"), time.Hour)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("SendSync with cancelled ctx = %v, want Canceled", err)
	}
	if _, err := b.SendSync(context.Background(), "silent", msg(""), time.Second); err == nil {
		t.Fatal("SendSync without id: want error")
	}
	if n := len(b.waiters); n != 0 {
		t.Fatalf("%d waiters left registered", n)
	}
}

func TestSendSyncDuplicateID(t *testing.T) {
	b := newBus(t, Options{}, &testModule{name: "server"})
	first := make(chan error, 1)
	go func() {
		_, err := b.SendSync(context.Background(), "server", msg("dup"), testWait)
		first <- err
	}()
	// Once the request is in the mailbox its waiter is registered.
	req, err := b.Receive(context.Background(), "server")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SendSync(context.Background(), "server", msg("dup"), time.Second); err == nil {
		t.Fatal("second SendSync with in-flight id: want error")
	}
	if err := b.SendResp(*model.NewRespByMessage(&req, nil)); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first SendSync: %v", err)
	}
}

func TestSendRespUnknown(t *testing.T) {
	b := New(Options{})
	for _, parent := range []string{"", "never-sent"} {
		resp := msg("r")
		resp.Header.ParentID = parent
		if err := b.SendResp(resp); !errors.Is(err, ErrNoWaiter) {
			t.Errorf("SendResp(parent %q) = %v, want ErrNoWaiter", parent, err)
		}
	}
}

func TestSendToGroup(t *testing.T) {
	b := newBus(t, Options{},
		&testModule{name: "a", group: "g"},
		&testModule{name: "b", group: "g"},
		&testModule{name: "c", group: "g"},
		&testModule{name: "off", group: "g", disabled: true},
		&testModule{name: "other", group: "h"},
	)
	ctx := context.Background()
	m := msg("fan")
	m.Content = []byte("payload")
	if err := b.SendToGroup(ctx, "g", m); err != nil {
		t.Fatalf("SendToGroup: %v", err)
	}

	var got []model.Message
	for _, name := range []string{"a", "b", "c"} {
		r, err := b.Receive(ctx, name)
		if err != nil {
			t.Fatalf("Receive(%s): %v", name, err)
		}
		if r.GetID() != "fan" {
			t.Errorf("%s got id %s", name, r.GetID())
		}
		if n := len(b.modules[name].mailbox); n != 0 {
			t.Errorf("%s got %d extra copies", name, n)
		}
		got = append(got, r)
	}
	if n := len(b.modules["other"].mailbox); n != 0 {
		t.Errorf("non-member received %d messages", n)
	}
	got[0].Content.([]byte)[0] = 'X'
	if string(got[1].Content.([]byte)) != "payload" || string(m.Content.([]byte)) != "payload" {
		t.Error("group copies share content bytes")
	}

	if err := b.SendToGroup(ctx, "nobody", m); !errors.Is(err, ErrUnknownGroup) {
		t.Errorf("SendToGroup(unknown) = %v, want ErrUnknownGroup", err)
	}
	if _, err := b.SendToGroupSync(ctx, "nobody", m, time.Second); !errors.Is(err, ErrUnknownGroup) {
		t.Errorf("SendToGroupSync(unknown) = %v, want ErrUnknownGroup", err)
	}
}

func TestSendToGroupSync(t *testing.T) {
	b := newBus(t, Options{},
		&testModule{name: "a", group: "g"},
		&testModule{name: "b", group: "g"},
		&testModule{name: "c", group: "g"},
	)
	var wgs []*sync.WaitGroup
	for _, name := range []string{"a", "b", "c"} {
		wgs = append(wgs, respond(t, b, name, 1, false))
	}
	resps, err := b.SendToGroupSync(context.Background(), "g", msg("all"), time.Second)
	if err != nil {
		t.Fatalf("SendToGroupSync: %v", err)
	}
	from := map[any]bool{}
	for _, r := range resps {
		from[r.Content] = true
	}
	if len(resps) != 3 || len(from) != 3 {
		t.Fatalf("got responses %v, want one from each of a, b, c", from)
	}
	for _, wg := range wgs {
		wg.Wait()
	}

	// One silent member makes the whole call time out.
	wgs = []*sync.WaitGroup{respond(t, b, "a", 1, true), respond(t, b, "b", 1, true)}
	_, err = b.SendToGroupSync(context.Background(), "g", msg("partial"), 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("SendToGroupSync with silent member = %v, want ErrTimeout", err)
	}
	for _, wg := range wgs {
		wg.Wait()
	}
}

func TestRunShutdown(t *testing.T) {
	b := newBus(t, Options{})
	started := make(chan string, 4)
	echo := func(name string) *testModule {
		return &testModule{name: name, group: "workers", start: func(ctx context.Context) error {
			started <- name
			for {
				req, err := b.Receive(ctx, name)
				if err != nil {
					return err
				}
				_ = b.SendResp(*model.NewRespByMessage(&req, name))
			}
		}}
	}
	// stubborn ignores its context; only the bus closing its mailbox stops it.
	stubborn := &testModule{name: "stubborn", start: func(context.Context) error {
		started <- "stubborn"
		_, err := b.Receive(context.Background(), "stubborn")
		if !errors.Is(err, ErrStopped) {
			t.Errorf("stubborn Receive = %v, want ErrStopped", err)
		}
		return err
	}}
	// client talks to the others through the running bus.
	clientDone := make(chan error, 1)
	client := &testModule{name: "client", start: func(ctx context.Context) error {
		started <- "client"
		_, err := b.SendSync(ctx, "w1", *model.NewMessage(""), testWait)
		clientDone <- err
		<-ctx.Done()
		return nil
	}}
	for _, m := range []Module{echo("w1"), echo("w2"), stubborn, client, &testModule{name: "off", disabled: true}} {
		if err := b.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	stop := runBus(t, b)
	for range 4 {
		<-started
	}
	if err := <-clientDone; err != nil {
		t.Fatalf("SendSync between modules: %v", err)
	}
	if _, err := b.SendToGroupSync(context.Background(), "workers", *model.NewMessage(""), testWait); err != nil {
		t.Fatalf("SendToGroupSync to running modules: %v", err)
	}
	// Leave an undelivered message behind; shutdown must not wait for it.
	if err := b.Send(context.Background(), "client", msg("unread")); err != nil {
		t.Fatal(err)
	}

	stop()

	ctx := context.Background()
	if err := b.Send(ctx, "w1", msg("x")); !errors.Is(err, ErrStopped) {
		t.Errorf("Send after stop = %v, want ErrStopped", err)
	}
	if _, err := b.Receive(ctx, "client"); !errors.Is(err, ErrStopped) {
		t.Errorf("Receive after stop = %v, want ErrStopped", err)
	}
	if _, err := b.SendSync(ctx, "w1", msg("y"), time.Second); !errors.Is(err, ErrStopped) {
		t.Errorf("SendSync after stop = %v, want ErrStopped", err)
	}
	if err := b.SendToGroup(ctx, "workers", msg("z")); !errors.Is(err, ErrStopped) {
		t.Errorf("SendToGroup after stop = %v, want ErrStopped", err)
	}
}

func TestRestartPolicy(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name   string
		policy *RestartPolicy
		// run is Start's behaviour on the n-th call (from 1); cancel stops
		// the supervisor for policies that would restart forever.
		run         func(n int, cancel context.CancelFunc) error
		wantStarts  int
		wantHandled error // error passed to ErrorHandler; nil = not called
	}{
		{
			name:        "OnFailure retries then gives up",
			policy:      &RestartPolicy{Type: RestartOnFailure, Retries: 2},
			run:         func(int, context.CancelFunc) error { return errBoom },
			wantStarts:  3,
			wantHandled: errBoom,
		},
		{
			name:        "panic is recovered and counts as failure",
			policy:      &RestartPolicy{Type: RestartOnFailure, Retries: 1},
			run:         func(int, context.CancelFunc) error { panic("kaboom") },
			wantStarts:  2,
			wantHandled: ErrPanic,
		},
		{
			name:   "OnFailure stops after success",
			policy: &RestartPolicy{Type: RestartOnFailure, Retries: 5},
			run: func(n int, _ context.CancelFunc) error {
				if n < 3 {
					return errBoom
				}
				return nil
			},
			wantStarts: 3,
		},
		{
			name:       "Always restarts after success",
			policy:     &RestartPolicy{Type: RestartAlways, Retries: 2},
			run:        func(int, context.CancelFunc) error { return nil },
			wantStarts: 3,
		},
		{
			name:   "unlimited retries until shutdown",
			policy: &RestartPolicy{Type: RestartOnFailure},
			run: func(n int, cancel context.CancelFunc) error {
				if n == 10 {
					cancel()
				}
				return errBoom
			},
			wantStarts: 10,
		},
		{
			name:        "a policy without a type runs once",
			policy:      &RestartPolicy{},
			run:         func(int, context.CancelFunc) error { return errBoom },
			wantStarts:  1,
			wantHandled: errBoom,
		},
		{
			name:        "panic under a policy without a type runs once",
			policy:      &RestartPolicy{},
			run:         func(int, context.CancelFunc) error { panic(errBoom) },
			wantStarts:  1,
			wantHandled: ErrPanic,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var starts int
			var handled error
			if tt.policy != nil {
				tt.policy.Interval = time.Microsecond
				tt.policy.ErrorHandler = func(module string, err error) {
					if module != "m" || handled != nil {
						t.Errorf("ErrorHandler(%q, %v) called again or for wrong module", module, err)
					}
					handled = err
				}
			}
			m := &testModule{name: "m", policy: tt.policy, start: func(context.Context) error {
				starts++
				return tt.run(starts, cancel)
			}}
			// supervise returns once the module is done for good, so the
			// counts below are final; a failure for good is its result.
			err := supervise(ctx, m)
			if (err != nil) != (tt.wantHandled != nil) || (err != nil && !errors.Is(err, ErrModuleFailed)) {
				t.Errorf("supervise = %v, want a failure for good: %v", err, tt.wantHandled != nil)
			}
			if starts != tt.wantStarts {
				t.Errorf("Start called %d times, want %d", starts, tt.wantStarts)
			}
			if !errors.Is(handled, tt.wantHandled) || (handled == nil) != (tt.wantHandled == nil) {
				t.Errorf("ErrorHandler got %v, want %v", handled, tt.wantHandled)
			}
		})
	}
}

func TestRestartBackoff(t *testing.T) {
	var stamps []time.Time
	m := &testModule{name: "m",
		policy: &RestartPolicy{Type: RestartAlways, Retries: 4, Interval: 2 * time.Millisecond, GrowthRate: 2, IntervalLimit: 5 * time.Millisecond},
		start: func(context.Context) error {
			stamps = append(stamps, time.Now())
			return nil
		}}
	supervise(context.Background(), m)
	// Timers never fire early, so lower bounds are reliable.
	want := []time.Duration{2, 4, 5, 5}
	if len(stamps) != len(want)+1 {
		t.Fatalf("starts = %d, want %d", len(stamps), len(want)+1)
	}
	for i, w := range want {
		if gap := stamps[i+1].Sub(stamps[i]); gap < w*time.Millisecond {
			t.Errorf("restart %d after %v, want >= %v", i+1, gap, w*time.Millisecond)
		}
	}
}

// TestModuleFailingForGoodStopsTheBus: a module that still fails when its restarts are used up stops the bus,
// so the process exits and its service manager restarts it, rather than running on without the module.
func TestModuleFailingForGoodStopsTheBus(t *testing.T) {
	gaveUp := make(chan error, 1)
	var starts atomic.Int32
	b := newBus(t, Options{},
		&testModule{name: "crashy", policy: &RestartPolicy{
			Type: RestartOnFailure, Retries: 1, Interval: time.Microsecond,
			ErrorHandler: func(_ string, err error) { gaveUp <- err },
		}, start: func(context.Context) error {
			starts.Add(1)
			panic("bad")
		}},
		&testModule{name: "healthy"},
	)
	done := make(chan error, 1)
	go func() { done <- b.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrModuleFailed) || !errors.Is(err, ErrPanic) {
			t.Fatalf("Run = %v, want ErrModuleFailed wrapping ErrPanic", err)
		}
	case <-time.After(testWait):
		t.Fatal("Run did not return after a module failed for good")
	}
	if err := <-gaveUp; !errors.Is(err, ErrPanic) {
		t.Fatalf("ErrorHandler got %v, want ErrPanic", err)
	}
	if n := starts.Load(); n != 2 {
		t.Fatalf("crashy started %d times, want 2", n)
	}
}

// TestDefaultPolicyRestartsAFailure: a module without a policy of its own is restarted after a failure.
func TestDefaultPolicyRestartsAFailure(t *testing.T) {
	var starts atomic.Int32
	up := make(chan struct{})
	b := newBus(t, Options{}, &testModule{name: "flaky", start: func(ctx context.Context) error {
		if starts.Add(1) == 1 {
			return errors.New("passing fault")
		}
		close(up)
		<-ctx.Done()
		return nil
	}})
	runBus(t, b)
	select {
	case <-up:
	case <-time.After(testWait):
		t.Fatal("flaky module was not restarted")
	}
}

func BenchmarkSendReceive(b *testing.B) {
	bus := New(Options{})
	if err := bus.Register(&testModule{name: "sink"}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	m := *model.NewMessage("").BuildRouter("bench", "g", "default/pod/p", model.UpdateOperation)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range b.N {
			if _, err := bus.Receive(ctx, "sink"); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := bus.Send(ctx, "sink", m); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

func BenchmarkSendSyncRoundTrip(b *testing.B) {
	bus := New(Options{})
	if err := bus.Register(&testModule{name: "server"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			req, err := bus.Receive(ctx, "server")
			if err != nil {
				return
			}
			_ = bus.SendResp(*model.NewRespByMessage(&req, nil))
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := bus.SendSync(ctx, "server", *model.NewMessage(""), time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	<-done
}

func TestPending(t *testing.T) {
	b := newBus(t, Options{}, &testModule{name: "sink"})
	ctx := context.Background()
	for i := range 3 {
		if got := b.Pending("sink"); got != i {
			t.Fatalf("Pending after %d sends = %d", i, got)
		}
		if err := b.Send(ctx, "sink", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Receive(ctx, "sink"); err != nil {
		t.Fatal(err)
	}
	if got := b.Pending("sink"); got != 2 {
		t.Errorf("Pending after a receive = %d, want 2", got)
	}
	if got := b.Pending("nobody"); got != 0 {
		t.Errorf("Pending of an unknown module = %d, want 0", got)
	}
}
