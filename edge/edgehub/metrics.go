package edgehub

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons for tether_edgehub_dropped_messages_total.
const (
	dropQueueFull = "queue_full" // the control lane was full
	// dropBulkFull: the bulk lane (device reports, events) was full.
	dropBulkFull = "bulk_queue_full"
	// dropCoalesced: a queued device report was replaced by a newer one of
	// the same device.
	dropCoalesced  = "coalesced"
	dropOversized  = "oversized"
	dropMalformed  = "malformed"
	dropUnroutable = "unroutable"
)

type metrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	up, down   prometheus.Counter
	dropped    *prometheus.CounterVec
	// queued reads the outbox length per lane.
	queued []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer, q *outbox) (*metrics, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_edgehub_messages_total",
		Help: "Messages exchanged with the cloud, keepalives and acks included, by direction (up: edge to cloud, down: cloud to edge).",
	}, []string{"direction"})
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_edgehub_connected",
			Help: "1 while the websocket to the cloud is up, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edgehub_reconnects_total",
			Help: "Connections to the cloud established after an earlier one was lost.",
		}),
		up:   messages.WithLabelValues("up"),
		down: messages.WithLabelValues("down"),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_edgehub_dropped_messages_total",
			Help: "Messages discarded by edgehub, by reason.",
		}, []string{"reason"}),
	}
	for l := range numLanes {
		m.queued = append(m.queued, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tether_edgehub_queued_messages",
			Help:        "Messages waiting to be sent to the cloud, by lane (control goes first; bulk is device reports and events).",
			ConstLabels: prometheus.Labels{"lane": l.String()},
		}, func() float64 { return float64(q.laneLen(l)) }))
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range append([]prometheus.Collector{m.connected, m.reconnects, messages, m.dropped}, m.queued...) {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register edgehub metrics: %w", err)
	}
	return m, nil
}
