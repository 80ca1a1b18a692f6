package kuberuntime

import (
	"strings"
	"sync"
	"time"
)

// backOff is the kubelet's restart back-off: the first restart after a crash is immediate, later ones wait
// initial, 2×initial, … up to max after the previous exit. An entry whose last event is older than reset is
// forgotten, so a container that ran for reset (10 min) starts again from the beginning. Event times are the
// containers' finish times as the runtime reports them, so the rule does not depend on how often we sync.
type backOff struct {
	initial, max, reset time.Duration

	mu      sync.Mutex
	entries map[string]*backOffEntry
}

type backOffEntry struct {
	delay time.Duration
	last  time.Time
}

func newBackOff(initial, max, reset time.Duration) *backOff {
	return &backOff{initial: initial, max: max, reset: reset, entries: map[string]*backOffEntry{}}
}

// remaining is how long a restart of key, whose last run ended at finished, must still wait at now; the second
// result is the whole current delay, for messages.
func (b *backOff) remaining(key string, finished, now time.Time) (time.Duration, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || finished.Sub(e.last) > b.reset {
		return 0, 0
	}
	if left := e.delay - now.Sub(finished); left > 0 {
		return left, e.delay
	}
	return 0, e.delay
}

// remainingSinceLast is for failures that have no exit time of their own (image pulls): the wait runs from the
// last recorded failure.
func (b *backOff) remainingSinceLast(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || now.Sub(e.last) > b.reset {
		return 0
	}
	return max(e.delay-now.Sub(e.last), 0)
}

// next records a restart after the exit at finished and doubles the delay for the one after.
func (b *backOff) next(key string, finished time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	switch {
	case !ok || finished.Sub(e.last) > b.reset:
		b.entries[key] = &backOffEntry{delay: b.initial, last: finished}
	default:
		e.delay = min(2*e.delay, b.max)
		e.last = finished
	}
}

func (b *backOff) forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, key)
}

func (b *backOff) forgetPrefix(prefix string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.entries {
		if strings.HasPrefix(k, prefix) {
			delete(b.entries, k)
		}
	}
}
