package mapper

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

const tick = 10 * time.Millisecond

// recorder is a fake publisher: it keeps every value and wakes waiters.
type recorder struct {
	mu     sync.Mutex
	values []string
	resets int
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) publish(value string, reset bool) {
	r.mu.Lock()
	r.values = append(r.values, value)
	if reset {
		r.resets++
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.values...)
}

// waitFor waits until cond holds for the published values.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if v := r.snapshot(); cond(v) {
			return v
		}
		select {
		case <-r.notify:
		case <-time.After(tick):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; published %v", what, r.snapshot())
		}
	}
}

// quiet asserts that nothing is published for a few ticks.
func (r *recorder) quiet(t *testing.T) {
	t.Helper()
	before := len(r.snapshot())
	time.Sleep(5 * tick)
	if after := r.snapshot(); len(after) != before {
		t.Fatalf("published %v after it should have stopped", after[before:])
	}
}

func atLeast(n int) func([]string) bool { return func(v []string) bool { return len(v) >= n } }

// assertCounting checks that values count up by one from first.
func assertCounting(t *testing.T, values []string, first int) {
	t.Helper()
	for i, v := range values {
		if v != strconv.Itoa(first+i) {
			t.Fatalf("values = %v, want %d, %d, …", values, first, first+1)
		}
	}
}

func TestCounter(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *Counter, r *recorder)
	}{
		{"on counts 1, 2, 3 and a second on does not restart", func(t *testing.T, c *Counter, r *recorder) {
			if !c.TurnOn(0) || !c.On() {
				t.Fatal("TurnOn did not start")
			}
			r.waitFor(t, "two counts", atLeast(2))
			if c.TurnOn(0) {
				t.Fatal("second TurnOn started again")
			}
			assertCounting(t, r.waitFor(t, "five counts", atLeast(5)), 1)
		}},
		{"off publishes 0 once and stops", func(t *testing.T, c *Counter, r *recorder) {
			c.TurnOn(0)
			r.waitFor(t, "three counts", atLeast(3))
			if !c.TurnOff() || c.On() {
				t.Fatal("TurnOff did not stop")
			}
			v := r.snapshot()
			if v[len(v)-1] != "0" || r.resets != 1 {
				t.Fatalf("values = %v (resets %d), want a final reset to 0", v, r.resets)
			}
			assertCounting(t, v[:len(v)-1], 1)
			r.quiet(t)
			if c.TurnOff() {
				t.Fatal("second TurnOff stopped again")
			}
			r.quiet(t)
		}},
		{"on after off starts again from 1", func(t *testing.T, c *Counter, r *recorder) {
			c.TurnOn(0)
			r.waitFor(t, "two counts", atLeast(2))
			c.TurnOff()
			n := len(r.snapshot())
			c.TurnOn(0)
			assertCounting(t, r.waitFor(t, "two more counts", atLeast(n+2))[n:], 1)
		}},
		{"resume from a count", func(t *testing.T, c *Counter, r *recorder) {
			c.TurnOn(41)
			assertCounting(t, r.waitFor(t, "two counts", atLeast(2)), 42)
		}},
		{"reset publishes 0 only while off", func(t *testing.T, c *Counter, r *recorder) {
			if !c.Reset() {
				t.Fatal("Reset while off did nothing")
			}
			c.TurnOn(0)
			r.waitFor(t, "a count", atLeast(2))
			if c.Reset() {
				t.Fatal("Reset while on published")
			}
		}},
		{"close stops silently", func(t *testing.T, c *Counter, r *recorder) {
			c.TurnOn(0)
			r.waitFor(t, "a count", atLeast(1))
			c.Close()
			for _, v := range r.snapshot() {
				if v == "0" {
					t.Fatalf("Close published 0: %v", r.snapshot())
				}
			}
			r.quiet(t)
			if c.TurnOn(0) {
				t.Fatal("TurnOn after Close started")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecorder()
			c := NewCounter(tick, r.publish)
			defer c.Close()
			tc.run(t, c, r)
		})
	}
}

// TestCounterNoCountAfterZero races TurnOff against the ticking worker: "0" must always be the last value.
func TestCounterNoCountAfterZero(t *testing.T) {
	r := newRecorder()
	c := NewCounter(time.Millisecond, r.publish)
	defer c.Close()
	for i := range 50 {
		c.TurnOn(0)
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		c.TurnOff()
		time.Sleep(2 * time.Millisecond)
		if v := r.snapshot(); v[len(v)-1] != "0" {
			t.Fatalf("round %d: a count followed the reset: %v", i, v[len(v)-3:])
		}
	}
}
