package query_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/stocknotify"
	"github.com/tally-oss/tally/query"
)

func TestGetStockReturnsTheLevelAndTheSKUsNewestVersion(t *testing.T) {
	f := newFixture(t, query.Config{})
	sale := receipt("sku-1", "S1", 3, 12)
	sale.typ, sale.delta, sale.reserved = inventoryv1.EventType_EVENT_TYPE_SALE, -3, 2
	f.project(receipt("sku-1", "S1", 1, 15), receipt("sku-1", "S2", 2, 4), sale, receipt("sku-1", "S2", 5, 9))

	r, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-1", StoreId: "S1"}))
	if err != nil {
		t.Fatal(err)
	}
	l := r.Msg.GetLevel()
	if l.GetSkuId() != "sku-1" || l.GetStoreId() != "S1" || l.GetOnHand() != 12 || l.GetReserved() != 2 || l.GetAvailable() != 10 || l.GetSkuVersion() != 3 || l.GetUpdatedAt() == nil {
		t.Errorf("level %v, want S1 on_hand 12, reserved 2, available 10 at version 3", l)
	}
	if r.Msg.GetProjectedSkuVersion() != 5 {
		t.Errorf("projected version %d, want 5 (the SKU's newest, at S2)", r.Msg.GetProjectedSkuVersion())
	}
}

func TestGetStockOfAnUnknownPairIsNotFound(t *testing.T) {
	f := newFixture(t, query.Config{})
	f.project(receipt("sku-1", "S1", 1, 5))
	for _, k := range [][2]string{{"sku-1", "S2"}, {"sku-2", "S1"}} {
		_, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: k[0], StoreId: k[1]}))
		if code(t, err) != connect.CodeNotFound {
			t.Errorf("GetStock %s/%s: %v, want NotFound", k[0], k[1], err)
		}
	}
}

// A projector transaction NOTIFYs stocknotify.ProjectedChannel; a
// min_version read waiting for it re-reads at once. The poll interval here
// is longer than MaxWait, so only the notification can wake the read.
func TestMinVersionReadWaitsForTheProjection(t *testing.T) {
	f := newFixture(t, query.Config{PollInterval: time.Hour})
	f.project(receipt("sku-1", "S1", 1, 5))

	type result struct {
		r   *connect.Response[inventoryv1.GetStockResponse]
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-1", StoreId: "S1", MinVersion: 2}))
		done <- result{r, err}
	}()
	time.Sleep(100 * time.Millisecond) // let the read find version 1 and wait
	sale := receipt("sku-1", "S1", 2, 4)
	sale.typ, sale.delta = inventoryv1.EventType_EVENT_TYPE_SALE, -1
	f.project(sale)
	f.exec("SELECT pg_notify($1, '')", stocknotify.ProjectedChannel)

	res := <-done
	if res.err != nil {
		t.Fatalf("GetStock with min_version 2: %v", res.err)
	}
	if l := res.r.Msg.GetLevel(); l.GetSkuVersion() != 2 || l.GetOnHand() != 4 || res.r.Msg.GetProjectedSkuVersion() != 2 {
		t.Fatalf("%v, want on_hand 4 at version 2", res.r.Msg)
	}
}

// A version the projection does not reach within query.MaxWait is
// Unavailable, with a ProjectionBehind detail saying how far it got, over
// either protocol.
func TestMinVersionBeyondTheProjectionIsUnavailableWithHowFarItGot(t *testing.T) {
	f := newFixture(t, query.Config{})
	f.project(receipt("sku-1", "S1", 1, 5), receipt("sku-1", "S2", 3, 5))
	for _, p := range []struct {
		name string
		c    func() error
	}{
		{"connect", func() error {
			_, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-1", StoreId: "S1", MinVersion: 10}))
			return err
		}},
		{"grpc", func() error {
			_, err := f.grpc.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-1", StoreId: "S1", MinVersion: 10}))
			return err
		}},
	} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			err := p.c()
			if code(t, err) != connect.CodeUnavailable {
				t.Fatalf("%v, want Unavailable", err)
			}
			pb := detail[inventoryv1.ProjectionBehind](t, err)
			if pb.GetSkuId() != "sku-1" || pb.GetMinVersion() != 10 || pb.GetProjectedVersion() != 3 {
				t.Errorf("detail %v, want sku-1 at 3 of 10", pb)
			}
		})
	}
}

