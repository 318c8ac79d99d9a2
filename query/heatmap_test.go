package query_test

import (
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/query"
)

// sale is an event that sells units of a (sku, store), leaving onHand.
func sale(sku, store string, version, units, onHand int64, recorded time.Time) event {
	return event{sku: sku, store: store, version: version, typ: inventoryv1.EventType_EVENT_TYPE_SALE, delta: -units, onHand: onHand, recorded: recorded}
}

// The heatmap ranks SKUs by units sold in the window (older sales and
// other event types do not count) and has a cell for each of their stores.
func TestSalesHeatmapRanksTheWindowsSales(t *testing.T) {
	f := newFixture(t, query.Config{})
	now := time.Now()
	f.project(
		receipt("sku-a", "S1", 1, 50), receipt("sku-a", "S2", 2, 50), receipt("sku-b", "S1", 1, 50), receipt("sku-c", "S1", 1, 50),
		sale("sku-a", "S1", 3, 5, 45, now.Add(-10*time.Minute)),
		sale("sku-a", "S2", 4, 3, 47, now.Add(-time.Minute)),
		sale("sku-b", "S1", 2, 42, 8, now.Add(-2*time.Hour)), // outside the hour
		sale("sku-b", "S1", 3, 1, 7, now.Add(-time.Minute)),
	)
	f.exec("INSERT INTO reorder_policies VALUES ('sku-b', 'S1', 9, 30, 1, now())")

	r, err := f.c.GetSalesHeatmap(t.Context(), connect.NewRequest(&inventoryv1.GetSalesHeatmapRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var cells []string
	for _, c := range r.Msg.GetCells() {
		cells = append(cells, fmt.Sprintf("%s/%s sold %d available %d point %d", c.GetSkuId(), c.GetStoreId(), c.GetUnitsSold(), c.GetAvailable(), c.GetReorderPoint()))
	}
	want := []string{"sku-a/S1 sold 5 available 45 point 10", "sku-a/S2 sold 3 available 47 point 10", "sku-b/S1 sold 1 available 7 point 9"}
	if fmt.Sprint(r.Msg.GetSkuIds()) != "[sku-a sku-b]" || fmt.Sprint(r.Msg.GetStoreIds()) != "[S1 S2]" || fmt.Sprint(cells) != fmt.Sprint(want) {
		t.Fatalf("heatmap skus %v stores %v cells %q, want [sku-a sku-b] [S1 S2] %q", r.Msg.GetSkuIds(), r.Msg.GetStoreIds(), cells, want)
	}

	r, err = f.c.GetSalesHeatmap(t.Context(), connect.NewRequest(&inventoryv1.GetSalesHeatmapRequest{StoreIds: []string{"S2"}, SkuLimit: 1, WindowMinutes: 180}))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Msg.GetSkuIds()) != "[sku-a]" || len(r.Msg.GetCells()) != 1 || r.Msg.GetCells()[0].GetStoreId() != "S2" {
		t.Fatalf("S2, one SKU, 3 hours: %v", r.Msg)
	}
	for _, bad := range []*inventoryv1.GetSalesHeatmapRequest{{SkuLimit: 101}, {WindowMinutes: -1}, {StoreIds: []string{""}}} {
		if _, err := f.c.GetSalesHeatmap(t.Context(), connect.NewRequest(bad)); code(t, err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", bad, err)
		}
	}
}

// ListStock of a store narrows to SKUs starting with sku_prefix, across
// pages; the prefix needs store_id.
func TestListStockBySKUPrefix(t *testing.T) {
	f := newFixture(t, query.Config{})
	f.project(receipt("ab-1", "S1", 1, 5), receipt("ab-2", "S1", 1, 5), receipt("ab-3", "S1", 1, 5), receipt("abc", "S2", 1, 5), receipt("b-1", "S1", 1, 5), receipt("a", "S1", 1, 5))
	var got []string
	token := ""
	for {
		r, err := f.c.ListStock(t.Context(), connect.NewRequest(&inventoryv1.ListStockRequest{StoreId: "S1", SkuPrefix: "ab-", PageSize: 2, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range r.Msg.GetLevels() {
			got = append(got, l.GetSkuId())
		}
		if token = r.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if fmt.Sprint(got) != "[ab-1 ab-2 ab-3]" {
		t.Fatalf("S1 prefix ab-: %v, want [ab-1 ab-2 ab-3]", got)
	}
	if _, err := f.c.ListStock(t.Context(), connect.NewRequest(&inventoryv1.ListStockRequest{SkuId: "ab-1", SkuPrefix: "ab"})); code(t, err) != connect.CodeInvalidArgument {
		t.Fatalf("prefix without store_id: %v, want InvalidArgument", err)
	}
}
