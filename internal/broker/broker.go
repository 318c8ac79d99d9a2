// Package broker is the embedded Kafka broker of `tally serve`, `tally check`
// offline and the tests: franz-go's kfake, speaking the real protocol and
// persisting to disk, made safe to restart after a crash. Only the embedded
// wiring and tests import it; the command, projector and query roles talk to
// any Kafka through package kafka and never link kfake.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
)

// Embedded is an in-process Kafka broker (franz-go's kfake) that speaks the
// real protocol and persists to disk, for `tally serve` and tests.
type Embedded struct {
	cluster *kfake.Cluster
	dataDir string
}

// Opt configures StartEmbedded.
type Opt func(*embeddedConfig)

type embeddedConfig struct {
	noSync, noRepair bool
}

// NoSyncWrites turns off the fsync of every acknowledged batch: an
// acknowledged record then survives a process kill but not a power cut. The
// default syncs.
func NoSyncWrites() Opt { return func(c *embeddedConfig) { c.noSync = true } }

// NoRepair opens the data directory as the crash left it, without writing
// abort markers (for `tally check`, which reports what it finds). The next
// start without NoRepair still repairs.
func NoRepair() Opt { return func(c *embeddedConfig) { c.noRepair = true } }

// Start starts a one-broker cluster. dataDir "" keeps everything in
// memory; port 0 picks a free port. With a dataDir, every acknowledged write
// is fsynced (unless NoSyncWrites) and, after a crash, every transaction the
// crash left open gets its abort marker before any client can reach the
// broker (see RepairOpenTransactions).
func Start(dataDir string, port int, log *slog.Logger, opts ...Opt) (*Embedded, error) {
	var cfg embeddedConfig
	for _, o := range opts {
		o(&cfg)
	}
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.ClusterID("tally-embedded"),
		// Real brokers refuse group session timeouts under 6 s by default
		// (group.min.session.timeout.ms); this one takes 1 s, so command
		// instances can be told to move a silent instance's partitions in
		// about two (--group-session-timeout).
		kfake.GroupMinSessionTimeout(time.Second)}
	clean := false
	if dataDir != "" {
		if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
			return nil, err
		}
		kopts = append(kopts, kfake.DataDir(dataDir))
		if !cfg.noSync {
			kopts = append(kopts, kfake.SyncWrites())
		}
		// The marker of a clean shutdown is consumed by this start: if this
		// process dies, the next start repairs.
		if err := os.Remove(cleanMarker(dataDir)); err == nil {
			clean = true
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("embedded kafka: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "meta.json")); errors.Is(err, os.ErrNotExist) {
			clean = true // a new data directory: nothing to repair
		}
		if !clean && !cfg.noRepair {
			if err := repairDataDir(dataDir, kopts, log); err != nil {
				return nil, err
			}
		}
	}
	c, err := kfake.NewCluster(append(kopts, kfake.Ports(port))...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}
	if log != nil {
		log.Info("embedded kafka started", "addrs", c.ListenAddrs(), "data_dir", dataDir, "sync_writes", dataDir != "" && !cfg.noSync, "clean_start", clean)
	}
	return &Embedded{cluster: c, dataDir: dataDir}, nil
}

