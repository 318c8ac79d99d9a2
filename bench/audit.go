package bench

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
)

// Audit is the correctness check that ends a run against Tally.
type Audit struct {
	Events            int64    `json:"events"`
	SKUs              int      `json:"skus"`
	Levels            int      `json:"levels_compared"`
	AcceptedChecked   int      `json:"accepted_commands_checked"`
	Problems          []string `json:"problems"`
	problemsTruncated int
}

func (a *Audit) fail(format string, args ...any) {
	if len(a.Problems) >= 20 {
		a.problemsTruncated++
		return
	}
	a.Problems = append(a.Problems, fmt.Sprintf(format, args...))
}

// OK reports whether the audit found nothing wrong.
func (a *Audit) OK() bool { return len(a.Problems) == 0 }

// audit reads the whole log with an independent consumer and checks: every
// accepted command is in it exactly once (two events for a transfer), per
// SKU versions are 1..N in log order, no event takes available stock below
// zero without the allow_negative flag, and the read model (through the
// public API) equals the fold of the log.
func audit(ctx context.Context, brokers []string, q inventoryv1.QueryServiceClient, accepted []acceptedCmd) (*Audit, error) {
	a := &Audit{}
	// Wait for the projection to catch up.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := q.GetProjectionStatus(ctx, &inventoryv1.GetProjectionStatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("projection status: %w", err)
		}
		if st.GetTotalLag() == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("projection still %d behind after 2 minutes", st.GetTotalLag())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The log as it is: transactions resolved from the raw records, read
	// to the last stable offset.
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: brokers, Topic: kafka.EventsTopic, Opts: []kgo.Opt{kgo.FetchMaxBytes(64 << 20)}})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	versions := map[string]int64{}
	counts := map[string]int{}
	type key struct{ sku, store string }
	fold := map[key]*inventoryv1.InventoryEvent{}
	for !r.Done() {
		batches, err := r.Poll(ctx)
		if err != nil {
			return nil, err
		}
		for _, rec := range recordsOf(batches) {
			e := &inventoryv1.InventoryEvent{}
			if err := proto.Unmarshal(rec.Value, e); err != nil {
				a.fail("undecodable record at %d/%d", rec.Partition, rec.Offset)
				continue
			}
			a.Events++
			if e.GetSkuVersion() != versions[e.GetSkuId()]+1 {
				a.fail("sku %s: version %d after %d (gap, repeat or reorder)", e.GetSkuId(), e.GetSkuVersion(), versions[e.GetSkuId()])
			}
			versions[e.GetSkuId()] = e.GetSkuVersion()
			counts[e.GetCommandId()]++
			avail := e.GetOnHandAfter() - e.GetReservedAfter()
			if e.GetQuantityDelta()-e.GetReservedDelta() < 0 && avail < 0 && !e.GetAllowNegative() {
				a.fail("sku %s store %s: available %d without the allow_negative flag", e.GetSkuId(), e.GetStoreId(), avail)
			}
			fold[key{e.GetSkuId(), e.GetStoreId()}] = e
		}
	}
	a.SKUs = len(versions)
	for _, c := range accepted {
		n := 1
		if c.transfer {
			n = 2
		}
		if counts[c.id] != n {
			a.fail("accepted command %s has %d events in the log, want %d", c.id, counts[c.id], n)
		}
		a.AcceptedChecked++
	}
	// The read model, through the API, against the fold.
	keys := make([]key, 0, len(fold))
	for k := range fold {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].sku < keys[j].sku || keys[i].sku == keys[j].sku && keys[i].store < keys[j].store
	})
	for i := 0; i < len(keys); i += 1000 {
		chunk := keys[i:min(i+1000, len(keys))]
		req := &inventoryv1.BatchGetStockRequest{}
		for _, k := range chunk {
			req.Keys = append(req.Keys, &inventoryv1.StockKey{SkuId: k.sku, StoreId: k.store})
		}
		resp, err := q.BatchGetStock(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("batch get: %w", err)
		}
		for _, m := range resp.GetMissing() {
			a.fail("read model lacks %s/%s", m.GetSkuId(), m.GetStoreId())
		}
		for _, l := range resp.GetLevels() {
			e := fold[key{l.GetSkuId(), l.GetStoreId()}]
			if l.GetOnHand() != e.GetOnHandAfter() || l.GetReserved() != e.GetReservedAfter() || l.GetSkuVersion() != e.GetSkuVersion() {
				a.fail("read model %s/%s on_hand %d v%d, log says %d v%d", l.GetSkuId(), l.GetStoreId(), l.GetOnHand(), l.GetSkuVersion(), e.GetOnHandAfter(), e.GetSkuVersion())
			}
			a.Levels++
		}
	}
	if a.problemsTruncated > 0 {
		a.Problems = append(a.Problems, fmt.Sprintf("... and %d more", a.problemsTruncated))
	}
	return a, nil
}

