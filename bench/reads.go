package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// The reads `tally bench --reads` mixes in (issue #17): what POS and
// e-commerce ask far more often than they write.
const (
	readGet     = "GetStock"
	readBatch   = "BatchGetStock"
	readList    = "ListStock"
	readHistory = "GetStockHistory"
)

// readKinds are the reads in the order they are reported.
var readKinds = []string{readGet, readBatch, readList, readHistory}

// ReadMix is the share of each read, in percent.
type ReadMix map[string]int

// ParseReadMix parses "get=70,batch=20,list=5,history=5" (percentages
// summing to 100).
func ParseReadMix(s string) (ReadMix, error) {
	names := map[string]string{"get": readGet, "batch": readBatch, "list": readList, "history": readHistory}
	m := ReadMix{}
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 || names[k] == "" {
			return nil, fmt.Errorf("read mix %q: want name=percent with names get, batch, list, history", part)
		}
		m[names[k]] += n
		total += n
	}
	if total != 100 {
		return nil, fmt.Errorf("read mix %q sums to %d, want 100", s, total)
	}
	return m, nil
}

// ReadStats is one read RPC's figures in a run.
type ReadStats struct {
	Calls  int64 `json:"calls"`
	Errors int64 `json:"errors"`
	// ErrorCodes counts the errors by gRPC code, "overload" for a call not
	// made because --concurrency calls were in flight.
	ErrorCodes map[string]int64 `json:"error_codes,omitempty"`
	QPS        float64          `json:"qps"`
	Latency    Percentiles      `json:"latency_ms"`
	// CacheHitRate is the share of the levels this RPC looked up that the
	// query instance's cache held (GetStock and BatchGetStock of Tally).
	CacheHitRate *float64 `json:"cache_hit_rate,omitempty"`
}

// failed counts a call that failed with code.
func (s *ReadStats) failed(code string) {
	s.Calls++
	s.Errors++
	if s.ErrorCodes == nil {
		s.ErrorCodes = map[string]int64{}
	}
	s.ErrorCodes[code]++
}

// readOpts are a read drive's parameters.
type readOpts struct {
	rate        float64 // reads per second, all kinds
	mix         ReadMix
	skus        int // reads pick among the SKUs the run stocked at every store
	stores      int
	zipf        float64
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	seed        int64
}

// driveReads runs an open-loop schedule of reads against q for warmup +
// duration: SKUs by Zipf popularity among those stocked at every store,
// stores uniform; BatchGetStock asks for 100 keys, ListStock and
// GetStockHistory for a page of 100. A call that cannot start because
// concurrency calls are in flight is counted as an error, so an
// overloaded service shows as errors, not as a lower offered rate.
func driveReads(ctx context.Context, q inventoryv1.QueryServiceClient, o readOpts) map[string]*ReadStats {
	r := rand.New(rand.NewPCG(uint64(o.seed), 17))
	zipf := rand.NewZipf(r, o.zipf, 1, uint64(max(o.skus-1, 1)))
	var kinds []string
	for _, k := range readKinds {
		for range o.mix[k] {
			kinds = append(kinds, k)
		}
	}
	key := func() *inventoryv1.StockKey {
		return &inventoryv1.StockKey{SkuId: SKUName(int(zipf.Uint64())), StoreId: StoreName(r.IntN(o.stores))}
	}
	var (
		mu    sync.Mutex
		hists = map[string]*hdrhistogram.Histogram{}
		stats = map[string]*ReadStats{}
		wg    sync.WaitGroup
		slots = make(chan struct{}, o.concurrency)
	)
	for _, k := range readKinds {
		hists[k], stats[k] = newHist(), &ReadStats{}
	}
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)
	interval := time.Duration(float64(time.Second) / o.rate)
	for i := int64(0); ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) || ctx.Err() != nil {
			break
		}
		kind := kinds[r.IntN(len(kinds))]
		var call func(context.Context) error
		switch kind {
		case readGet:
			k := key()
			call = func(ctx context.Context) error {
				_, err := q.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: k.GetSkuId(), StoreId: k.GetStoreId()})
				return err
			}
		case readBatch:
			keys := make([]*inventoryv1.StockKey, 100)
			for j := range keys {
				keys[j] = key()
			}
			call = func(ctx context.Context) error {
				_, err := q.BatchGetStock(ctx, &inventoryv1.BatchGetStockRequest{Keys: keys})
				return err
			}
		case readList:
			store := StoreName(r.IntN(o.stores))
			call = func(ctx context.Context) error {
				_, err := q.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: store, PageSize: 100})
				return err
			}
		case readHistory:
			k := key()
			call = func(ctx context.Context) error {
				_, err := q.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: k.GetSkuId(), StoreId: k.GetStoreId(), PageSize: 100})
				return err
			}
		}
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		measured := !at.Before(measureFrom)
		select {
		case slots <- struct{}{}:
		default:
			if measured {
				mu.Lock()
				stats[kind].failed("overload")
				mu.Unlock()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := call(ctx)
			// From when the call was due, as the commands are timed: a
			// schedule that fell behind counts as latency (no coordinated
			// omission).
			took := time.Since(at)
			if !measured {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				stats[kind].failed(status.Code(err).String())
				return
			}
			stats[kind].Calls++
			_ = hists[kind].RecordValue(took.Microseconds())
		}()
	}
	wg.Wait()
	out := map[string]*ReadStats{}
	for _, k := range readKinds {
		if o.mix[k] == 0 {
			continue
		}
		s := stats[k]
		s.Latency = percentiles(hists[k])
		s.QPS = float64(s.Calls-s.Errors) / o.duration.Seconds()
		out[k] = s
	}
	return out
}

// printReads writes the runs' read figures as a table, one line per RPC.
func printReads(out io.Writer, runs []*run) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tread\tcalls\tQPS\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\tcache hits\t")
	for _, x := range runs {
		for _, k := range readKinds {
			if s := x.Reads[k]; s != nil {
				hits := "-"
				if s.CacheHitRate != nil {
					hits = fmt.Sprintf("%.1f%%", 100**s.CacheHitRate)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t\n", x.Target, k, s.Calls, s.QPS,
					s.Latency.P50, s.Latency.P99, s.Latency.P999, s.Latency.Max, s.Errors, hits)
			}
		}
	}
	tw.Flush()
}
