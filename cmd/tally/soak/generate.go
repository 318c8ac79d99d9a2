package soak

import (
	"fmt"
	"math/rand"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/command/domain"
	"github.com/tally-oss/tally/internal/kafka"
)

// generator makes the soak's log: commands of the bench's shape (Zipf SKU
// popularity, uniform stores, the --mix of kinds), each decided by the
// writer's own command.Decide against the state the log so far folds to,
// so every event is one a partition writer would have appended. Refused
// commands (a sale beyond the stock) leave nothing, as in a writer. Event
// i of total is recorded at start + span·i/total, ending now.
type generator struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	zipfS  float64
	mix    bench.Mix
	skus   []string
	parts  []int32 // partition of each SKU
	stores []string
	users  []string
	state  []*domain.SKU // nil: no events yet
	runID  string
	seq    int64

	start time.Time
	span  time.Duration
	total int
	made  int // events made so far
}

func newGenerator(cfg bench.SoakConfig, end time.Time) *generator {
	rng := rand.New(rand.NewSource(cfg.Seed))
	g := &generator{
		rng: rng, zipf: rand.NewZipf(rng, cfg.Zipf, 1, uint64(cfg.SKUs-1)), zipfS: cfg.Zipf, mix: cfg.Mix,
		skus: make([]string, cfg.SKUs), parts: make([]int32, cfg.SKUs), state: make([]*domain.SKU, cfg.SKUs),
		runID: strconv.FormatInt(end.Unix(), 36), start: end.Add(-cfg.HistorySpan), span: cfg.HistorySpan, total: cfg.Events,
	}
	for i := range g.skus {
		g.skus[i] = bench.SKUName(i)
		g.parts[i] = kafka.PartitionFor(g.skus[i], int32(cfg.Partitions))
	}
	for i := range cfg.Stores {
		g.stores = append(g.stores, bench.StoreName(i))
		g.users = append(g.users, fmt.Sprintf("pos-%03d-1", i))
	}
	return g
}

// command is the next command of the workload and the index of its SKU.
// Its id is about 20 characters, like a client's.
func (g *generator) command() (*command.Command, int) {
	g.seq++
	sku := int(g.zipf.Uint64())
	store := g.rng.Intn(len(g.stores))
	c := &command.Command{ID: "soak-" + g.runID + "-" + strconv.FormatInt(g.seq, 10), SKU: g.skus[sku], Store: g.stores[store], UserID: g.users[store]}
	roll := g.rng.Intn(100)
	switch m := g.mix; {
	case roll < m.Sale:
		c.Kind, c.Quantity = command.KindSale, int64(1+g.rng.Intn(3))
	case roll < m.Sale+m.Return:
		c.Kind, c.Quantity = command.KindReturn, 1
	case roll < m.Sale+m.Return+m.Receipt:
		c.Kind, c.Quantity = command.KindReceipt, int64(10+g.rng.Intn(41))
	default:
		to := (store + 1 + g.rng.Intn(len(g.stores)-1)) % len(g.stores)
		c.Kind, c.ToStore, c.Quantity = command.KindTransfer, g.stores[to], int64(1+g.rng.Intn(5))
	}
	return c, sku
}

// next returns the records of the next accepted command and their
// partition.
func (g *generator) next() (int32, []*kgo.Record, error) {
	for {
		c, i := g.command()
		s := g.state[i]
		if s == nil {
			s = domain.NewSKU(c.SKU)
			g.state[i] = s
		}
		// Events past total (appended after the log, to restart on) are
		// recorded at its end.
		at := g.start.Add(time.Duration(float64(g.span) * min(float64(g.made)/float64(g.total), 1))).UTC()
		events, err := command.Decide(s, c, at, newEventID)
		if err != nil {
			continue // refused, as a writer would: nothing in the log
		}
		recs := make([]*kgo.Record, len(events))
		for j, e := range events {
			if err := s.Apply(e); err != nil {
				return 0, nil, fmt.Errorf("the decided event does not apply: %w", err)
			}
			v, err := proto.Marshal(e)
			if err != nil {
				return 0, nil, err
			}
			// What a partition writer's commit builds (command/writer.go).
			recs[j] = &kgo.Record{
				Key: []byte(c.SKU), Value: v, Partition: g.parts[i], Timestamp: at,
				Headers: []kgo.RecordHeader{
					{Key: kafka.HeaderSchema, Value: []byte(kafka.EventSchema)},
					{Key: kafka.HeaderSchemaVersion, Value: []byte(kafka.EventSchemaVersion)},
				},
			}
		}
		g.made += len(recs)
		return g.parts[i], recs, nil
	}
}

// queryKeys are up to n (SKU, store) pairs with stock history, drawn by
// popularity, for the query measurements.
func (g *generator) queryKeys(n int) []bench.StockKey {
	rng := rand.New(rand.NewSource(int64(n)))
	zipf := rand.NewZipf(rng, g.zipfS, 1, uint64(len(g.skus)-1))
	seen := map[bench.StockKey]bool{}
	var out []bench.StockKey
	for tries := 0; len(out) < n && tries < 100*n; tries++ {
		s := g.state[zipf.Uint64()]
		if s == nil {
			continue
		}
		store := g.stores[rng.Intn(len(g.stores))]
		k := bench.StockKey{SKU: s.ID, Store: store}
		if _, ok := s.Stores[store]; ok && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func newEventID() string { return uuid.Must(uuid.NewV7()).String() }
