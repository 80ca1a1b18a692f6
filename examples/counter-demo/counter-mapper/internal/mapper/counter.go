// Package mapper is the counter demo's edge mapper: a pseudo device that counts once a second while the
// twin's desired value is ON, and reports every count to edgecore's DeviceTwin over MQTT.
package mapper

import (
	"fmt"
	"sync"
	"time"
)

// Desired values the counter obeys.
const (
	On  = "ON"
	Off = "OFF"
)

// Counter is the pseudo device. While on, it publishes 1, 2, 3, … (starting at once, then every interval);
// turning it off publishes "0". Every publish happens under one lock, so no count can follow the "0".
type Counter struct {
	interval time.Duration
	// publish sends one actual value; it must not block for long (it runs under mu).
	publish func(value string, reset bool)

	mu     sync.Mutex
	on     bool
	count  int64
	stop   chan struct{} // closed to end the running worker
	closed bool
	wg     sync.WaitGroup
}

// NewCounter returns a counter that is off. publish gets each count, and "0" with reset set when the counter
// is turned off.
func NewCounter(interval time.Duration, publish func(value string, reset bool)) *Counter {
	return &Counter{interval: interval, publish: publish}
}

// On reports whether the counter is counting.
func (c *Counter) On() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// TurnOn starts counting from from+1, unless the counter is already on. It reports whether it started.
func (c *Counter) TurnOn(from int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.on || c.closed {
		return false
	}
	c.on, c.count, c.stop = true, max(from, 0), make(chan struct{})
	c.wg.Add(1)
	go c.work(c.stop)
	return true
}

// TurnOff stops counting and publishes "0", unless the counter is already off. It reports whether it stopped.
func (c *Counter) TurnOff() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on {
		return false
	}
	c.halt()
	c.publish("0", true)
	return true
}

// Reset publishes "0" if the counter is off: it settles a stale count left from before a restart.
func (c *Counter) Reset() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.on || c.closed {
		return false
	}
	c.publish("0", true)
	return true
}

// Close stops the counter without publishing and waits for its worker.
func (c *Counter) Close() {
	c.mu.Lock()
	c.closed = true
	if c.on {
		c.halt()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// halt ends the worker; mu is held.
func (c *Counter) halt() {
	c.on, c.count = false, 0
	close(c.stop)
	c.stop = nil
}

func (c *Counter) work(stop chan struct{}) {
	defer c.wg.Done()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for c.tick(stop) {
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// tick publishes the next count, unless stop was closed meanwhile; it reports whether to go on.
func (c *Counter) tick(stop chan struct{}) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-stop:
		return false
	default:
	}
	c.count++
	c.publish(fmt.Sprint(c.count), false)
	return true
}