// histogram is a Prometheus histogram's cumulative buckets.
type histogram struct {
	bounds []float64
	counts []uint64
}

// scrape reads a /metrics endpoint.
func scrape(ctx context.Context, addr string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// histogramOf is the first histogram named name in fams.
func histogramOf(fams map[string]*dto.MetricFamily, name string) *histogram {
	f, ok := fams[name]
	if !ok || len(f.GetMetric()) == 0 {
		return nil
	}
	h := &histogram{}
	for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, b.GetCumulativeCount())
	}
	return h
}

// cacheLookups is the query cache's lookups in fams, by RPC and result.
func cacheLookups(fams map[string]*dto.MetricFamily) map[[2]string]float64 {
	out := map[[2]string]float64{}
	for _, m := range fams["tally_query_cache_lookups_total"].GetMetric() {
		var k [2]string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "rpc":
				k[0] = l.GetValue()
			case "result":
				k[1] = l.GetValue()
			}
		}
		out[k] += m.GetCounter().GetValue()
	}
	return out
}

// cacheHitRates sets each read's share of levels served from the query
// cache between two scrapes.
func cacheHitRates(reads map[string]*ReadStats, before, after map[string]*dto.MetricFamily) {
	if before == nil || after == nil {
		return
	}
	b, a := cacheLookups(before), cacheLookups(after)
	for rpc, s := range reads {
		var hits, all float64
		for _, result := range []string{"hit", "miss", "off"} {
			k := [2]string{rpc, result}
			d := a[k] - b[k]
			all += d
			if result == "hit" {
				hits = d
			}
		}
		if all > 0 {
			rate := hits / all
			s.CacheHitRate = &rate
		}
	}
}

// quantilesSince estimates quantiles (upper bucket bounds, ms) of what was
// observed between two scrapes.
func quantilesSince(before, after *histogram) *Percentiles {
	if before == nil || after == nil || len(before.counts) != len(after.counts) {
		return nil
	}
	n := len(after.counts)
	delta := make([]uint64, n)
	for i := range delta {
		delta[i] = after.counts[i] - before.counts[i]
	}
	total := delta[n-1]
	if total == 0 {
		return nil
	}
	q := func(p float64) float64 {
		target := uint64(p * float64(total))
		for i, c := range delta {
			if c >= target {
				return after.bounds[i] * 1000
			}
		}
		return after.bounds[n-1] * 1000
	}
	return &Percentiles{P50: q(0.5), P95: q(0.95), P99: q(0.99), P999: q(0.999), Max: q(1), Count: int64(total)}
}

func recordsOf(batches []kafka.Batch) []*kgo.Record {
	var out []*kgo.Record
	for _, b := range batches {
		out = append(out, b.Records...)
	}
	return out
}

// visibilityMetric is the projector's write→query visibility histogram.
const visibilityMetric = "tally_projector_visibility_seconds"
