package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
)

// ReplayFrom is where a BigQuery replay starts in every partition: at
// Offset, or, when Time is set, at the first record written at or after
// Time.
type ReplayFrom struct {
	Offset int64
	Time   time.Time
}

// ReplayProgress is a replay's progress.
type ReplayProgress struct {
	// Offsets of the range passed so far, of Total (transaction markers
	// take offsets too); Events re-fed so far.
	Offsets, Total int64
	Events         int64
	Batches        int
	Elapsed        time.Duration
	// Indexing: the log is loaded and the rebuild builds the ledger's key
	// (Rebuild only).
	Indexing bool
}

// ETA is the time left at the rate so far, while loading (0: unknown).
func (p ReplayProgress) ETA() time.Duration {
	if p.Offsets <= 0 || p.Total <= p.Offsets || p.Indexing {
		return 0
	}
	return time.Duration(float64(p.Elapsed) * float64(p.Total-p.Offsets) / float64(p.Offsets))
}

// ReplayBigQuery re-feeds the events topic into BigQuery from `from` up to
// each partition's end as of the call, through the projector's own stage
// and MERGE steps, so events already there are left as they are and
// current_inventory only moves to higher sku_versions. It never moves
// projector_offsets: the live projector keeps its place. progress, when
// set, is called after every batch.
func ReplayBigQuery(ctx context.Context, cfg BigQueryConfig, from ReplayFrom, progress func(ReplayProgress)) (ReplayProgress, error) {
	cfg.defaults()
	cfg.BatchRows = cfg.MaxBatchRows
	b, err := NewBigQuery(cfg)
	if err != nil {
		return ReplayProgress{}, err
	}
	if err := b.Setup(ctx); err != nil {
		return ReplayProgress{}, err
	}
	starts, ends, err := replayRange(ctx, cfg.Brokers, cfg.Kafka, cfg.Topic, from)
	if err != nil {
		return ReplayProgress{}, err
	}
	var prog ReplayProgress
	for p, end := range ends {
		if starts[p] < end {
			prog.Total += end - starts[p]
		} else {
			delete(starts, p)
		}
	}
	if len(starts) == 0 {
		return prog, nil
	}
	defer b.drops.Wait()
	start := time.Now()
	err = replayLog(ctx, b, b.loopConfig(), starts, false, func(passed, _, records int64) {
		prog.Offsets, prog.Events = passed, records
		prog.Batches++
		prog.Elapsed = time.Since(start)
		if progress != nil {
			progress(prog)
		}
	})
	if err != nil {
		return prog, err
	}
	prog.Elapsed = time.Since(start)
	prog.Offsets = prog.Total
	return prog, nil
}

// replayRange resolves from into a start offset per partition, and each
// partition's last stable offset as its end.
func replayRange(ctx context.Context, brokers []string, sec *kafka.Security, topic string, from ReplayFrom) (starts, ends map[int32]int64, err error) {
	cl, err := kgo.NewClient(kafka.Options(brokers, sec, nil)...)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	endOffsets, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = endOffsets.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	if len(endOffsets[topic]) == 0 {
		return nil, nil, fmt.Errorf("topic %s not found", topic)
	}
	var startOffsets kadm.ListedOffsets
	if from.Time.IsZero() {
		startOffsets, err = adm.ListStartOffsets(ctx, topic)
	} else {
		startOffsets, err = adm.ListOffsetsAfterMilli(ctx, from.Time.UnixMilli(), topic)
	}
	if err == nil {
		err = startOffsets.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	starts, ends = map[int32]int64{}, map[int32]int64{}
	endOffsets.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	startOffsets.Each(func(o kadm.ListedOffset) {
		s := o.Offset // the log start, or the first offset at/after Time
		if from.Time.IsZero() {
			s = max(s, from.Offset)
		}
		if s < 0 { // no record after Time
			s = ends[o.Partition]
		}
		starts[o.Partition] = min(s, ends[o.Partition])
	})
	if len(starts) == 0 {
		return nil, nil, errors.New("no partitions to replay")
	}
	return starts, ends, nil
}
