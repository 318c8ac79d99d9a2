package bench

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/progress"
)

// job is one scheduled call: its commands and when the open-loop schedule
// said it should start. Latency counts from that moment, so a slow server
// cannot hide latency by delaying the next send (no coordinated omission).
type job struct {
	at     time.Time
	cmds   []*inventoryv1.Command
	sample bool // probe write→query visibility for its first accepted command
	warm   bool // inside the warmup: not recorded
}

// run is what one drive measured.
type run struct {
	Target     string           `json:"target"`
	Rate       float64          `json:"offered_rate"`
	Batch      int              `json:"batch"`
	Duration   time.Duration    `json:"duration_ns"`
	Commands   int64            `json:"commands"`
	Accepted   int64            `json:"accepted"`
	Rejected   map[string]int64 `json:"rejected"`
	Achieved   float64          `json:"achieved_rate"`
	Sustained  bool             `json:"sustained"`
	Latency    Percentiles      `json:"command_latency_ms"`
	Visibility *Percentiles     `json:"visibility_ms,omitempty"`
	VisSamples int64            `json:"visibility_samples,omitempty"`
	VisSkipped int64            `json:"visibility_skipped,omitempty"`
	Projector  *Percentiles     `json:"projector_visibility_ms,omitempty"`
	LagAtEnd   *int64           `json:"projector_lag_at_end,omitempty"`
	// Reads are the read RPCs' figures, with --reads.
	Reads       map[string]*ReadStats `json:"reads,omitempty"`
	accepted    []acceptedCmd
	acceptedMux sync.Mutex
}

type acceptedCmd struct {
	id       string
	transfer bool
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	P50, P95, P99, P999, Max float64
	Count                    int64
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		P50: ms(h.ValueAtQuantile(50)), P95: ms(h.ValueAtQuantile(95)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Count: h.TotalCount(),
	}
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 120_000_000, 3) }

// driveOpts are one drive's parameters.
type driveOpts struct {
	name        string
	rate        float64 // commands per second
	batch       int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	sampleRate  float64
	seed        int64
	// probe measures visibility of an accepted command (nil = none).
	probe func(ctx context.Context, sku, store string, version int64) error
	// keepAccepted records accepted command ids for the audit.
	keepAccepted bool
	progress     bool
}

// drive runs an open-loop schedule against t.
func drive(ctx context.Context, t target, w *workload, o driveOpts) *run {
	r := &run{Target: o.name, Rate: o.rate, Batch: o.batch, Duration: o.duration, Rejected: map[string]int64{}}
	callsPerSec := o.rate / float64(o.batch)
	interval := time.Duration(float64(time.Second) / callsPerSec)
	jobs := make(chan job, 1<<16)
	sampler := rand.New(rand.NewSource(o.seed + 7))

	var (
		mu                      sync.Mutex
		lat, vis                = newHist(), newHist()
		done, accepted, pending atomic.Int64
		visSamples, visSkipped  atomic.Int64
		probes                  = make(chan struct{}, 64)
		probeWG                 sync.WaitGroup
	)
	start := time.Now().Add(50 * time.Millisecond)
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)

	// Dispatcher: the schedule, generated in one goroutine from the seeded
	// workload so the command sequence is repeatable.
	go func() {
		defer close(jobs)
		for i := int64(0); ; i++ {
			at := start.Add(time.Duration(i) * interval)
			if !at.Before(end) || ctx.Err() != nil {
				return
			}
			cmds := make([]*inventoryv1.Command, o.batch)
			for j := range cmds {
				cmds[j] = w.next()
			}
			j := job{at: at, cmds: cmds, warm: at.Before(measureFrom), sample: sampler.Float64() < o.sampleRate*float64(o.batch)}
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			pending.Add(1)
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
	}()

	stopProgress := make(chan struct{})
	if o.progress {
		// A bar on a terminal, a line every 10 s elsewhere.
		line := progress.New(os.Stderr, 10*time.Second)
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stopProgress:
					line.Done()
					return
				case <-tick.C:
					el := time.Since(start)
					line.Show(float64(el)/float64(o.warmup+o.duration), fmt.Sprintf("%s %5.1fs  done %d cmds  accepted %d  in flight %d calls  %.0f cmds/s",
						o.name, el.Seconds(), done.Load(), accepted.Load(), pending.Load(), float64(done.Load())/el.Seconds()))
				}
			}
		}()
	}

	var wg sync.WaitGroup
	var lastDone atomic.Int64
	var errOnce sync.Once
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := newHist()
			defer func() { mu.Lock(); lat.Merge(local); mu.Unlock() }()
			for j := range jobs {
				outs, err := t.do(ctx, j.cmds)
				now := time.Now()
				pending.Add(-1)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errOnce.Do(func() {
						fmt.Fprintf(os.Stderr, "\n%s: a call failed (later failures are only counted): %v\n", o.name, err)
					})
					outs = make([]outcome, len(j.cmds))
					for i := range outs {
						outs[i] = outcome{reason: reasonOf(err)}
					}
				}
				if j.warm {
					continue
				}
				lastDone.Store(now.UnixNano())
				_ = local.RecordValue(now.Sub(j.at).Microseconds())
				done.Add(int64(len(j.cmds)))
				sampled := false
				for i, out := range outs {
					if !out.accepted {
						mu.Lock()
						r.Rejected[out.reason]++
						mu.Unlock()
						continue
					}
					accepted.Add(1)
					if o.keepAccepted {
						r.acceptedMux.Lock()
						r.accepted = append(r.accepted, acceptedCmd{id: commandID(j.cmds[i]), transfer: kindName(j.cmds[i]) == "transfer"})
						r.acceptedMux.Unlock()
					}
					if j.sample && !sampled && o.probe != nil {
						sampled = true
						select {
						case probes <- struct{}{}:
						default:
							visSkipped.Add(1)
							continue
						}
						sku, store := keyOf(j.cmds[i])
						if tr := j.cmds[i].GetTransfer(); tr != nil {
							store = tr.GetToStoreId()
						}
						probeWG.Add(1)
						go func(version int64, t0 time.Time) {
							defer func() { <-probes; probeWG.Done() }()
							if err := o.probe(ctx, sku, store, version); err == nil {
								mu.Lock()
								_ = vis.RecordValue(time.Since(t0).Microseconds())
								mu.Unlock()
								visSamples.Add(1)
							}
						}(out.version, now)
					}
				}
			}
		}()
	}
	wg.Wait()
	probeWG.Wait()
	close(stopProgress)

	r.Commands, r.Accepted = done.Load(), accepted.Load()
	finished := time.Unix(0, lastDone.Load())
	elapsed := max(finished.Sub(measureFrom), o.duration)
	r.Achieved = float64(r.Commands) / elapsed.Seconds()
	// Sustained: the schedule's commands were all answered within 5% of
	// the run's length after it ended, and at least 95% of the rate.
	r.Sustained = r.Achieved >= 0.95*o.rate && finished.Sub(end) < o.duration/20+time.Second
	r.Latency = percentiles(lat)
	if vis.TotalCount() > 0 {
		p := percentiles(vis)
		r.Visibility = &p
	}
	r.VisSamples, r.VisSkipped = visSamples.Load(), visSkipped.Load()
	return r
}
