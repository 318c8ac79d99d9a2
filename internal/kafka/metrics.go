package kafka

import (
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ClientMetrics are the Prometheus metrics of every Kafka client of a
// process, fed by franz-go's hooks (add Hook to each client: Security.Hooks
// does). Unlike kprom, which registers collectors per client and so cannot
// be shared, one ClientMetrics serves the many short-lived clients Tally
// opens (committed readers, partition writers, admin clients). Series are
// by broker node, request type and topic, not by client.
type ClientMetrics struct {
	connects    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	requests    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	written     *prometheus.CounterVec
	read        *prometheus.CounterVec
	throttled   *prometheus.CounterVec
	produced    *prometheus.CounterVec
	producedB   *prometheus.CounterVec
	fetched     *prometheus.CounterVec
	fetchedB    *prometheus.CounterVec
}

// NewClientMetrics registers the Kafka client metrics with reg.
func NewClientMetrics(reg prometheus.Registerer) *ClientMetrics {
	node := []string{"node"}
	m := &ClientMetrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_connects_total",
			Help: "Connections opened to Kafka brokers, by broker node and outcome (ok, error)."}, []string{"node", "outcome"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_disconnects_total",
			Help: "Connections to Kafka brokers closed, by broker node."}, node),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_kafka_request_duration_seconds",
			Help:    "Kafka requests, written to response read, by request type (Produce, Fetch, EndTxn, …).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"request"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_request_errors_total",
			Help: "Kafka requests whose write or read failed on the connection, by broker node and request type."}, []string{"node", "request"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_written_bytes_total",
			Help: "Bytes written to Kafka brokers, by broker node."}, node),
		read: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_read_bytes_total",
			Help: "Bytes read from Kafka brokers, by broker node."}, node),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_throttled_seconds_total",
			Help: "Time Kafka brokers asked the clients to hold back (quotas), by broker node."}, node),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_produced_records_total",
			Help: "Records produced, by topic."}, []string{"topic"}),
		producedB: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_produced_bytes_total",
			Help: "Record batch bytes produced, uncompressed, by topic."}, []string{"topic"}),
		fetched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_fetched_records_total",
			Help: "Records fetched, by topic (control records included)."}, []string{"topic"}),
		fetchedB: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_kafka_fetched_bytes_total",
			Help: "Record batch bytes fetched, uncompressed, by topic."}, []string{"topic"}),
	}
	reg.MustRegister(m.connects, m.disconnects, m.requests, m.errors, m.written, m.read, m.throttled,
		m.produced, m.producedB, m.fetched, m.fetchedB)
	return m
}

// Hook returns the hook to add to a client, or nil for nil metrics.
func (m *ClientMetrics) Hook() kgo.Hook {
	if m == nil {
		return nil
	}
	return hooks{m}
}

type hooks struct{ m *ClientMetrics }

var (
	_ kgo.HookBrokerConnect       = hooks{}
	_ kgo.HookBrokerDisconnect    = hooks{}
	_ kgo.HookBrokerE2E           = hooks{}
	_ kgo.HookBrokerThrottle      = hooks{}
	_ kgo.HookProduceBatchWritten = hooks{}
	_ kgo.HookFetchBatchRead      = hooks{}
)

func nodeOf(meta kgo.BrokerMetadata) string {
	if meta.NodeID < 0 {
		return "seed" // a seed broker, before metadata names it
	}
	return strconv.Itoa(int(meta.NodeID))
}

func (h hooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	h.m.connects.WithLabelValues(nodeOf(meta), outcome).Inc()
}

func (h hooks) OnBrokerDisconnect(meta kgo.BrokerMetadata, _ net.Conn) {
	h.m.disconnects.WithLabelValues(nodeOf(meta)).Inc()
}

func (h hooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	node, req := nodeOf(meta), kmsg.NameForKey(key)
	h.m.written.WithLabelValues(node).Add(float64(e2e.BytesWritten))
	h.m.read.WithLabelValues(node).Add(float64(e2e.BytesRead))
	if e2e.Err() != nil {
		h.m.errors.WithLabelValues(node, req).Inc()
		return
	}
	h.m.requests.WithLabelValues(req).Observe(e2e.DurationE2E().Seconds())
}

func (h hooks) OnBrokerThrottle(meta kgo.BrokerMetadata, interval time.Duration, _ bool) {
	h.m.throttled.WithLabelValues(nodeOf(meta)).Add(interval.Seconds())
}

func (h hooks) OnProduceBatchWritten(_ kgo.BrokerMetadata, topic string, _ int32, b kgo.ProduceBatchMetrics) {
	h.m.produced.WithLabelValues(topic).Add(float64(b.NumRecords))
	h.m.producedB.WithLabelValues(topic).Add(float64(b.UncompressedBytes))
}

func (h hooks) OnFetchBatchRead(_ kgo.BrokerMetadata, topic string, _ int32, b kgo.FetchBatchMetrics) {
	h.m.fetched.WithLabelValues(topic).Add(float64(b.NumRecords))
	h.m.fetchedB.WithLabelValues(topic).Add(float64(b.UncompressedBytes))
}