// repairDataDir loads a data directory a crash left behind on a loopback
// port no client knows, writes the missing abort markers, and closes it
// again (the broker then writes its snapshots, so the real start is fast).
// Its partition snapshots and session state are removed first, so it loads
// as after a crash: kfake indexes a transaction a crash left open as aborted
// only when it replays the segments, while a snapshot or the session state
// of a stop with a transaction open describes it as still open, and aborting
// it a second time (as kfake then does when its producer returns) leaves an
// index entry that hides the producer's next transaction from read_committed
// clients.
func repairDataDir(dataDir string, kopts []kfake.Opt, log *slog.Logger) error {
	snaps, err := filepath.Glob(filepath.Join(dataDir, "partitions", "*", "snapshot.json"))
	if err != nil {
		return err
	}
	for _, f := range append(snaps, filepath.Join(dataDir, "session_state.json")) {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("embedded kafka: %w", err)
		}
	}
	start := time.Now()
	c, err := kfake.NewCluster(append(kopts, kfake.Ports(0))...)
	if err != nil {
		return fmt.Errorf("start embedded kafka: %w", err)
	}
	defer c.Close()
	// No overall deadline: the read is bounded by its stall timeout, and a
	// repair that gave up would leave a broker that never starts.
	n, err := RepairOpenTransactions(context.Background(), c.ListenAddrs())
	if err != nil {
		return fmt.Errorf("embedded kafka: repair transactions left open by a crash: %w", err)
	}
	if log != nil {
		log.Warn("embedded kafka was not shut down cleanly; wrote abort markers for transactions the crash left open",
			"transactions", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// RepairOpenTransactions reads every partition of every topic to its high
// watermark, resolving transactions from the raw records, and writes an
// abort marker for every transaction that has records and no marker. Run it
// only while no transactional producer is active (a broker's start): it
// would abort a transaction in flight. It returns the markers written. The
// markers carry the epoch of the transaction's records, which kfake takes;
// a real broker writes its own markers and never needs this.
//
// kfake, loading a data directory a crash left behind, treats a transaction
// that was open as aborted but writes no marker, and bumps the producer's
// epoch; read_committed consumers then hide every later record of that
// producer until a marker of its comes, which never does. The marker written
// here ends that. A log where the producer already committed more
// transactions after the unmarked one cannot be repaired this way (a marker
// can only be appended after them); Tally's own readers resolve it by epoch
// (see Resolver), and `tally check` reports it.
func RepairOpenTransactions(ctx context.Context, brokers []string) (int, error) {
	cl, err := kgo.NewClient(kafka.Options(brokers, nil, nil)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, topic := range topics.Names() {
		r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: brokers, Topic: topic, ToHighWatermark: true})
		if err != nil {
			return n, err
		}
		for !r.Done() {
			if _, err := r.Poll(ctx); err != nil {
				r.Close()
				return n, err
			}
		}
		r.Close()
		for p, open := range r.OpenAtEnd() {
			for pid, epoch := range open {
				resp, err := adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{
					ProducerID: pid, ProducerEpoch: epoch, Commit: false,
					Topics: kadm.TopicsSet{topic: {p: {}}},
				})
				if err == nil {
					resp.EachPartition(func(pr kadm.TxnMarkersPartitionResponse) { err = errors.Join(err, pr.Err) })
				}
				if err != nil {
					return n, fmt.Errorf("abort marker for producer %d on %s[%d]: %w", pid, topic, p, err)
				}
				n++
			}
		}
	}
	return n, nil
}

func cleanMarker(dataDir string) string { return filepath.Clean(dataDir) + ".clean-shutdown" }

// Addrs are the broker addresses to give clients.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Close stops the broker, flushing its data to disk, and marks the data
// directory as shut down cleanly when no transaction is open (else the next
// start repairs).
func (e *Embedded) Close() {
	settled := e.dataDir != "" && e.settled()
	e.cluster.Close()
	if settled {
		_ = os.WriteFile(cleanMarker(e.dataDir), nil, 0o644)
	}
}

// settled reports whether every partition's last stable offset is its high
// watermark: no transaction is open.
func (e *Embedded) settled() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kafka.Options(e.Addrs(), nil, nil)...)
	if err != nil {
		return false
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil || len(topics) == 0 {
		return err == nil
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics.Names()...)
	if err != nil || stable.Error() != nil {
		return false
	}
	ends, err := adm.ListEndOffsets(ctx, topics.Names()...)
	if err != nil || ends.Error() != nil {
		return false
	}
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if s, found := stable.Lookup(o.Topic, o.Partition); !found || s.Offset != o.Offset {
			ok = false
		}
	})
	return ok
}
