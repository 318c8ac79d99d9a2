package projector

import (
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/tally-oss/tally/internal/testenv"
)

// BenchmarkEmulatorMergeCurrent times, on the BigQuery emulator, the one
// MERGE that refreshes current_inventory (mergeCurrent), for a
// current_inventory of `target` (sku, store) rows and a refresh of `changes`
// levels, half of them new pairs: what the freshness of current_inventory
// rests on (DESIGN.md, "Analytical model"). One op is one MERGE; run it
// with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkEmulatorMergeCurrent -benchtime 1x ./projector
func BenchmarkEmulatorMergeCurrent(b *testing.B) {
	for _, c := range []struct{ target, changes int }{{300, 300}, {1000, 300}, {1000, 1000}, {3000, 300}, {3000, 1000}} {
		b.Run(fmt.Sprintf("target=%d/changes=%d", c.target, c.changes), func(b *testing.B) {
			emu := testenv.NewBigQuery(b)
			bq, err := emu.Client(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			defer bq.Close()
			ds := bq.Dataset("merge_bench")
			if err := ds.Create(b.Context(), nil); err != nil {
				b.Fatal(err)
			}
			run := func(sql string) time.Duration {
				b.Helper()
				start := time.Now()
				job, err := bq.Query(sql).Run(b.Context())
				if err == nil {
					var st *bigquery.JobStatus
					st, err = job.Wait(b.Context())
					if err == nil {
						err = st.Err()
					}
				}
				if err != nil {
					b.Fatalf("%s: %v", sql, err)
				}
				return time.Since(start)
			}
			table := func(name string, from, n int) string {
				t := fmt.Sprintf("`%s.merge_bench.%s`", bq.Project(), name)
				run(fmt.Sprintf(`CREATE TABLE %s (sku_id STRING, store_id STRING, on_hand INT64, reserved INT64, sku_version INT64, updated_at TIMESTAMP)`, t))
				run(fmt.Sprintf(`INSERT INTO %s (sku_id, store_id, on_hand, reserved, sku_version, updated_at)
					SELECT CONCAT('sku-', CAST(DIV(i, 3) AS STRING)), CONCAT('S', CAST(MOD(i, 3) AS STRING)), i, 0, %d, CURRENT_TIMESTAMP()
					FROM UNNEST(GENERATE_ARRAY(%d, %d)) AS i`, t, 1+from, from, from+n-1))
				return t
			}
			current := table("current_inventory", 0, c.target)
			levels := table("levels", c.target-c.changes/2, c.changes)
			b.ResetTimer()
			var took time.Duration
			for range b.N {
				took += run(mergeCurrent(current, levels))
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "s/merge")
		})
	}
}
