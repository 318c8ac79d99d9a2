package projector

import (
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-oss/tally/internal/readmodel"
)

// loopMetrics are a projection's Prometheus metrics: the same six for
// every sink, under the sink's prefix.
type loopMetrics struct {
	events     *prometheus.CounterVec
	batches    *prometheus.CounterVec
	batchSecs  prometheus.Histogram
	visibility prometheus.Histogram
	dead       prometheus.Counter
	offset     *prometheus.GaugeVec
}

// metricsSpec is what differs between the projections' metrics: the name
// prefix, the help texts, whether events are counted by partition, and the
// first bucket and bucket count of the batch and visibility histograms.
type metricsSpec struct {
	prefix                                             string
	eventsHelp, batchesHelp, batchHelp, visibilityHelp string
	deadHelp, offsetHelp                               string
	eventLabels                                        []string
	batchStart                                         float64
	batchBuckets                                       int
	visibility                                         []float64
}

func newLoopMetrics(reg prometheus.Registerer, s metricsSpec) loopMetrics {
	m := loopMetrics{
		events:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: s.prefix + "_events_total", Help: s.eventsHelp}, s.eventLabels),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: s.prefix + "_batches_total", Help: s.batchesHelp}, []string{"result"}),
		batchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: s.prefix + "_batch_duration_seconds", Help: s.batchHelp,
			Buckets: prometheus.ExponentialBuckets(s.batchStart, 2, s.batchBuckets),
		}),
		visibility: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: s.prefix + "_visibility_seconds", Help: s.visibilityHelp,
			Buckets: s.visibility,
		}),
		dead:   prometheus.NewCounter(prometheus.CounterOpts{Name: s.prefix + "_dead_lettered_total", Help: s.deadHelp}),
		offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: s.prefix + "_next_offset", Help: s.offsetHelp}, []string{"partition"}),
	}
	if len(s.eventLabels) == 0 {
		m.events.WithLabelValues() // one series, exported from the start as a plain counter is
	}
	reg.MustRegister(m.events, m.batches, m.batchSecs, m.visibility, m.dead, m.offset)
	return m
}

// batchDone records a stored batch: the partitions' next offsets, the
// result, its duration and each event's visibility.
func (m *loopMetrics) batchDone(result string, offsets []offsetRow, d time.Duration, recorded iter.Seq[time.Time]) {
	now := time.Now()
	for _, o := range offsets {
		m.offset.WithLabelValues(strconv.Itoa(int(o.partition))).Set(float64(o.next))
	}
	m.batches.WithLabelValues(result).Inc()
	m.batchSecs.Observe(d.Seconds())
	for t := range recorded {
		m.visibility.Observe(now.Sub(t).Seconds())
	}
}

// Metrics are the projector's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	loopMetrics
	// The ledger's partitions (ledger.go).
	created, dropped, maintainFailed prometheus.Counter
	oldestMonth, retainedFrom        prometheus.Gauge
	compacted                        prometheus.Counter
}

// NewMetrics registers the projector's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_projector_ledger_partitions_created_total",
			Help: "Monthly ledger partitions created: ahead of their month, or for an event whose month had none."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_projector_ledger_partitions_dropped_total",
			Help: "Monthly ledger partitions dropped for being older than --history-retention."}),
		maintainFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_projector_ledger_maintenance_failures_total",
			Help: "Ledger partition maintenance runs that failed (retried at the next run)."}),
		oldestMonth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_projector_ledger_oldest_month_timestamp_seconds",
			Help: "Start of the oldest month the ledger has a partition for (Unix time)."}),
		retainedFrom: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_projector_ledger_retained_from_timestamp_seconds",
			Help: "How far back history reads go: the end of the newest month retention dropped (Unix time); 0 when none was."}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_projector_ledger_compacted_rows_total",
			Help: "Ledger rows moved into compacted chunks, a month at a time once it ended --ledger-compact-after ago."}),
	}
	reg.MustRegister(m.created, m.dropped, m.maintainFailed, m.oldestMonth, m.retainedFrom, m.compacted)
	m.loopMetrics = newLoopMetrics(reg, metricsSpec{
		prefix:         "tally_projector",
		eventsHelp:     "Events projected into the read model, by partition.",
		batchesHelp:    "Projector transactions, by result.",
		batchHelp:      "Time to write and commit one batch.",
		visibilityHelp: "Per event: recorded_at (accepted by the write side) to committed in the read model.",
		deadHelp:       "Records skipped and sent to the dead-letter topic: undecodable, or refused by Postgres for their data.",
		offsetHelp:     "Next offset to project, by partition.",
		eventLabels:    []string{"partition"},
		batchStart:     0.0005, batchBuckets: 16, visibility: prometheus.ExponentialBuckets(0.0005, 2, 18),
	})
	return m
}

func (m *Metrics) partitionsCreated(n int) {
	if m != nil {
		m.created.Add(float64(n))
	}
}

