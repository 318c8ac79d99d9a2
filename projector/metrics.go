package projector

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the projector's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	events     *prometheus.CounterVec
	batches    *prometheus.CounterVec
	batchSecs  prometheus.Histogram
	visibility prometheus.Histogram
	dead       prometheus.Counter
	offset     *prometheus.GaugeVec
}

// NewMetrics registers the projector's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_projector_events_total", Help: "Events projected into the read model, by partition.",
		}, []string{"partition"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_projector_batches_total", Help: "Projector transactions, by result.",
		}, []string{"result"}),
		batchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_projector_batch_duration_seconds", Help: "Time to write and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		visibility: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tally_projector_visibility_seconds",
			Help:    "Per event: recorded_at (accepted by the write side) to committed in the read model.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_projector_dead_lettered_total", Help: "Records sent to the dead-letter topic.",
		}),
		offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tally_projector_next_offset", Help: "Next offset to project, by partition.",
		}, []string{"partition"}),
	}
	reg.MustRegister(m.events, m.batches, m.batchSecs, m.visibility, m.dead, m.offset)
	return m
}

func (m *Metrics) batchCommitted(offsets []offsetRow, dead int, d time.Duration, recorded []time.Time) {
	if m == nil {
		return
	}
	now := time.Now()
	for _, o := range offsets {
		p := strconv.Itoa(int(o.partition))
		m.events.WithLabelValues(p).Add(float64(o.events))
		m.offset.WithLabelValues(p).Set(float64(o.next))
	}
	m.batches.WithLabelValues("committed").Inc()
	m.batchSecs.Observe(d.Seconds())
	for _, t := range recorded {
		m.visibility.Observe(now.Sub(t).Seconds())
	}
}

func (m *Metrics) batchFailed() {
	if m != nil {
		m.batches.WithLabelValues("failed").Inc()
	}
}

func (m *Metrics) deadLettered(n int) {
	if m != nil {
		m.dead.Add(float64(n))
	}
}
