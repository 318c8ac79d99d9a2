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
			Name: "tally_projector_dead_lettered_total", Help: "Records skipped and sent to the dead-letter topic: undecodable, or refused by Postgres for their data.",
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
	m.dead.Add(float64(dead))
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

// BigQueryMetrics are the BigQuery projector's Prometheus metrics. A nil
// *BigQueryMetrics records nothing.
type BigQueryMetrics struct {
	rows       prometheus.Counter
	batches    *prometheus.CounterVec
	batchSecs  prometheus.Histogram
	visibility prometheus.Histogram
	dead       prometheus.Counter
	offset     *prometheus.GaugeVec
}

// NewBigQueryMetrics registers the BigQuery projector's metrics with reg.
func NewBigQueryMetrics(reg prometheus.Registerer) *BigQueryMetrics {
	m := &BigQueryMetrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_bigquery_events_total", Help: "Events merged into BigQuery (replays included).",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_bigquery_batches_total", Help: "BigQuery projector batches and setup attempts, by result.",
		}, []string{"result"}),
		batchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_bigquery_batch_duration_seconds", Help: "Time to stage, merge and advance one batch.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		visibility: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tally_bigquery_visibility_seconds",
			Help:    "Per event: recorded_at (accepted by the write side) to merged into BigQuery.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_bigquery_dead_lettered_total", Help: "Records the BigQuery projector sent to the dead-letter topic.",
		}),
		offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tally_bigquery_next_offset", Help: "Next offset to project into BigQuery, by partition.",
		}, []string{"partition"}),
	}
	reg.MustRegister(m.rows, m.batches, m.batchSecs, m.visibility, m.dead, m.offset)
	return m
}

func (m *BigQueryMetrics) batchWritten(offsets []offsetRow, rows []eventRow, d time.Duration) {
	if m == nil {
		return
	}
	now := time.Now()
	for _, o := range offsets {
		m.offset.WithLabelValues(strconv.Itoa(int(o.partition))).Set(float64(o.next))
	}
	m.rows.Add(float64(len(rows)))
	m.batches.WithLabelValues("written").Inc()
	m.batchSecs.Observe(d.Seconds())
	for _, r := range rows {
		m.visibility.Observe(now.Sub(r.e.GetRecordedAt().AsTime()).Seconds())
	}
}

func (m *BigQueryMetrics) failed() {
	if m != nil {
		m.batches.WithLabelValues("failed").Inc()
	}
}

func (m *BigQueryMetrics) deadLettered(n int) {
	if m != nil {
		m.dead.Add(float64(n))
	}
}
