package command

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the write side's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	commits        *prometheus.CounterVec
	commitSeconds  prometheus.Histogram
	eventsAppended prometheus.Counter
	outcomes       *prometheus.CounterVec
	rebuildFails   *prometheus.CounterVec
	rebalances     *prometheus.CounterVec
	forwarded      *prometheus.CounterVec
	forwardSeconds *prometheus.HistogramVec
	replayReads    prometheus.Counter
	dedupe         *prometheus.GaugeVec
	snapshots      *prometheus.CounterVec
	snapshotSecs   prometheus.Histogram
	opens          *prometheus.HistogramVec
}

// NewMetrics registers the write side's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_writer_transactions_total",
			Help: "Kafka transactions ended by partition writers, by partition and result.",
		}, []string{"partition", "result"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tally_writer_transaction_duration_seconds",
			Help:    "Time to decide a group-committed batch and commit its Kafka transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		eventsAppended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_writer_events_appended_total",
			Help: "Events committed to the log.",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_commands_total",
			Help: "Commands answered, by outcome: accepted (events appended), replayed (a retry of an accepted command: nothing appended), the writers' rejections (version_conflict, insufficient_stock, command_id_reused, unavailable, other) and those made before a writer sees the command (invalid_argument, permission_denied).",
		}, []string{"outcome"}),
		rebuildFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_writer_rebuild_failures_total",
			Help: "Partition rebuilds that failed, by partition and reason: stalled (the log's end was not reached in time) or version_gap (a SKU's versions are not contiguous: the partition takes no commands).",
		}, []string{"partition", "reason"}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_command_partitions_moved_total",
			Help: "Partitions assigned to or revoked from this instance by the writers' group, by change.",
		}, []string{"change"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_command_forwarded_total",
			Help: "Calls forwarded to the instance that writes their partition, by RPC and result (ok, error: the owner's answer relayed; retried: the owner could not be reached or no longer writes it).",
		}, []string{"rpc", "result"}),
		forwardSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tally_command_forward_duration_seconds",
			Help:    "Time of one forwarded call, from sending it to the owner to its answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"rpc"}),
		replayReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_writer_replays_read_total",
			Help: "Retries of commands accepted earlier answered by reading the original events back from the log (older than the latest results the writers keep).",
		}),
		dedupe: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tally_writer_dedupe_commands",
			Help: "Command ids a partition's writer remembers (the dedupe window), by partition.",
		}, []string{"partition"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_writer_snapshots_total",
			Help: "Writer snapshots written to the snapshots topic, by partition, kind (full, increment) and result.",
		}, []string{"partition", "kind", "result"}),
		snapshotSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tally_writer_snapshot_duration_seconds",
			Help:    "Time to encode and commit one writer snapshot (in the background: the group commit goes on meanwhile).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		opens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tally_writer_open_duration_seconds",
			Help:    "Time for a partition writer to take over a partition and rebuild its state, by where it started: snapshot, or log (from offset 0).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}, []string{"from"}),
	}
	reg.MustRegister(m.commits, m.commitSeconds, m.eventsAppended, m.outcomes, m.rebuildFails, m.rebalances, m.forwarded, m.forwardSeconds,
		m.replayReads, m.dedupe, m.snapshots, m.snapshotSecs, m.opens)
	return m
}

func (m *Metrics) observeCommit(partition int32, records int, d time.Duration, err error) {
	if m == nil || records == 0 {
		return
	}
	result := "committed"
	if err != nil {
		result = "failed"
	} else {
		m.eventsAppended.Add(float64(records))
	}
	m.commits.WithLabelValues(strconv.Itoa(int(partition)), result).Inc()
	m.commitSeconds.Observe(d.Seconds())
}

// observeRejected counts a command refused before it reached a writer:
// malformed, or not allowed to the caller.
func (m *Metrics) observeRejected(err error) {
	if m == nil {
		return
	}
	var pe *PermissionError
	outcome := "invalid_argument"
	if errors.As(err, &pe) {
		outcome = "permission_denied"
	}
	m.outcomes.WithLabelValues(outcome).Inc()
}

// observeOutcome counts a writer's answer to a command; replayed is a
// retry answered from what the writer remembers or from the log.
func (m *Metrics) observeOutcome(err error, replayed bool) {
	if m == nil {
		return
	}
	var (
		vc *VersionConflictError
		is *InsufficientStockError
		cr *CommandIDReusedError
	)
	outcome := "accepted"
	switch {
	case err == nil && replayed:
		outcome = "replayed"
	case err == nil:
	case errors.As(err, &vc):
		outcome = "version_conflict"
	case errors.As(err, &is):
		outcome = "insufficient_stock"
	case errors.As(err, &cr):
		outcome = "command_id_reused"
	case errors.Is(err, ErrUnavailable):
		outcome = "unavailable"
	default:
		outcome = "other"
	}
	m.outcomes.WithLabelValues(outcome).Inc()
}

func (m *Metrics) observeRebuildFailure(partition int32, reason string) {
	if m == nil {
		return
	}
	m.rebuildFails.WithLabelValues(strconv.Itoa(int(partition)), reason).Inc()
}

func (m *Metrics) rebalanced(change string, partitions int) {
	if m != nil {
		m.rebalances.WithLabelValues(change).Add(float64(partitions))
	}
}

func (m *Metrics) forward(rpc, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.forwarded.WithLabelValues(rpc, result).Inc()
	m.forwardSeconds.WithLabelValues(rpc).Observe(d.Seconds())
}

func (m *Metrics) observeReplayRead() {
	if m != nil {
		m.replayReads.Inc()
	}
}

func (m *Metrics) observeDedupe(partition int32, n int) {
	if m != nil {
		m.dedupe.WithLabelValues(strconv.Itoa(int(partition))).Set(float64(n))
	}
}

func (m *Metrics) observeSnapshot(partition int32, full bool, d time.Duration, err error) {
	if m == nil {
		return
	}
	kind, result := "increment", "committed"
	if full {
		kind = "full"
	}
	if err != nil {
		result = "failed"
	} else {
		m.snapshotSecs.Observe(d.Seconds())
	}
	m.snapshots.WithLabelValues(strconv.Itoa(int(partition)), kind, result).Inc()
}

func (m *Metrics) observeOpen(partition int32, fromSnapshot bool, d time.Duration) {
	if m == nil {
		return
	}
	// The partition's failure counters start at 0, so that alerts on
	// their increase see the first one.
	for _, reason := range []string{"stalled", "version_gap"} {
		m.rebuildFails.WithLabelValues(strconv.Itoa(int(partition)), reason)
	}
	from := "log"
	if fromSnapshot {
		from = "snapshot"
	}
	m.opens.WithLabelValues(from).Observe(d.Seconds())
}