func TestHistoryIsNewestFirstAndPagesWithinItsPair(t *testing.T) {
	f := newFixture(t, query.Config{})
	for v := int64(1); v <= 7; v++ {
		store := "S1"
		if v%3 == 0 {
			store = "S2" // another store's events of the SKU are not S1's history
		}
		f.project(receipt("sku-1", store, v, 10*v))
	}
	var pages [][]int64
	token := ""
	for {
		r, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-1", StoreId: "S1", PageSize: 2, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		var page []int64
		for _, e := range r.Msg.GetEvents() {
			if e.GetStoreId() != "S1" || e.GetOnHandAfter() != 10*e.GetSkuVersion() || e.GetEventType() != inventoryv1.EventType_EVENT_TYPE_RECEIPT {
				t.Errorf("event %v", e)
			}
			page = append(page, e.GetSkuVersion())
		}
		pages = append(pages, page)
		if token = r.Msg.GetNextPageToken(); token == "" || len(pages) > 5 {
			break
		}
	}
	if got, want := fmt.Sprint(pages), "[[7 5] [4 2] [1]]"; got != want {
		t.Fatalf("pages of versions %s, want %s", got, want)
	}

	_, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-1", StoreId: "S2", PageToken: pageToken(t, f)}))
	if code(t, err) != connect.CodeInvalidArgument || !slices.Equal(fields(detail[errdetails.BadRequest](t, err)), []string{"page_token"}) {
		t.Errorf("S1's page token on S2's history: %v, want InvalidArgument on page_token", err)
	}
	_, err = f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-2", StoreId: "S1"}))
	if code(t, err) != connect.CodeNotFound {
		t.Errorf("history of an unknown pair: %v, want NotFound", err)
	}
}

// pageToken is a first page's token of sku-1 at S1's history.
func pageToken(t *testing.T, f *fixture) string {
	t.Helper()
	r, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "sku-1", StoreId: "S1", PageSize: 1}))
	if err != nil || r.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", r, err)
	}
	return r.Msg.GetNextPageToken()
}

// An offline till's sale happened before a moment and was recorded after
// it: as recorded, the stock then was still whole; as occurred, it was not.
func TestStockAsOfByEitherClock(t *testing.T) {
	f := newFixture(t, query.Config{})
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	sale := receipt("sku-1", "S1", 2, 7)
	sale.typ, sale.delta, sale.occurred, sale.recorded = inventoryv1.EventType_EVENT_TYPE_SALE, -3, t0.Add(10*time.Minute), t0.Add(time.Hour)
	rcv := receipt("sku-1", "S1", 1, 10)
	rcv.recorded = t0
	f.project(rcv, sale)

	between := t0.Add(30 * time.Minute)
	for _, c := range []struct {
		name            string
		at              time.Time
		basis           inventoryv1.TimeBasis
		onHand, version int64
		wantBasis       inventoryv1.TimeBasis
	}{
		{"recorded, by default", between, inventoryv1.TimeBasis_TIME_BASIS_UNSPECIFIED, 10, 1, inventoryv1.TimeBasis_TIME_BASIS_RECORDED},
		{"occurred", between, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED, 7, 0, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED},
		{"recorded, after both", t0.Add(2 * time.Hour), inventoryv1.TimeBasis_TIME_BASIS_RECORDED, 7, 2, inventoryv1.TimeBasis_TIME_BASIS_RECORDED},
		{"recorded, before anything", t0.Add(-time.Hour), inventoryv1.TimeBasis_TIME_BASIS_RECORDED, 0, 0, inventoryv1.TimeBasis_TIME_BASIS_RECORDED},
		{"occurred, before anything", t0.Add(-time.Hour), inventoryv1.TimeBasis_TIME_BASIS_OCCURRED, 0, 0, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: "sku-1", StoreId: "S1", AsOf: timestamppb.New(c.at), Basis: c.basis}))
			if err != nil {
				t.Fatal(err)
			}
			if r.Msg.GetOnHand() != c.onHand || r.Msg.GetSkuVersion() != c.version || r.Msg.GetBasis() != c.wantBasis {
				t.Errorf("%v, want on_hand %d at version %d by %v", r.Msg, c.onHand, c.version, c.wantBasis)
			}
		})
	}
	_, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: "sku-2", StoreId: "S1", AsOf: timestamppb.New(t0)}))
	if code(t, err) != connect.CodeNotFound {
		t.Errorf("as-of of an unknown pair: %v, want NotFound", err)
	}
}

