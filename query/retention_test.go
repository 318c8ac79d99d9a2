package query_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/query"
)

// retainedFixture is a read model whose ledger retention has dropped
// January 2030, so it goes back to February 1:
//   - sku-1 at S1: received 10 in January (dropped), sold 3 in February,
//     and 2 recorded in April by an offline till that sold them March 31;
//   - sku-2 at S1: received 5 in January, nothing since (all dropped);
//   - sku-3 at S1: received 4 in April, its SKU's first event.
func retainedFixture(t *testing.T) (*fixture, time.Time) {
	f := newFixture(t, query.Config{})
	day := func(m time.Month, d int) time.Time { return time.Date(2030, m, d, 12, 0, 0, 0, time.UTC) }
	sale := func(sku string, v, delta, onHand int64, occurred, recorded time.Time) event {
		return event{sku: sku, store: "S1", version: v, typ: inventoryv1.EventType_EVENT_TYPE_SALE, delta: delta, onHand: onHand, occurred: occurred, recorded: recorded}
	}
	r1, r2, r3 := receipt("sku-1", "S1", 1, 10), receipt("sku-2", "S1", 1, 5), receipt("sku-3", "S1", 1, 4)
	r1.recorded, r2.recorded, r3.recorded = day(1, 15), day(1, 20), day(4, 1)
	f.project(r1, r2, r3, sale("sku-1", 2, -3, 7, day(2, 15), day(2, 15)), sale("sku-1", 3, -2, 5, day(3, 31), day(4, 10)))
	res, err := readmodel.MaintainLedger(t.Context(), f.pool, day(6, 10), readmodel.LedgerPolicy{Ahead: 2, Retention: 120 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	feb := time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)
	if !res.RetainedFrom.Equal(feb) {
		t.Fatalf("retention kept from %s, want %s", res.RetainedFrom, feb)
	}
	return f, feb
}

// outOfRange checks that err is OUT_OF_RANGE saying how far back the read
// model goes and that BigQuery has the rest, in its message and its
// HistoryNotRetained detail.
func outOfRange(t *testing.T, err error, from time.Time) {
	t.Helper()
	if code(t, err) != connect.CodeOutOfRange {
		t.Fatalf("%v, want OUT_OF_RANGE", err)
	}
	msg := err.(*connect.Error).Message()
	if !strings.Contains(msg, from.Format(time.RFC3339)) || !strings.Contains(msg, "BigQuery") {
		t.Errorf("message %q does not say the read model goes back to %s and BigQuery holds the rest", msg, from.Format(time.RFC3339))
	}
	d := detail[inventoryv1.HistoryNotRetained](t, err)
	if !d.GetRetainedFrom().AsTime().Equal(from) || d.GetArchive() != query.Archive {
		t.Errorf("detail %v, want retained_from %s, archive %s", d, from, query.Archive)
	}
}

// TestHistoryPastTheRetainedRangeIsOutOfRange: paging back through a
// history reaches the retention's edge and answers OUT_OF_RANGE there
// (over gRPC too); a pair whose events were all dropped answers it at
// once; a history that starts at its SKU's first event ends cleanly.
func TestHistoryPastTheRetainedRangeIsOutOfRange(t *testing.T) {
	f, feb := retainedFixture(t)
	var versions []int64
	token := ""
	var err error
	for range 5 {
		var r *connect.Response[inventoryv1.GetStockHistoryResponse]
		r, err = f.grpc.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-1", StoreId: "S1", PageSize: 1, PageToken: token}))
		if err != nil {
			break
		}
		for _, e := range r.Msg.GetEvents() {
			versions = append(versions, e.GetSkuVersion())
		}
		if token = r.Msg.GetNextPageToken(); token == "" {
			t.Fatalf("history ended cleanly after versions %v: the dropped January was not reported", versions)
		}
	}
	if len(versions) != 2 || versions[0] != 3 || versions[1] != 2 {
		t.Errorf("retained history %v, want versions 3, 2", versions)
	}
	outOfRange(t, err, feb)

	_, err = f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-2", StoreId: "S1"}))
	outOfRange(t, err, feb)

	r, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-3", StoreId: "S1"}))
	if err != nil || len(r.Msg.GetEvents()) != 1 || r.Msg.GetNextPageToken() != "" {
		t.Errorf("history from a SKU's first event: %v, %v; want one event and no next page", r, err)
	}
	_, err = f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-9", StoreId: "S1"}))
	if code(t, err) != connect.CodeNotFound {
		t.Errorf("history of an unknown pair: %v, want NotFound", err)
	}
}

// TestAsOfBeforeTheRetainedRangeIsOutOfRange: an instant before the
// retained range answers OUT_OF_RANGE by either clock; from its first
// instant on, answers are what they were before the drop, even where they
// rest on a dropped event.
func TestAsOfBeforeTheRetainedRangeIsOutOfRange(t *testing.T) {
	f, feb := retainedFixture(t)
	asOf := func(sku string, at time.Time, basis inventoryv1.TimeBasis) (*inventoryv1.GetStockAsOfResponse, error) {
		r, err := f.grpc.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: sku, StoreId: "S1", AsOf: timestamppb.New(at), Basis: basis}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	for _, basis := range []inventoryv1.TimeBasis{inventoryv1.TimeBasis_TIME_BASIS_RECORDED, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED} {
		_, err := asOf("sku-1", feb.Add(-time.Microsecond), basis)
		outOfRange(t, err, feb)
	}
	recorded, occurred := inventoryv1.TimeBasis_TIME_BASIS_RECORDED, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED
	for _, c := range []struct {
		name            string
		sku             string
		at              time.Time
		basis           inventoryv1.TimeBasis
		onHand, version int64
	}{
		{"recorded, at the edge: January's receipt", "sku-1", feb, recorded, 10, 0},
		{"recorded, after February's sale", "sku-1", feb.AddDate(0, 1, 0), recorded, 7, 2},
		{"recorded, after everything", "sku-1", feb.AddDate(0, 5, 0), recorded, 5, 3},
		{"recorded, every event dropped", "sku-2", feb.AddDate(0, 1, 0), recorded, 5, 1},
		{"occurred, at the edge", "sku-1", feb, occurred, 10, 0},
		{"occurred, before the offline sale", "sku-1", time.Date(2030, 3, 15, 0, 0, 0, 0, time.UTC), occurred, 7, 0},
		{"occurred, after the offline sale", "sku-1", time.Date(2030, 4, 1, 0, 0, 0, 0, time.UTC), occurred, 5, 0},
		{"occurred, every event dropped", "sku-2", feb, occurred, 5, 0},
		{"a pair begun in range, before it began", "sku-3", feb, recorded, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := asOf(c.sku, c.at, c.basis)
			if err != nil {
				t.Fatal(err)
			}
			if r.GetOnHand() != c.onHand || r.GetSkuVersion() != c.version {
				t.Errorf("%v, want on_hand %d at version %d", r, c.onHand, c.version)
			}
		})
	}
}
