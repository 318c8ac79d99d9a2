package serve_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

const bqDataset = "serve_test"

// mixedWorkload sends receipts, sales, returns, adjustments, counts, transfers and
// reservations (reserved, committed, released) for SKUs under prefix
// through the generated gRPC client; refused commands are fine.
func mixedWorkload(t *testing.T, prefix string, n int, r *rand.Rand) (accepted int) {
	t.Helper()
	ctx := t.Context()
	stores := []string{"S1", "S2", "S3"}
	open := map[string][]string{} // sku -> active reservation ids
	for i := range n {
		sku := fmt.Sprintf("%s-%d", prefix, r.IntN(15))
		store := stores[r.IntN(3)]
		id := fmt.Sprintf("%s-c%d", prefix, i)
		var err error
		switch k := r.IntN(10); {
		case k < 3:
			_, err = cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: int64(1 + r.IntN(20))})
		case k < 5:
			_, err = cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: int64(1 + r.IntN(5))})
		case k == 5:
			_, err = cmds.RecordReturn(ctx, &inventoryv1.RecordReturnRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: 1})
		case k == 6 && r.IntN(3) == 0:
			_, err = cmds.CountStock(ctx, &inventoryv1.CountStockRequest{CommandId: id, SkuId: sku, StoreId: store, CountedQuantity: int64(r.IntN(15)), VarianceThreshold: 2})
		case k == 6:
			_, err = cmds.AdjustStock(ctx, &inventoryv1.AdjustStockRequest{CommandId: id, SkuId: sku, StoreId: store, QuantityDelta: int64(r.IntN(7)-3) | 1,
				AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT_CORRECTION})
		case k == 7:
			_, err = cmds.TransferStock(ctx, &inventoryv1.TransferStockRequest{CommandId: id, SkuId: sku, FromStoreId: store, ToStoreId: stores[(r.IntN(2)+1+slices.Index(stores, store))%3], Quantity: int64(1 + r.IntN(3))})
		case k == 8:
			rid := id + "-r"
			_, err = cmds.Reserve(ctx, &inventoryv1.ReserveRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: 1, ReservationId: rid, Ttl: durationpb.New(time.Hour)})
			if err == nil {
				open[sku] = append(open[sku], rid)
			}
		default:
			if len(open[sku]) == 0 {
				continue
			}
			rid := open[sku][0]
			open[sku] = open[sku][1:]
			if r.IntN(2) == 0 {
				_, err = cmds.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{CommandId: id, SkuId: sku, ReservationId: rid})
			} else {
				_, err = cmds.ReleaseReservation(ctx, &inventoryv1.ReleaseReservationRequest{CommandId: id, SkuId: sku, ReservationId: rid})
			}
		}
		switch status.Code(err) {
		case codes.OK:
			accepted++
		case codes.FailedPrecondition:
		default:
			t.Fatalf("command %s: %v", id, err)
		}
	}
	return accepted
}

// waitProjections waits until both the BigQuery and the Postgres
// projections reach the log's end as of the call.
func waitProjections(t *testing.T, bq *bigquery.Client) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(t.Context(), kafka.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	conn := pgConn(t)
	defer conn.Close(context.Background())
	deadline := time.Now().Add(90 * time.Second)
	for {
		stored, err := projector.LoadBigQueryOffsets(t.Context(), bq, bqDataset, "bigquery")
		pg := map[int32]int64{}
		rows, qerr := conn.Query(t.Context(), "SELECT log_partition, next_offset FROM projector_offsets WHERE consumer = 'postgres'")
		if qerr == nil {
			var part int32
			var next int64
			_, qerr = pgx.ForEachRow(rows, []any{&part, &next}, func() error { pg[part] = next; return nil })
		}
		behind := err != nil || qerr != nil
		ends.Each(func(o kadm.ListedOffset) {
			if stored[o.Partition] < o.Offset || pg[o.Partition] < o.Offset {
				behind = true
			}
		})
		if !behind {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("offsets: BigQuery %v (%v), Postgres %v (%v); log end %v: not reached in 90s", stored, err, pg, qerr, ends)
		}
		// Not faster: each read is a job on the emulator's one SQLite
		// database, and reads every 100 ms made the projector's own
		// statements fail with "database is locked" until the deadline
		// (seen once in CI).
		time.Sleep(time.Second)
	}
}

