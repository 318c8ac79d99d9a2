package query_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/query"
)

// compactionHistory is n events of 3 SKUs at 3 stores, recorded from
// January 1 2030 over about two months, each with a random value in every
// field the ledger stores (reservations, transfers, counts, adjustments,
// metadata, actors), occurred up to 3 hours before recorded.
func compactionHistory(r *rand.Rand, n int) []*inventoryv1.InventoryEvent {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	versions := map[string]int64{}
	out := make([]*inventoryv1.InventoryEvent, n)
	for i := range n {
		sku, store := fmt.Sprint("sku-", "abc"[r.IntN(3):][:1]), fmt.Sprint("S", 1+r.IntN(3))
		versions[sku]++
		recorded := start.Add(time.Duration(i) * 58 * 24 * time.Hour / time.Duration(n))
		e := &inventoryv1.InventoryEvent{
			SkuId: sku, StoreId: store, SkuVersion: versions[sku],
			EventType:     inventoryv1.EventType(1 + r.IntN(11)),
			QuantityDelta: int64(r.IntN(41) - 20), OnHandAfter: int64(r.IntN(150)), ReservedAfter: int64(r.IntN(3) * r.IntN(10)),
			CommandId:  fmt.Sprintf("cmd-%x", r.Uint64()),
			OccurredAt: timestamppb.New(recorded.Add(-time.Duration(r.IntN(3*3600)) * time.Second)), RecordedAt: timestamppb.New(recorded),
		}
		if r.IntN(3) == 0 {
			e.UserId, e.Actor, e.Reason = fmt.Sprint("clerk-", r.IntN(5)), fmt.Sprint("pos-", r.IntN(5)), "cycle count"
		}
		switch e.GetEventType() {
		case inventoryv1.EventType_EVENT_TYPE_RESERVATION_CREATED:
			e.ReservedDelta, e.ReservationId = int64(1+r.IntN(4)), fmt.Sprint("res-", i)
			e.ReservationExpiresAt = timestamppb.New(recorded.Add(15 * time.Minute))
		case inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN:
			e.CounterpartStoreId = "S9"
		case inventoryv1.EventType_EVENT_TYPE_STOCK_ADJUSTMENT:
			e.AdjustmentReason, e.AllowNegative = inventoryv1.AdjustmentReason(1+r.IntN(6)), r.IntN(2) == 0
		case inventoryv1.EventType_EVENT_TYPE_REORDER_POLICY_SET:
			e.ReorderPoint, e.TargetLevel = int64(r.IntN(20)), int64(20+r.IntN(50))
		case inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED:
			e.VarianceThreshold, e.VarianceFlagged = 5, r.IntN(2) == 0
		}
		if r.IntN(5) == 0 {
			e.Metadata = map[string]string{"till": fmt.Sprint(r.IntN(9)), "channel": "pos"}
		}
		out[i] = e
	}
	return out
}

// storeEvents writes events as the projector does: ledger rows by COPY (in
// their months' partitions) and each pair's level at its newest event.
func (f *fixture) storeEvents(events ...*inventoryv1.InventoryEvent) {
	f.t.Helper()
	rows := make([][]any, len(events))
	for i, e := range events {
		if _, err := readmodel.EnsureLedgerMonths(f.t.Context(), f.pool, readmodel.Month(e.GetRecordedAt().AsTime())); err != nil {
			f.t.Fatal(err)
		}
		id := uuid.Must(uuid.NewV7())
		e.EventId = id.String()
		rows[i] = readmodel.LedgerRow(e, id, int32(i%3), int64(i))
	}
	if _, err := f.pool.CopyFrom(f.t.Context(), pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(rows)); err != nil {
		f.t.Fatal(err)
	}
	for _, e := range events {
		f.exec(`INSERT INTO `+readmodel.Levels+` (sku_id, store_id, on_hand, reserved, sku_version, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (sku_id, store_id) DO UPDATE SET on_hand = $3, reserved = $4, sku_version = $5, updated_at = $6
			WHERE `+readmodel.Levels+`.sku_version < $5`,
			e.GetSkuId(), e.GetStoreId(), e.GetOnHandAfter(), e.GetReservedAfter(), e.GetSkuVersion(), e.GetRecordedAt().AsTime())
	}
}

