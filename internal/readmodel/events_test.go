package readmodel_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// TestLedgerHasEveryEventColumn: the migrations give the ledger a column
// for every field of the event the read models keep, so a field added to
// the event without its migration fails here rather than in a projection.
func TestLedgerHasEveryEventColumn(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, testenv.Logger()); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = $1`, readmodel.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range readmodel.LedgerColumns() {
		if !slices.Contains(have, c) {
			t.Errorf("%s has no column %s: add it in a migration (internal/readmodel/migrations)", readmodel.Ledger, c)
		}
	}
}

// TestLedgerChunksHoldEveryColumn: every column of the ledger is, with its
// type, a column of the ledger_events view, and (but for the pair's ids,
// which a chunk holds once) an array of its type in ledger_chunks, so a
// column added to the ledger without its place in compaction (migration
// 0008's table, ledger_compact and the view) fails here.
func TestLedgerChunksHoldEveryColumn(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, testenv.Logger()); err != nil {
		t.Fatal(err)
	}
	types := func(table string) map[string]string {
		rows, err := pool.Query(ctx, `SELECT attname, format_type(atttypid, NULL) FROM pg_attribute
			WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		var name, typ string
		if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { out[name] = typ; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	ledger, view, chunks := types(readmodel.Ledger), types(readmodel.Events), types("ledger_chunks")
	for col, typ := range ledger {
		if view[col] != typ {
			t.Errorf("%s.%s is %q, %s.%s %q", readmodel.Ledger, col, typ, readmodel.Events, col, view[col])
		}
		if col != "sku_id" && col != "store_id" && chunks[col] != typ+"[]" {
			t.Errorf("%s.%s is %q, ledger_chunks.%s %q, want %q", readmodel.Ledger, col, typ, col, chunks[col], typ+"[]")
		}
	}
}

// TestLedgerRowsReadBackAsTheEvent: an event with every field set, written
// with LedgerRow by COPY and read with LedgerSelect and ScanEvent, is the
// event again (but for the fields no read model keeps).
func TestLedgerRowsReadBackAsTheEvent(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, testenv.Logger()); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 9, 30, 0, 123456000, time.UTC)
	if _, err := readmodel.EnsureLedgerMonths(ctx, pool, readmodel.Month(at)); err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7())
	full := &inventoryv1.InventoryEvent{
		EventId: id.String(), EventType: inventoryv1.EventType_EVENT_TYPE_RESERVATION_CREATED,
		OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.New(at.Add(time.Second)),
		SkuId: "sku-1", StoreId: "store-1", QuantityDelta: -3, UserId: "u", Reason: "why",
		Metadata: map[string]string{"till": "7", "order": "A-1"}, CommandId: "cmd-1", SkuVersion: 4,
		OnHandAfter: 10, ReservedAfter: 2, AllowNegative: true,
		AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED, CounterpartStoreId: "store-2",
		ReservedDelta: 2, ReservationId: "r-1", ReservationExpiresAt: timestamppb.New(at.Add(time.Hour)),
		ReorderPoint: 5, TargetLevel: 20, CommandFingerprint: []byte{1, 2, 3},
		VarianceFlagged: true, VarianceThreshold: 4, Actor: "till-4@S1",
	}
	// Every field set, so a field the round trip drops shows.
	m := full.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if !m.Has(fields.Get(i)) {
			t.Fatalf("the test event leaves %s unset: set it", fields.Get(i).Name())
		}
	}
	bare := &inventoryv1.InventoryEvent{
		EventId: uuid.Must(uuid.NewV7()).String(), EventType: inventoryv1.EventType_EVENT_TYPE_SALE,
		OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.New(at), SkuId: "sku-1", StoreId: "store-1", SkuVersion: 5,
	}
	src := [][]any{
		readmodel.LedgerRow(full, id, 3, 42),
		readmodel.LedgerRow(bare, uuid.MustParse(bare.GetEventId()), 3, 43),
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(src)); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT `+readmodel.LedgerSelect+` FROM `+readmodel.Ledger+` ORDER BY sku_version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []*inventoryv1.InventoryEvent
	for rows.Next() {
		e, err := readmodel.ScanEvent(rows)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	full.CommandFingerprint = nil // not kept
	want := []*inventoryv1.InventoryEvent{full, bare}
	if len(got) != len(want) {
		t.Fatalf("read %d events back, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("event %d read back as\n%v\nwant\n%v", i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
	}
}

func TestEnumNames(t *testing.T) {
	ed := inventoryv1.EventType_EVENT_TYPE_SALE.Descriptor()
	for n, want := range map[inventoryv1.EventType]string{
		inventoryv1.EventType_EVENT_TYPE_SALE:                  "SALE",
		inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED: "RESERVATION_COMMITTED",
		inventoryv1.EventType_EVENT_TYPE_UNSPECIFIED:           "",
	} {
		if got := readmodel.EnumName(ed, n.Number()); got != want {
			t.Errorf("EnumName(%v) = %q, want %q", n, got, want)
		}
	}
	if got := readmodel.EnumName(inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED.Descriptor(), 2); got == "" {
		t.Errorf("EnumName(AdjustmentReason 2) is empty")
	}
}

// The views written in SQL name event types by number; they must select
// the types they say.
func TestStockCountVariancesSelectsCounts(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, testenv.Logger()); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	if _, err := readmodel.EnsureLedgerMonths(ctx, pool, readmodel.Month(at)); err != nil {
		t.Fatal(err)
	}
	var src [][]any
	for v := range inventoryv1.EventType_name {
		if v == 0 {
			continue
		}
		id := uuid.Must(uuid.NewV7())
		e := &inventoryv1.InventoryEvent{EventId: id.String(), EventType: inventoryv1.EventType(v), OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.New(at),
			SkuId: "sku-1", StoreId: "store-1", SkuVersion: int64(v), QuantityDelta: -2, OnHandAfter: 5, VarianceFlagged: true, VarianceThreshold: 1}
		src = append(src, readmodel.LedgerRow(e, id, 0, int64(v)))
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(src)); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT sku_version, counted_quantity, on_hand_before, variance FROM stock_count_variances`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Version, Counted, Before, Variance int64 }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if want := (row{int64(inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED), 5, 7, -2}); len(got) != 1 || got[0] != want {
		t.Fatalf("stock_count_variances over one event of every type: %v, want only the count %v", got, want)
	}
}