func pgConn(t *testing.T) *pgx.Conn {
	t.Helper()
	dsn, err := os.ReadFile(filepath.Join(dataDir, "pg", "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), strings.TrimSpace(string(dsn)))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func bqRows(t *testing.T, bq *bigquery.Client, sql string, params ...bigquery.QueryParameter) []map[string]bigquery.Value {
	t.Helper()
	rows, err := testenv.Rows(t.Context(), bq, strings.ReplaceAll(sql, "{{dataset}}", testenv.BigQueryProject+"."+bqDataset), params...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return rows
}

// level is one (sku, store) of a read model.
type level struct{ onHand, reserved, version int64 }

func pgLevels(t *testing.T, prefix string) (map[string]level, int64) {
	t.Helper()
	conn := pgConn(t)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), "SELECT sku_id, store_id, on_hand, reserved, sku_version FROM stock_levels WHERE sku_id LIKE $1 || '%'", prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]level{}
	var sku, store string
	var l level
	if _, err := pgx.ForEachRow(rows, []any{&sku, &store, &l.onHand, &l.reserved, &l.version}, func() error {
		out[sku+"/"+store] = l
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var ledger int64
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM inventory_ledger WHERE sku_id LIKE $1 || '%'", prefix).Scan(&ledger); err != nil {
		t.Fatal(err)
	}
	return out, ledger
}

func bqLevels(t *testing.T, bq *bigquery.Client, prefix string) (map[string]level, int64) {
	t.Helper()
	p := bigquery.QueryParameter{Name: "prefix", Value: prefix}
	out := map[string]level{}
	for _, r := range bqRows(t, bq, "SELECT sku_id, store_id, on_hand, reserved, sku_version FROM `{{dataset}}.current_inventory` WHERE STARTS_WITH(sku_id, @prefix)", p) {
		out[r["sku_id"].(string)+"/"+r["store_id"].(string)] = level{r["on_hand"].(int64), r["reserved"].(int64), r["sku_version"].(int64)}
	}
	n := bqRows(t, bq, "SELECT COUNT(DISTINCT event_id) AS d, COUNT(*) AS n FROM `{{dataset}}.inventory_events` WHERE STARTS_WITH(sku_id, @prefix)", p)[0]
	if n["d"] != n["n"] {
		t.Fatalf("inventory_events holds %v rows for %v events", n["n"], n["d"])
	}
	return out, n["n"].(int64)
}

func TestCommandsLandInBigQueryLikeInPostgres(t *testing.T) {
	prefix := uniq("bq")
	var compared int
	accepted := mixedWorkload(t, prefix, 400, rand.New(rand.NewPCG(21, 22)))
	t.Logf("%d commands accepted", accepted)
	defer func() { t.Logf("compared %d (sku, store) levels", compared) }()
	bq, err := projector.NewBigQueryClient(t.Context(), testenv.BigQueryProject, bqEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer bq.Close()
	waitProjections(t, bq)
	pg, pgEvents := pgLevels(t, prefix)
	got, events := bqLevels(t, bq, prefix)
	compared = len(got)
	if len(pg) == 0 || fmt.Sprint(got) != fmt.Sprint(pg) {
		t.Fatalf("current_inventory differs from stock_levels:\nbigquery %v\npostgres %v", got, pg)
	}
	if events != pgEvents || events < int64(accepted) {
		t.Fatalf("inventory_events has %d events, the Postgres ledger %d, for %d accepted commands", events, pgEvents, accepted)
	}

	md, err := bq.Dataset(bqDataset).Table(projector.EventsTable).Metadata(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if md.TimePartitioning == nil || md.TimePartitioning.Type != bigquery.DayPartitioningType || md.TimePartitioning.Field != "occurred_at" ||
		md.Clustering == nil || fmt.Sprint(md.Clustering.Fields) != "[sku_id store_id]" {
		t.Fatalf("inventory_events partitioning %+v, clustering %+v", md.TimePartitioning, md.Clustering)
	}

	// `tally replay --sink bigquery` re-feeds the whole log twice: nothing
	// changes.
	for _, args := range [][]string{{"--from-offset", "0"}, {"--from-time", time.Now().Add(-time.Hour).Format(time.RFC3339)}} {
		if err := serve.RunReplay(t.Context(), append([]string{"--sink", "bigquery", "--kafka-brokers", kafkaAddr,
			"--bigquery-project", testenv.BigQueryProject, "--bigquery-dataset", bqDataset, "--bigquery-endpoint", bqEndpoint, "--bigquery-storage-endpoint", bqStorage}, args...)); err != nil {
			t.Fatal(err)
		}
		again, n := bqLevels(t, bq, prefix)
		if n != events || fmt.Sprint(again) != fmt.Sprint(pg) {
			t.Fatalf("after tally replay %v: %d events (was %d), current_inventory %v", args, n, events, again)
		}
	}

	// tally check agrees: the log, the read model and BigQuery.
	dsn, err := os.ReadFile(filepath.Join(dataDir, "pg", "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	if err := check.Run(t.Context(), []string{"--kafka-brokers", kafkaAddr, "--database-url", strings.TrimSpace(string(dsn)),
		"--bigquery-project", testenv.BigQueryProject, "--bigquery-dataset", bqDataset, "--bigquery-endpoint", bqEndpoint}); err != nil {
		t.Fatalf("tally check: %v", err)
	}
	// and sees a row of BigQuery's that the log does not explain.
	bqRows(t, bq, "UPDATE `{{dataset}}.current_inventory` SET on_hand = on_hand + 1000 WHERE STARTS_WITH(sku_id, @prefix)", bigquery.QueryParameter{Name: "prefix", Value: prefix})
	r, err := check.Check(t.Context(), check.Options{Brokers: []string{kafkaAddr}, BigQuery: &check.BigQuery{Client: bq, Dataset: bqDataset}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(r.Problems["bigquery current_inventory"]); got != compared {
		t.Errorf("tally check found %d differences in current_inventory after %d rows were edited: %v", got, compared, r.Problems)
	}
}

// A cycle count, end to end: the command API's answer, the query API's
// history and level, the PostgreSQL view and the BigQuery view all say what
// was counted, against what, and which count needs review.
func TestCountsReachEveryReadModel(t *testing.T) {
	ctx := t.Context()
	sku := uniq("count")
	if _, err := cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 12}); err != nil {
		t.Fatal(err)
	}
	first, err := cmds.CountStock(ctx, &inventoryv1.CountStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", CountedQuantity: 9, VarianceThreshold: 2, UserId: "clerk-1"})
	if err != nil || first.GetVariance() != -3 || !first.GetVarianceFlagged() {
		t.Fatalf("count 9 of 12 (threshold 2): %v, %v; want variance -3, flagged", first, err)
	}
	second, err := cmds.CountStock(ctx, &inventoryv1.CountStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", CountedQuantity: 10, VarianceThreshold: 5})
	if err != nil || second.GetVariance() != 1 || second.GetVarianceFlagged() {
		t.Fatalf("count 10 of 9 (threshold 5): %v, %v; want variance 1, not flagged", second, err)
	}
	if l := getStock(t, sku, "S1", 3); l.GetOnHand() != 10 {
		t.Fatalf("GetStock after the counts: on_hand %d, want 10", l.GetOnHand())
	}
	h, err := qry.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: "S1"})
	if err != nil {
		t.Fatal(err)
	}
	if evs := h.GetEvents(); len(evs) != 3 || evs[0].GetEventType() != inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED ||
		evs[0].GetQuantityDelta() != 1 || evs[0].GetVarianceFlagged() || evs[0].GetVarianceThreshold() != 5 ||
		evs[1].GetQuantityDelta() != -3 || !evs[1].GetVarianceFlagged() || evs[1].GetVarianceThreshold() != 2 || evs[1].GetUserId() != "clerk-1" {
		t.Fatalf("history %v: want the two counts with their variances, thresholds and flags", evs)
	}

	bq, err := projector.NewBigQueryClient(ctx, testenv.BigQueryProject, bqEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer bq.Close()
	waitProjections(t, bq)
	want := "9 12 -3 2 true \"clerk-1\"\n10 9 1 5 false \"\""
	conn := pgConn(t)
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT counted_quantity, on_hand_before, variance, variance_threshold, variance_flagged, user_id
		FROM stock_count_variances WHERE sku_id = $1 ORDER BY sku_version`, sku)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var counted, before, variance, threshold int64
	var flagged bool
	var user string
	if _, err := pgx.ForEachRow(rows, []any{&counted, &before, &variance, &threshold, &flagged, &user}, func() error {
		lines = append(lines, fmt.Sprintf("%d %d %d %d %t %q", counted, before, variance, threshold, flagged, user))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines, "\n"); got != want {
		t.Errorf("postgres stock_count_variances:\n%s\nwant\n%s", got, want)
	}
	lines = nil
	for _, r := range bqRows(t, bq, "SELECT counted_quantity, on_hand_before, variance, variance_threshold, variance_flagged, user_id FROM `{{dataset}}.count_variances` WHERE sku_id = @sku ORDER BY occurred_at, counted_quantity",
		bigquery.QueryParameter{Name: "sku", Value: sku}) {
		user, _ := r["user_id"].(string) // NULL when empty
		lines = append(lines, fmt.Sprintf("%v %v %v %v %v %q", r["counted_quantity"], r["on_hand_before"], r["variance"], r["variance_threshold"], r["variance_flagged"], user))
	}
	if got := strings.Join(lines, "\n"); got != want {
		t.Errorf("bigquery count_variances:\n%s\nwant\n%s", got, want)
	}
}
