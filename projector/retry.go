package projector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
)

// Retried is what RetryDeadLetters did with one dead letter.
type Retried struct {
	Partition int32
	Offset    int64
	SKU       string
	Version   int64
	// Stored is true when the event is in the read model now (and its
	// dead letter gone); Err says why not.
	Stored bool
	Err    error
}

// RetryDeadLetters tries again each event this projector dead-lettered
// (projection_dead_letters), once its cause is fixed (a migration, a
// projector that now decodes it): it reads the event again from the events
// topic at its offset (read_committed), stores it as the projection would
// have (the ledger row if missing, the level only if the event is newer
// than it: a level that moved on already holds the event's totals) and
// deletes the dead letter. A record that still does not decode, or that
// PostgreSQL still refuses, stays dead-lettered. Retrying again is safe: a
// stored event is not stored twice.
func (p *Postgres) RetryDeadLetters(ctx context.Context) ([]Retried, error) {
	p.retryingDead = true
	defer func() { p.retryingDead = false }()
	rows, err := p.cfg.Pool.Query(ctx, `SELECT log_partition, log_offset FROM projection_dead_letters WHERE consumer = $1 ORDER BY 1, 2`, p.cfg.Consumer)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	wanted := map[int32][]int64{}
	for rows.Next() {
		var part int32
		var off int64
		if err := rows.Scan(&part, &off); err != nil {
			return nil, err
		}
		wanted[part] = append(wanted[part], off)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []Retried
	for part, offs := range wanted {
		// A partition that cannot be read is reported, and the others
		// retried.
		recs, readErr := p.readAt(ctx, part, offs)
		for _, off := range offs {
			r := Retried{Partition: part, Offset: off}
			rec := recs[off]
			if readErr != nil {
				r.Err = readErr
				out = append(out, r)
				continue
			}
			if rec == nil {
				r.Err = fmt.Errorf("no committed record at offset %d of partition %d", off, part)
				out = append(out, r)
				continue
			}
			ev := event{rec: rec, e: &inventoryv1.InventoryEvent{}}
			if ev.id, r.Err = decodeEvent(rec, ev.e); r.Err != nil {
				out = append(out, r)
				continue
			}
			r.SKU, r.Version = ev.e.GetSkuId(), ev.e.GetSkuVersion()
			r.Err = p.storeRetried(ctx, ev)
			r.Stored = r.Err == nil
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Retried) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out, nil
}

// storeRetried stores one event through the projector's own staged path
// (offsets untouched), then forgets its dead letter.
func (p *Postgres) storeRetried(ctx context.Context, ev event) error {
	if err := p.ensureMonths(ctx, []event{ev}); err != nil {
		return err
	}
	b := &batch{events: []event{ev}}
	if _, err := p.commitBatch(ctx, b, []ledgerEvent{ledgerRow(ev)}, copyStaged); err != nil {
		return err
	}
	_, err := p.cfg.Pool.Exec(ctx, `DELETE FROM projection_dead_letters WHERE consumer = $1 AND log_partition = $2 AND log_offset = $3`,
		p.cfg.Consumer, ev.rec.Partition, ev.rec.Offset)
	return err
}

// readAt reads the committed records at offs (ascending) of a partition of
// the events topic.
func (p *Postgres) readAt(ctx context.Context, part int32, offs []int64) (map[int64]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(kafka.Options(p.cfg.Brokers, p.cfg.Kafka, nil),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.Topic: {part: kgo.NewOffset().At(offs[0])}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	last := offs[len(offs)-1]
	out := map[int64]*kgo.Record{}
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("read partition %d at %d: %w", part, offs[0], err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if _, ok := slices.BinarySearch(offs, r.Offset); ok {
				out[r.Offset] = r
			}
			done = done || r.Offset >= last
		})
		if done || len(out) == len(offs) {
			return out, nil
		}
	}
}