func TestListStockBelowAThresholdPagesInKeyOrder(t *testing.T) {
	f := newFixture(t, query.Config{})
	for i := range 7 {
		f.project(receipt(fmt.Sprintf("sku-%d", i), "S1", 1, int64(i+1)))
	}
	f.project(receipt("sku-0", "S2", 2, 50), receipt("sku-0", "S3", 3, 1))

	list := func(req *inventoryv1.ListStockRequest) []string {
		t.Helper()
		var got []string
		for pages := 0; ; pages++ {
			r, err := f.c.ListStock(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Msg.GetLevels()) > int(req.GetPageSize()) {
				t.Fatalf("page of %d levels, size %d", len(r.Msg.GetLevels()), req.GetPageSize())
			}
			for _, l := range r.Msg.GetLevels() {
				got = append(got, fmt.Sprintf("%s/%s:%d", l.GetSkuId(), l.GetStoreId(), l.GetAvailable()))
			}
			if req.PageToken = r.Msg.GetNextPageToken(); req.PageToken == "" {
				return got
			}
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
		}
	}
	below := int64(6)
	if got, want := list(&inventoryv1.ListStockRequest{StoreId: "S1", Below: &below, PageSize: 2}), []string{"sku-0/S1:1", "sku-1/S1:2", "sku-2/S1:3", "sku-3/S1:4", "sku-4/S1:5"}; !slices.Equal(got, want) {
		t.Errorf("S1 below 6: %v, want %v", got, want)
	}
	if got, want := list(&inventoryv1.ListStockRequest{SkuId: "sku-0", PageSize: 2}), []string{"sku-0/S1:1", "sku-0/S2:50", "sku-0/S3:1"}; !slices.Equal(got, want) {
		t.Errorf("sku-0 everywhere: %v, want %v", got, want)
	}

	b, err := f.c.BatchGetStock(t.Context(), connect.NewRequest(&inventoryv1.BatchGetStockRequest{Keys: []*inventoryv1.StockKey{
		{SkuId: "sku-3", StoreId: "S1"}, {SkuId: "sku-9", StoreId: "S1"}, {SkuId: "sku-0", StoreId: "S2"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range b.Msg.GetLevels() {
		got = append(got, fmt.Sprintf("%s/%s:%d", l.GetSkuId(), l.GetStoreId(), l.GetOnHand()))
	}
	if !slices.Equal(got, []string{"sku-3/S1:4", "sku-0/S2:50"}) || len(b.Msg.GetMissing()) != 1 || b.Msg.GetMissing()[0].GetSkuId() != "sku-9" {
		t.Errorf("batch get: levels %v, missing %v; want sku-3/S1 and sku-0/S2 in request order, sku-9 missing", got, b.Msg.GetMissing())
	}
}

func TestLowStockIsListedThenAnnouncedAsItCrosses(t *testing.T) {
	f := newFixture(t, query.Config{})
	now := time.Now()
	// w-low is low from the start (default reorder point 10); w-ok is not.
	f.project(receipt("w-low", "S1", 1, 2), receipt("w-ok", "S1", 1, 40), receipt("other", "S1", 1, 1))
	// w-ok's demand: sales and committed reservations count, a receipt
	// and sales older than 7 days do not.
	sold := func(v int64, typ inventoryv1.EventType, delta int64, at time.Time) event {
		return event{sku: "w-ok", store: "S1", version: v, typ: typ, delta: delta, onHand: 40 + delta, occurred: at, recorded: at}
	}
	f.project(
		sold(2, inventoryv1.EventType_EVENT_TYPE_SALE, -4, now.Add(-8*24*time.Hour)),
		sold(3, inventoryv1.EventType_EVENT_TYPE_SALE, -5, now.Add(-2*24*time.Hour)),
		sold(4, inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED, -2, now.Add(-time.Hour)),
		sold(5, inventoryv1.EventType_EVENT_TYPE_RECEIPT, 20, now.Add(-time.Hour)),
	)

	st, err := f.c.WatchLowStock(t.Context(), connect.NewRequest(&inventoryv1.WatchLowStockRequest{SkuPrefix: "w-", StoreIds: []string{"S1"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	next := func() *inventoryv1.WatchLowStockResponse {
		t.Helper()
		if !st.Receive() {
			t.Fatalf("watch ended: %v", st.Err())
		}
		return st.Msg()
	}
	if m := next(); !m.GetInitial() || m.GetItem().GetSkuId() != "w-low" || m.GetItem().GetAvailable() != 2 ||
		m.GetItem().GetState() != inventoryv1.LowStockState_LOW_STOCK_STATE_LOW || m.GetItem().GetRecommendedReorderQuantity() != 28 {
		t.Fatalf("first message %v, want w-low initially LOW at 2, reorder 28", m)
	}
	if m := next(); !m.GetCaughtUp() || m.GetResumeToken() == "" {
		t.Fatalf("second message %v, want caught_up with a resume token", m)
	}

	// What the projector announces on stocknotify.Channel: a change that
	// stays above the point (not this watch's business), one of another
	// prefix, then w-ok crossing to 9.
	payload := stocknotify.Encode([]stocknotify.Change{
		{SKU: "w-ok", Store: "S1", AvailableBefore: 40, Available: 20, OnHand: 20, Version: 6, ReorderPoint: 10, ReorderBefore: 10, TargetLevel: 30},
		{SKU: "other", Store: "S1", AvailableBefore: 11, Available: 0, Version: 2, ReorderPoint: 10, ReorderBefore: 10, TargetLevel: 30},
		{SKU: "w-ok", Store: "S1", AvailableBefore: 20, Available: 9, OnHand: 9, Version: 7, ReorderPoint: 10, ReorderBefore: 10, TargetLevel: 30},
	})
	f.exec("SELECT pg_notify($1, $2)", stocknotify.Channel, payload[0])

	m := next()
	it := m.GetItem()
	if m.GetInitial() || it.GetSkuId() != "w-ok" || it.GetSkuVersion() != 7 || it.GetAvailable() != 9 || it.GetState() != inventoryv1.LowStockState_LOW_STOCK_STATE_LOW {
		t.Fatalf("announced %v, want w-ok LOW at 9, version 7", m)
	}
	// 7 sold in 7 days: ceil(7/7×14) = 14 < target 30, so 30 − 9.
	if it.GetSalesLast_7Days() != 7 || it.GetRecommendedReorderQuantity() != 21 {
		t.Errorf("sales %d, recommended %d; want 7 and 21", it.GetSalesLast_7Days(), it.GetRecommendedReorderQuantity())
	}
	if m.GetResumeToken() == "" {
		t.Error("live message without a resume token")
	}
}

// Every problem with a request's fields is reported at once, as a
// BadRequest detail naming each field.
func TestInvalidRequestsNameEveryBadField(t *testing.T) {
	f := newFixture(t, query.Config{})
	badThreshold := int64(stocknotify.WatchCeiling + 1)
	for _, c := range []struct {
		name string
		call func() error
		want []string
	}{
		{"GetStock", func() error {
			_, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "", StoreId: "has space", MinVersion: -1}))
			return err
		}, []string{"sku_id", "store_id", "min_version"}},
		{"GetStock over gRPC", func() error {
			_, err := f.grpc.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku\n1", StoreId: "S1"}))
			return err
		}, []string{"sku_id"}},
		{"BatchGetStock", func() error {
			_, err := f.c.BatchGetStock(t.Context(), connect.NewRequest(&inventoryv1.BatchGetStockRequest{Keys: []*inventoryv1.StockKey{{SkuId: "a", StoreId: "S1"}, {SkuId: "", StoreId: "S1"}}}))
			return err
		}, []string{"keys[1].sku_id"}},
		{"ListStock", func() error {
			_, err := f.c.ListStock(t.Context(), connect.NewRequest(&inventoryv1.ListStockRequest{StoreId: "S1", PageSize: query.MaxPageSize + 1, PageToken: "garbage"}))
			return err
		}, []string{"page_size", "page_token"}},
		{"ListStock by both", func() error {
			_, err := f.c.ListStock(t.Context(), connect.NewRequest(&inventoryv1.ListStockRequest{StoreId: "S1", SkuId: "a"}))
			return err
		}, []string{"store_id"}},
		{"GetStockHistory", func() error {
			_, err := f.c.GetStockHistory(t.Context(), connect.NewRequest(&inventoryv1.GetStockHistoryRequest{SkuId: "a", StoreId: "", PageSize: -1}))
			return err
		}, []string{"store_id", "page_size"}},
		{"GetStockAsOf", func() error {
			_, err := f.c.GetStockAsOf(t.Context(), connect.NewRequest(&inventoryv1.GetStockAsOfRequest{SkuId: "a", StoreId: "S1", Basis: 99}))
			return err
		}, []string{"as_of", "basis"}},
		{"WatchLowStock", func() error {
			st, err := f.c.WatchLowStock(t.Context(), connect.NewRequest(&inventoryv1.WatchLowStockRequest{StoreIds: []string{"S1", ""}, Threshold: &badThreshold, ResumeToken: "garbage"}))
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
			}
			return st.Err()
		}, []string{"store_ids[1]", "threshold", "resume_token"}},
		// Forged tokens whose keys PostgreSQL cannot take as text.
		{"ListStock with a NUL in its token's key", func() error {
			tok := base64.RawURLEncoding.EncodeToString([]byte(`{"f":"list|S1||false|0","a":"A\u0000"}`))
			_, err := f.c.ListStock(t.Context(), connect.NewRequest(&inventoryv1.ListStockRequest{StoreId: "S1", PageToken: tok}))
			return err
		}, []string{"page_token"}},
		{"WatchLowStock with a NUL in sku_prefix", func() error {
			st, err := f.c.WatchLowStock(t.Context(), connect.NewRequest(&inventoryv1.WatchLowStockRequest{SkuPrefix: "A\x00"}))
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
			}
			return st.Err()
		}, []string{"sku_prefix"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if code(t, err) != connect.CodeInvalidArgument {
				t.Fatalf("%v, want InvalidArgument", err)
			}
			if got := fields(detail[errdetails.BadRequest](t, err)); !slices.Equal(got, c.want) {
				t.Errorf("violations on %v, want %v", got, c.want)
			}
		})
	}
}

func TestRecommendedReorderFormula(t *testing.T) {
	for _, c := range []struct{ available, target, sales7, want int64 }{
		{3, 30, 0, 27},   // no history: up to target
		{4, 20, 26, 48},  // ceil(26/7*14) = 52 > 20
		{100, 20, 30, 0}, // above both
		{-5, 10, 0, 15},  // negative available (offline oversell)
		{0, 10, 1, 10},   // ceil(2) = 2 < 10
	} {
		if got := query.RecommendedReorder(c.available, c.target, c.sales7); got != c.want {
			t.Errorf("RecommendedReorder(%d, %d, %d) = %d, want %d", c.available, c.target, c.sales7, got, c.want)
		}
	}
}

// The query RPCs have no side effects, so Connect clients may read with
// HTTP GET (cacheable, plain HTTP tooling): a bare GET with the message in
// the URL, and connect-go's WithHTTPGet client, both get the level.
func TestQueriesAnswerConnectGET(t *testing.T) {
	f := newFixture(t, query.Config{})
	f.project(receipt("sku-get", "S1", 1, 7))
	u := f.srv.URL + "/tally.inventory.v1.QueryService/GetStock?" + url.Values{
		"connect": {"v1"}, "encoding": {"json"}, "message": {`{"skuId":"sku-get","storeId":"S1"}`},
	}.Encode()
	resp, err := f.srv.Client().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"onHand":"7"`) {
		t.Fatalf("GET GetStock: %d %s, want 200 with onHand 7", resp.StatusCode, body)
	}
	get := inventoryv1connect.NewQueryServiceClient(f.srv.Client(), f.srv.URL, connect.WithHTTPGet())
	r, err := get.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-get", StoreId: "S1"}))
	if err != nil || r.Msg.GetLevel().GetOnHand() != 7 {
		t.Fatalf("GetStock with connect.WithHTTPGet: %v, %v", r, err)
	}
}