func (m *Metrics) partitionsDropped(n int) {
	if m != nil {
		m.dropped.Add(float64(n))
	}
}

func (m *Metrics) rowsCompacted(n int64) {
	if m != nil {
		m.compacted.Add(float64(n))
	}
}

func (m *Metrics) maintenanceFailed() {
	if m != nil {
		m.maintainFailed.Inc()
	}
}

func (m *Metrics) ledgerRetained(res readmodel.LedgerMaintenance) {
	if m == nil {
		return
	}
	if !res.Oldest.IsZero() {
		m.oldestMonth.Set(float64(res.Oldest.Unix()))
	}
	if !res.RetainedFrom.IsZero() {
		m.retainedFrom.Set(float64(res.RetainedFrom.Unix()))
	}
}

func (m *Metrics) batchCommitted(offsets []offsetRow, dead int, d time.Duration, recorded []time.Time) {
	if m == nil {
		return
	}
	for _, o := range offsets {
		m.events.WithLabelValues(strconv.Itoa(int(o.partition))).Add(float64(o.events))
	}
	m.dead.Add(float64(dead))
	m.batchDone("committed", offsets, d, slices.Values(recorded))
}

func (m *Metrics) batchFailed() {
	if m != nil {
		m.batches.WithLabelValues("failed").Inc()
	}
}

// BigQueryMetrics are the BigQuery projector's Prometheus metrics. A nil
// *BigQueryMetrics records nothing.
type BigQueryMetrics struct {
	loopMetrics
	billed   *prometheus.CounterVec
	appended *prometheus.CounterVec
	steps    *prometheus.HistogramVec
}

// bigQueryVisibilityBuckets are seconds fine enough to tell whether an
// event was visible within --bigquery-merge-interval + 5 s (the freshness
// target) at the default interval and at short ones.
var bigQueryVisibilityBuckets = []float64{0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 45, 60, 65, 70, 80, 90, 120, 180, 300, 600, 900}

// NewBigQueryMetrics registers the BigQuery projector's metrics with reg.
func NewBigQueryMetrics(reg prometheus.Registerer) *BigQueryMetrics {
	m := &BigQueryMetrics{loopMetrics: newLoopMetrics(reg, metricsSpec{
		prefix:         "tally_bigquery",
		eventsHelp:     "Events merged into BigQuery (replays included).",
		batchesHelp:    "BigQuery projector batches and setup attempts, by result.",
		batchHelp:      "Time to stage, merge and advance one batch.",
		visibilityHelp: "Per event: recorded_at (accepted by the write side) to merged into BigQuery.",
		deadHelp:       "Records the BigQuery projector sent to the dead-letter topic.",
		offsetHelp:     "Next offset to project into BigQuery, by partition.",
		batchStart:     0.01, batchBuckets: 14, visibility: bigQueryVisibilityBuckets,
	})}
	m.billed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_bigquery_bytes_billed_total",
		Help: "Bytes BigQuery billed for the projector's statements (processed where it reports no billing, as emulators do), by statement."}, []string{"statement"})
	m.appended = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_bigquery_appended_bytes_total",
		Help: "Bytes of rows appended through the Storage Write API, by table."}, []string{"table"})
	m.steps = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_bigquery_flush_step_seconds",
		Help:    "Time a live flush spends in each step: append (all partitions' streams), refresh (current_inventory's MERGE and its table), intent (recording the streams in projector_offsets), commit (committing the streams and settling their rows).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"step"})
	reg.MustRegister(m.billed, m.appended, m.steps)
	return m
}

// flushStep records how long a step of a live flush took.
func (m *BigQueryMetrics) flushStep(step string, d time.Duration) {
	if m != nil {
		m.steps.WithLabelValues(step).Observe(d.Seconds())
	}
}

func (m *BigQueryMetrics) statementBilled(statement string, bytes int64) {
	if m != nil {
		m.billed.WithLabelValues(statement).Add(float64(bytes))
	}
}

func (m *BigQueryMetrics) appendedBytes(table string, bytes int) {
	if m != nil {
		if strings.HasPrefix(table, stagingPrefix) {
			table = "refresh"
		}
		m.appended.WithLabelValues(table).Add(float64(bytes))
	}
}

// flushed records the partitions a flush settled.
func (m *BigQueryMetrics) flushed(done []offsetRow, recorded []time.Time) {
	if m == nil || len(done) == 0 {
		return
	}
	m.events.WithLabelValues().Add(float64(len(recorded)))
	m.batchDone("written", done, 0, slices.Values(recorded))
}

func (m *BigQueryMetrics) batchWritten(offsets []offsetRow, rows []eventRow, d time.Duration) {
	if m == nil {
		return
	}
	m.events.WithLabelValues().Add(float64(len(rows)))
	m.batchDone("written", offsets, d, func(yield func(time.Time) bool) {
		for _, r := range rows {
			if !yield(r.e.GetRecordedAt().AsTime()) {
				return
			}
		}
	})
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
