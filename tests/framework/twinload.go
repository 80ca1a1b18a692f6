package framework

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// HeartbeatSample is one look at a Node's Ready condition.
type HeartbeatSample struct {
	At    time.Time
	Ready corev1.ConditionStatus // "" when the node or its condition could not be read
	// Age is At minus the Ready condition's lastHeartbeatTime. The API keeps that time in whole seconds, so Age
	// reads up to a second high.
	Age time.Duration
	Err error
}

// HeartbeatSampler reads a Node every interval, for tests that check the node keeps reporting under load.
type HeartbeatSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []HeartbeatSample
}

// SampleHeartbeat starts reading node every interval until Stop or the end of the test.
func SampleHeartbeat(t testing.TB, c client.Client, node string, interval time.Duration) *HeartbeatSampler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &HeartbeatSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			s.sample(ctx, c, node)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *HeartbeatSampler) sample(ctx context.Context, c client.Client, node string) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n corev1.Node
	// The time the read was issued: what it returns is at least that new, so a slow API server does not count
	// against the node.
	at := time.Now()
	err := c.Get(gctx, client.ObjectKey{Name: node}, &n)
	smp := HeartbeatSample{At: at, Err: err}
	if err == nil {
		smp.Err = fmt.Errorf("node %s has no Ready condition", node)
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				smp.Ready, smp.Age, smp.Err = cond.Status, smp.At.Sub(cond.LastHeartbeatTime.Time), nil
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
}

// Samples returns what was read so far.
func (s *HeartbeatSampler) Samples() []HeartbeatSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]HeartbeatSample(nil), s.samples...)
}

// Stop ends sampling and returns every sample; safe to call twice.
func (s *HeartbeatSampler) Stop() []HeartbeatSample {
	s.cancel()
	<-s.done
	return s.Samples()
}

// HeartbeatSummary describes the samples taken in [From, To).
type HeartbeatSummary struct {
	Samples int `json:"samples"`
	// MaxAge is the oldest lastHeartbeatTime seen, MaxAgeAt when (seconds after From).
	MaxAgeSec   float64 `json:"max_heartbeat_age_s"`
	MaxAgeAtSec float64 `json:"max_heartbeat_age_at_s"`
	// NotReady counts samples whose Ready condition was not True; FirstNotReadySec is the first (-1: none).
	NotReady         int     `json:"samples_not_ready"`
	FirstNotReadySec float64 `json:"first_not_ready_at_s"`
	Errors           int     `json:"read_errors"`
}

// SummarizeHeartbeat summarises the samples taken in [from, to).
func SummarizeHeartbeat(samples []HeartbeatSample, from, to time.Time) HeartbeatSummary {
	sum := HeartbeatSummary{FirstNotReadySec: -1}
	for _, s := range samples {
		if s.At.Before(from) || !s.At.Before(to) {
			continue
		}
		sum.Samples++
		at := round1(s.At.Sub(from).Seconds())
		if s.Err != nil {
			sum.Errors++
			continue
		}
		if age := s.Age.Seconds(); age > sum.MaxAgeSec {
			sum.MaxAgeSec, sum.MaxAgeAtSec = round1(age), at
		}
		if s.Ready != corev1.ConditionTrue {
			sum.NotReady++
			if sum.FirstNotReadySec < 0 {
				sum.FirstNotReadySec = at
			}
		}
	}
	return sum
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

// TwinReport is a mapper's report of property prop of device id with value, as KubeEdge mappers publish it on
// $hw/events/device/{id}/twin/update.
func TwinReport(prop, value string) string {
	return fmt.Sprintf(`{"event_id":"","timestamp":%d,"twin":{%q:{"actual":{"value":%q},"metadata":{"type":"Updated"}}}}`,
		time.Now().UnixMilli(), prop, value)
}

// TwinLoad is a mapper flooding one device property with reports.
type TwinLoad struct {
	Client   mqtt.Client
	Device   string
	Property string
	// PerSecond reports for Duration, spread over 100 slices a second.
	PerSecond int
	Duration  time.Duration
	// Value names report i; the default is "load-<i>".
	Value func(i int) string
}

// TwinLoadResult is what a TwinLoad published.
type TwinLoadResult struct {
	Published int
	Last      string // the value of the last report
	Elapsed   time.Duration
	// Behind is how far the publisher fell behind its schedule at the end.
	Behind time.Duration
}

// Run publishes the reports (QoS 1, without waiting for each acknowledgement), then waits up to 30 s for the
// broker to acknowledge them all.
func (l TwinLoad) Run(ctx context.Context) (TwinLoadResult, error) {
	const slices = 100
	value := l.Value
	if value == nil {
		value = func(i int) string { return fmt.Sprintf("load-%d", i) }
	}
	topic := "$hw/events/device/" + l.Device + "/twin/update"
	total := int(float64(l.PerSecond) * l.Duration.Seconds())
	var res TwinLoadResult
	toks := make([]mqtt.Token, 0, total)
	began := time.Now()
	for i := 0; i < total; i++ {
		// Report i is due at i/PerSecond, published in slices of a hundredth of a second.
		due := began.Add(time.Duration(i*slices/l.PerSecond) * (time.Second / slices))
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(d):
			}
		}
		res.Last = value(i)
		toks = append(toks, l.Client.Publish(topic, 1, false, TwinReport(l.Property, res.Last)))
		res.Published++
	}
	res.Elapsed = time.Since(began)
	res.Behind = max(res.Elapsed-l.Duration, 0)
	deadline := time.Now().Add(30 * time.Second)
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) {
			return res, fmt.Errorf("report %d of %d not acknowledged by the broker within 30s", i, total)
		}
		if err := tok.Error(); err != nil {
			return res, fmt.Errorf("report %d: %w", i, err)
		}
	}
	return res, nil
}
