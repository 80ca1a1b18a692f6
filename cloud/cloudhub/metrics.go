package cloudhub

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of tether_cloudhub_messages_dropped_total.
const (
	reasonNoNode        = "no_node"        // downstream resource names no node
	reasonFiltered      = "filtered"       // legacy edge-manager message not meant for the edge
	reasonInvalid       = "invalid"        // object message without a numeric resourceversion
	reasonStale         = "stale"          // the node has, or is getting, a newer version
	reasonOverflow      = "noack_overflow" // offline node's fire-and-forget queue full
	reasonNodeDeleted   = "node_deleted"
	reasonImpersonation = "impersonation" // edge message with a cloud module as source
	reasonBadResource   = "bad_resource"
	reasonNoRoute       = "no_route"
	reasonMalformed     = "malformed"
	reasonOversized     = "oversized"
	reasonUnauthorized  = "unauthorized"  // the node's pods do not reference the object (node authorizer)
	reasonUnackedReply  = "unacked_reply" // a reply to an edge query never ACKed: its asker gave up
)

type metrics struct {
	connected prometheus.GaugeFunc
	queues    prometheus.Collector
	sent      prometheus.Counter
	acked     prometheus.Counter
	resent    prometheus.Counter
	dropped   *prometheus.CounterVec
	// refused counts refused websocket handshakes by reason; revokedSessions
	// open sessions closed because their certificate became revoked.
	refused         *prometheus.CounterVec
	revokedSessions *prometheus.CounterVec
}

func newMetrics(h *CloudHub) *metrics {
	m := &metrics{
		connected: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_cloudhub_connected_nodes",
			Help: "Edge nodes with an open session.",
		}, func() float64 { return float64(h.connectedNodes()) }),
		queues: &queueCollector{h: h, desc: prometheus.NewDesc("tether_cloudhub_queue_length",
			"Messages waiting for delivery, summed over nodes, by queue (ack: reliable objects, noack: fire-and-forget).",
			[]string{"queue"}, nil)},
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloudhub_messages_sent_total",
			Help: "Messages written to edge nodes, resends included.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloudhub_messages_acked_total",
			Help: "Reliable messages the edge confirmed.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloudhub_messages_resent_total",
			Help: "Reliable messages written again because the ACK did not come in time.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloudhub_messages_dropped_total",
			Help: "Messages not delivered, by reason.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloudhub_connections_refused_total",
			Help: "Edge websocket handshakes refused, by reason (revoked_serial and revoked_node: certificate revoked).",
		}, []string{"reason"}),
		revokedSessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloudhub_sessions_revoked_total",
			Help: "Open edge sessions closed because their certificate was revoked, by rule.",
		}, []string{"rule"}),
	}
	// Pre-create the series so rate() works from the first refusal.
	for _, r := range refusedReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{refusedRevokedSerial, refusedRevokedNode} {
		m.revokedSessions.WithLabelValues(r)
	}
	return m
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.connected, m.queues, m.sent, m.acked, m.resent, m.dropped, m.refused, m.revokedSessions}
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for i, c := range m.all() {
		if err := r.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) && are.ExistingCollector == c {
				continue // a restarted Start
			}
			for _, done := range m.all()[:i] {
				r.Unregister(done)
			}
			return fmt.Errorf("register cloudhub metrics: %w", err)
		}
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.all() {
		r.Unregister(c)
	}
}

// queueCollector computes queue lengths at scrape time, so there is no
// counter to keep in step with every queue change.
type queueCollector struct {
	h    *CloudHub
	desc *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ack, noack := c.h.queueLengths()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ack), "ack")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(noack), "noack")
}