// ledgerReads is every answer the query service gives from the ledger for
// the pairs of events: each pair's whole history (paged 7 at a time), its
// on_hand as of instants across the months by both clocks, and the
// low-stock list with each pair's week of sales.
type ledgerReads struct {
	history map[string][]*inventoryv1.InventoryEvent
	asOf    map[string]*inventoryv1.GetStockAsOfResponse
	low     map[string]*inventoryv1.LowStockItem
}

func (f *fixture) ledgerReads(t *testing.T) ledgerReads {
	t.Helper()
	out := ledgerReads{history: map[string][]*inventoryv1.InventoryEvent{}, asOf: map[string]*inventoryv1.GetStockAsOfResponse{}, low: map[string]*inventoryv1.LowStockItem{}}
	for _, sku := range []string{"sku-a", "sku-b", "sku-c"} {
		for _, store := range []string{"S1", "S2", "S3"} {
			pair := sku + "/" + store
			token := ""
			for {
				r, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: store, PageSize: 7, PageToken: token}))
				if err != nil {
					t.Fatalf("history of %s: %v", pair, err)
				}
				out.history[pair] = append(out.history[pair], r.Msg.GetEvents()...)
				if token = r.Msg.GetNextPageToken(); token == "" {
					break
				}
			}
			for d := range 70 {
				at := time.Date(2029, 12, 31, 7, 0, 0, 0, time.UTC).AddDate(0, 0, d)
				for _, basis := range []inventoryv1.TimeBasis{inventoryv1.TimeBasis_TIME_BASIS_RECORDED, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED} {
					r, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: sku, StoreId: store, AsOf: timestamppb.New(at), Basis: basis}))
					if err != nil {
						t.Fatalf("as of %s at %s: %v", pair, at, err)
					}
					out.asOf[fmt.Sprint(pair, at, basis)] = r.Msg
				}
			}
		}
	}
	threshold := int64(100)
	st, err := f.c.WatchLowStock(t.Context(), connect.NewRequest(&inventoryv1.WatchLowStockRequest{Threshold: &threshold}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for st.Receive() && !st.Msg().GetCaughtUp() {
		it := st.Msg().GetItem()
		out.low[it.GetSkuId()+"/"+it.GetStoreId()] = it
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// same reports how after differs from before.
func (before ledgerReads) same(t *testing.T, after ledgerReads, when string) {
	t.Helper()
	for pair, h := range before.history {
		if !slices.EqualFunc(h, after.history[pair], func(a, b *inventoryv1.InventoryEvent) bool { return proto.Equal(a, b) }) {
			t.Errorf("%s: history of %s: %d events, was %d (or they differ)", when, pair, len(after.history[pair]), len(h))
		}
	}
	for k, r := range before.asOf {
		if !proto.Equal(r, after.asOf[k]) {
			t.Errorf("%s: as of %s: %v, was %v", when, k, after.asOf[k], r)
		}
	}
	if len(after.low) != len(before.low) {
		t.Errorf("%s: %d low-stock items, was %d", when, len(after.low), len(before.low))
	}
	for k, it := range before.low {
		if !proto.Equal(it, after.low[k]) {
			t.Errorf("%s: low-stock %s: %v, was %v", when, k, after.low[k], it)
		}
	}
}

// TestCompactedMonthsReadAsBefore: compacting the ledger's months into
// chunks changes no answer: every history page, as-of by either clock
// across and between the months, and the low-stock list's week of sales;
// the months' rows are gone (the partitions truncated) and one chunk per
// pair and month holds them. An event a lagging partition writes into a
// compacted month afterwards is read at once and compacted by the next
// run into a chunk of its own; a stale duplicate of a compacted event is
// dropped, not read twice.
func TestCompactedMonthsReadAsBefore(t *testing.T) {
	f := newFixture(t, query.Config{})
	r := rand.New(rand.NewPCG(14, 8))
	events := compactionHistory(r, 600)
	f.storeEvents(events...)
	before := f.ledgerReads(t)
	var sold int64
	for _, it := range before.low {
		sold += it.GetSalesLast_7Days()
	}
	if len(before.history["sku-a/S1"]) < 20 || len(before.low) == 0 || sold == 0 {
		t.Fatalf("the fixture reads too little to compare: %d events of sku-a/S1, %d low-stock items selling %d", len(before.history["sku-a/S1"]), len(before.low), sold)
	}

	march := time.Date(2030, 3, 5, 0, 0, 0, 0, time.UTC)
	var progress []int64
	res, err := readmodel.MaintainLedger(t.Context(), f.pool, march, readmodel.LedgerPolicy{
		Ahead: 1, CompactAfter: 24 * time.Hour, Progress: func(_ time.Time, moved int64) { progress = append(progress, moved) },
	})
	if err != nil {
		t.Fatal(err)
	}
	jan, feb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)
	if len(res.Compacted) != 2 || !res.Compacted[0].Equal(jan) || !res.Compacted[1].Equal(feb) || res.CompactedRows[0]+res.CompactedRows[1] != 600 {
		t.Fatalf("compacted %v (%v rows), want January and February, 600 rows", res.Compacted, res.CompactedRows)
	}
	if len(progress) == 0 || progress[len(progress)-1] != res.CompactedRows[1] {
		t.Errorf("progress %v does not end at February's %d rows", progress, res.CompactedRows[1])
	}
	var rows, chunks, pairs, bytes int64
	if err := f.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM inventory_ledger), (SELECT count(*) FROM ledger_chunks),
		(SELECT count(DISTINCT (sku_id, store_id, date_trunc('month', recorded_at AT TIME ZONE 'UTC'))) FROM ledger_events),
		pg_relation_size('inventory_ledger_2030_01') + pg_relation_size('inventory_ledger_2030_02')`).Scan(&rows, &chunks, &pairs, &bytes); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || chunks != pairs || bytes != 0 {
		t.Errorf("after compaction: %d rows, %d chunks for %d pair-months, %d bytes left in the months' partitions; want 0, one per pair-month, 0", rows, chunks, pairs, bytes)
	}
	f.ledgerReads(t).same(t, before, "after compaction")

	// A lagging partition's event recorded in February, after the
	// compaction, and a stale projector's second copy of a compacted event.
	late := compactionHistory(r, 1)[0]
	late.SkuId, late.StoreId, late.SkuVersion = "sku-a", "S1", 10_000
	late.RecordedAt = timestamppb.New(time.Date(2030, 2, 27, 0, 0, 0, 0, time.UTC))
	late.OccurredAt = late.GetRecordedAt()
	f.storeEvents(late)
	dup := proto.Clone(events[slices.IndexFunc(events, func(e *inventoryv1.InventoryEvent) bool { return e.GetSkuId() == "sku-b" })]).(*inventoryv1.InventoryEvent)
	id := uuid.MustParse(dup.GetEventId())
	if _, err := f.pool.CopyFrom(t.Context(), pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(),
		pgx.CopyFromRows([][]any{readmodel.LedgerRow(dup, id, 0, 0)})); err != nil {
		t.Fatal(err)
	}
	got := f.ledgerReads(t)
	if h := got.history["sku-a/S1"]; len(h) != len(before.history["sku-a/S1"])+1 || !proto.Equal(h[0], late) {
		t.Errorf("the late event is not read as the newest of sku-a/S1's history")
	}
	res, err = readmodel.MaintainLedger(t.Context(), f.pool, march, readmodel.LedgerPolicy{Ahead: 1, CompactAfter: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Compacted) != 2 || !res.Compacted[0].Equal(jan) || !res.Compacted[1].Equal(feb) || res.CompactedRows[0] != 1 || res.CompactedRows[1] != 1 {
		t.Errorf("second run compacted %v (%v rows), want January's duplicate and February's late event", res.Compacted, res.CompactedRows)
	}
	after := f.ledgerReads(t)
	if !slices.EqualFunc(after.history["sku-a/S1"], got.history["sku-a/S1"], func(a, b *inventoryv1.InventoryEvent) bool { return proto.Equal(a, b) }) {
		t.Errorf("sku-a/S1's history with the late event changed when it was compacted")
	}
	// Everything but sku-a/S1, which has the late event, reads as before
	// compaction: the duplicate of sku-b's event is not read.
	for _, m := range []ledgerReads{before, after} {
		delete(m.history, "sku-a/S1")
		delete(m.low, "sku-a/S1")
		for k := range m.asOf {
			if strings.HasPrefix(k, "sku-a/S1") {
				delete(m.asOf, k)
			}
		}
	}
	before.same(t, after, "after the late event and the duplicate were compacted")
	// Newer rows over the compacted months: pages straddle them, and only
	// the chunks a page reaches into are read (history's floor), without
	// changing an answer.
	var newer []*inventoryv1.InventoryEvent
	for i := range 10 {
		e := compactionHistory(r, 1)[0]
		e.SkuId, e.StoreId, e.SkuVersion, e.OnHandAfter = "sku-b", "S2", int64(20_000+i), int64(1000+i)
		e.RecordedAt = timestamppb.New(time.Date(2030, 3, 10+i, 0, 0, 0, 0, time.UTC))
		e.OccurredAt = e.GetRecordedAt()
		newer = append(newer, e)
	}
	f.storeEvents(newer...)
	got = f.ledgerReads(t)
	want := slices.Clone(before.history["sku-b/S2"])
	for _, e := range newer {
		want = append([]*inventoryv1.InventoryEvent{e}, want...)
	}
	if !slices.EqualFunc(got.history["sku-b/S2"], want, func(a, b *inventoryv1.InventoryEvent) bool { return proto.Equal(a, b) }) {
		t.Errorf("sku-b/S2's history with 10 newer rows over its chunks: %d events, want %d (or they differ)", len(got.history["sku-b/S2"]), len(want))
	}
	for d := range 10 {
		at := time.Date(2030, 3, 10+d, 12, 0, 0, 0, time.UTC)
		a, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: "sku-b", StoreId: "S2", AsOf: timestamppb.New(at)}))
		if err != nil || a.Msg.GetOnHand() != int64(1000+d) || a.Msg.GetSkuVersion() != int64(20_000+d) {
			t.Errorf("sku-b/S2 as of %s: %v, %v; want on_hand %d at version %d", at, a, err, 1000+d, 20_000+d)
		}
	}
	last := before.history["sku-b/S2"][0]
	a, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: "sku-b", StoreId: "S2", AsOf: timestamppb.New(time.Date(2030, 3, 9, 0, 0, 0, 0, time.UTC))}))
	if err != nil || a.Msg.GetOnHand() != last.GetOnHandAfter() || a.Msg.GetSkuVersion() != last.GetSkuVersion() {
		t.Errorf("sku-b/S2 as of the day before the newer rows: %v, %v; want its newest compacted event's %d at version %d", a, err, last.GetOnHandAfter(), last.GetSkuVersion())
	}

	var chunksNow int64
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM ledger_chunks").Scan(&chunksNow); err != nil {
		t.Fatal(err)
	}
	if chunksNow != chunks+1 {
		t.Errorf("%d chunks, want %d: one more for the late event, none for the duplicate", chunksNow, chunks+1)
	}
}
