package serve_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/auth"
)

// authed is a second `tally serve`, on its default authentication, and the key it made.
type authed struct {
	cmds inventoryv1.CommandServiceClient
	qry  inventoryv1.QueryServiceClient
	key  []byte
	dir  string
	addr string
}

func startAuthed(t *testing.T) *authed {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []string{"--addr", addr, "--data-dir", dir, "--kafka-listen", freeAddr(), "--partitions", "1", "--log-level", "warn",
			"--max-adjustment", "100", "--protect-metrics"})
	}()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &authed{cmds: inventoryv1.NewCommandServiceClient(conn), qry: inventoryv1.NewQueryServiceClient(conn), dir: dir, addr: addr}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if a.key, err = os.ReadFile(filepath.Join(dir, "auth", "hs256.key")); err == nil {
			a.key = []byte(strings.TrimSpace(string(a.key)))
			admin := a.as(t, "admin-test", auth.RoleAdmin)
			cctx, ccancel := context.WithTimeout(admin(t.Context()), 2*time.Second)
			_, err = a.cmds.ReceiveStock(cctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("warm"), SkuId: "warm", StoreId: "S1", Quantity: 1})
			ccancel()
			if err == nil {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tally serve (authenticated by default) not serving: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// as returns a context maker that calls with a fresh token of role for
// stores.
func (a *authed) as(t *testing.T, subject string, role auth.Role, stores ...string) func(context.Context) context.Context {
	t.Helper()
	tok, err := auth.Issue(a.key, subject, []auth.Role{role}, stores, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
}

// Every RPC × role × own or other store: the code each cell gets. Own is
// S1 (the role's token grants it), other S2. "ok" means not refused by
// auth: the call reached the command (its own answer may be a refusal for
// stock, which is not this test's business).
func TestEveryRPCByRoleAndStore(t *testing.T) {
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	sku := uniq("authz")
	for _, st := range []string{"S1", "S2"} {
		if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("seed"), SkuId: sku, StoreId: st, Quantity: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	other := func(st string) string {
		if st == "S1" {
			return "S2"
		}
		return "S1"
	}
	count := func(ctx context.Context, st string, counted int64) error {
		sku := uniq("count")
		if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("seed"), SkuId: sku, StoreId: st, Quantity: 1000}); err != nil {
			t.Fatal(err)
		}
		_, err := a.cmds.CountStock(ctx, &inventoryv1.CountStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, CountedQuantity: counted, VarianceThreshold: 1000})
		return err
	}
	rpcs := map[string]func(ctx context.Context, st string) error{
		"RecordSale": func(ctx context.Context, st string) error {
			_, err := a.cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, Quantity: 1})
			return err
		},
		"RecordReturn": func(ctx context.Context, st string) error {
			_, err := a.cmds.RecordReturn(ctx, &inventoryv1.RecordReturnRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, Quantity: 1})
			return err
		},
		"ReceiveStock": func(ctx context.Context, st string) error {
			_, err := a.cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, Quantity: 1})
			return err
		},
		"TransferStock(from)": func(ctx context.Context, st string) error {
			_, err := a.cmds.TransferStock(ctx, &inventoryv1.TransferStockRequest{CommandId: uniq("c"), SkuId: sku, FromStoreId: st, ToStoreId: other(st), Quantity: 1})
			return err
		},
		"AdjustStock(5)": func(ctx context.Context, st string) error {
			_, err := a.cmds.AdjustStock(ctx, &inventoryv1.AdjustStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, QuantityDelta: -5, AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED})
			return err
		},
		"AdjustStock(500)": func(ctx context.Context, st string) error {
			_, err := a.cmds.AdjustStock(ctx, &inventoryv1.AdjustStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, QuantityDelta: 500, AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT_CORRECTION})
			return err
		},
		// A count's variance is what it adjusts: each counts a SKU of its
		// own holding 1000 units.
		"CountStock(-50)": func(ctx context.Context, st string) error {
			return count(ctx, st, 950)
		},
		"CountStock(-500)": func(ctx context.Context, st string) error {
			return count(ctx, st, 500)
		},
		"Reserve": func(ctx context.Context, st string) error {
			_, err := a.cmds.Reserve(ctx, &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, ReservationId: uniq("r"), Quantity: 1})
			return err
		},
		"SetReorderPolicy": func(ctx context.Context, st string) error {
			_, err := a.cmds.SetReorderPolicy(ctx, &inventoryv1.SetReorderPolicyRequest{CommandId: uniq("c"), SkuId: sku, StoreId: st, ReorderPoint: 5, TargetLevel: 50})
			return err
		},
		"GetStock": func(ctx context.Context, st string) error {
			_, err := a.qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: st})
			return err
		},
		"GetStockHistory": func(ctx context.Context, st string) error {
			_, err := a.qry.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: st})
			return err
		},
		"GetSalesHeatmap": func(ctx context.Context, st string) error {
			_, err := a.qry.GetSalesHeatmap(ctx, &inventoryv1.GetSalesHeatmapRequest{StoreIds: []string{st}})
			return err
		},
	}
	// may[rpc] lists the roles that may call it for their own store (admin
	// may call everything for every store).
	may := map[string][]auth.Role{
		"RecordSale":          {auth.RolePOS, auth.RoleEcommerce},
		"RecordReturn":        {auth.RolePOS},
		"ReceiveStock":        {auth.RoleWarehouse},
		"TransferStock(from)": {auth.RoleWarehouse},
		"AdjustStock(5)":      {auth.RoleWarehouse},
		"AdjustStock(500)":    {}, // above --max-adjustment 100
		"CountStock(-50)":     {auth.RoleWarehouse},
		"CountStock(-500)":    {}, // moves on_hand by more than --max-adjustment 100
		"Reserve":             {auth.RolePOS, auth.RoleEcommerce},
		"SetReorderPolicy":    {},
		"GetStock":            {auth.RolePOS, auth.RoleEcommerce, auth.RoleWarehouse, auth.RoleAnalyst},
		"GetStockHistory":     {auth.RolePOS, auth.RoleEcommerce, auth.RoleWarehouse, auth.RoleAnalyst},
		"GetSalesHeatmap":     {auth.RolePOS, auth.RoleEcommerce, auth.RoleWarehouse, auth.RoleAnalyst},
	}
	for name, call := range rpcs {
		for _, role := range auth.Roles {
			ctx := a.as(t, string(role)+"-S1", role, "S1")(t.Context())
			for _, st := range []string{"S1", "S2"} {
				allowed := role == auth.RoleAdmin || (st == "S1" && contains(may[name], role))
				err := call(ctx, st)
				code := status.Code(err)
				switch {
				case allowed && (code == codes.PermissionDenied || code == codes.Unauthenticated):
					t.Errorf("%s by %s at %s: %v, want it allowed", name, role, st, err)
				case !allowed && code != codes.PermissionDenied:
					t.Errorf("%s by %s at %s: %v, want PermissionDenied", name, role, st, err)
				case !allowed && (!strings.Contains(status.Convert(err).Message(), string(role)) || strings.Contains(status.Convert(err).Message(), "Bearer")):
					t.Errorf("%s by %s at %s: message %q should name the role and never the token", name, role, st, status.Convert(err).Message())
				}
			}
		}
	}
}

// A POS token of S1 selling at S2 is refused and appends nothing; a call
// without a token, with an expired one or one signed by another key is
// UNAUTHENTICATED.
func TestForeignStoreAndBadTokensChangeNothing(t *testing.T) {
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	sku := uniq("pos")
	if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("seed"), SkuId: sku, StoreId: "S2", Quantity: 10}); err != nil {
		t.Fatal(err)
	}
	pos := a.as(t, "till-1", auth.RolePOS, "S1")
	_, err := a.cmds.RecordSale(pos(t.Context()), &inventoryv1.RecordSaleRequest{CommandId: uniq("s"), SkuId: sku, StoreId: "S2", Quantity: 1})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `"S2"`) {
		t.Fatalf("POS of S1 selling at S2: %v, want PermissionDenied naming S2", err)
	}
	expired, _ := auth.Issue(a.key, "till-1", []auth.Role{auth.RolePOS}, []string{"S1"}, -time.Minute)
	foreignKey := []byte(strings.Repeat("k", 64))
	foreign, _ := auth.Issue(foreignKey, "till-1", []auth.Role{auth.RoleAdmin}, nil, time.Hour)
	for name, md := range map[string]metadata.MD{
		"no token":         nil,
		"an expired token": metadata.Pairs("authorization", "Bearer "+expired),
		"another key's":    metadata.Pairs("authorization", "Bearer "+foreign),
		"not a bearer":     metadata.Pairs("authorization", "Basic dXNlcjpwYXNz"),
	} {
		ctx := metadata.NewOutgoingContext(t.Context(), md)
		_, err := a.cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: uniq("s"), SkuId: sku, StoreId: "S2", Quantity: 1})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("sale with %s: %v, want Unauthenticated", name, err)
		}
		_, err = a.qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S2"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("read with %s: %v, want Unauthenticated", name, err)
		}
	}
	// Nothing was appended: S2 still has its 10 at version 1.
	res, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("probe"), SkuId: sku, StoreId: "S2", Quantity: 1})
	if err != nil || res.GetResult().GetSkuVersion() != 2 {
		t.Fatalf("probe: %v %v, want version 2 (nothing appended by the refused calls)", res, err)
	}
	// tally serve wrote the tokens it printed.
	b, err := os.ReadFile(filepath.Join(a.dir, "tokens"))
	if err != nil || !strings.Contains(string(b), "TALLY_ADMIN_TOKEN=") || !strings.Contains(string(b), "TALLY_POS_TOKEN=") {
		t.Fatalf("data/tokens: %q %v", b, err)
	}
}

// Apply checks each command: a forbidden one is PERMISSION_DENIED in its
// outcome and the others apply.
func TestApplyRefusesOnlyTheForbiddenCommand(t *testing.T) {
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	sku := uniq("batch")
	for _, st := range []string{"S1", "S2"} {
		if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("seed"), SkuId: sku, StoreId: st, Quantity: 10}); err != nil {
			t.Fatal(err)
		}
	}
	pos := a.as(t, "till-2", auth.RolePOS, "S1")
	resp, err := a.cmds.Apply(pos(t.Context()), &inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: uniq("a"), SkuId: sku, StoreId: "S1", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: uniq("b"), SkuId: sku, StoreId: "S2", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	o := resp.GetOutcomes()
	if o[0].GetResult() == nil || o[1].GetError().GetCode() != "permission_denied" || o[2].GetError().GetCode() != "permission_denied" {
		t.Fatalf("outcomes %v, want the S1 sale applied, the S2 sale and the receipt permission_denied", o)
	}
	// Who did it is on the event, and in history.
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, err := a.qry.GetStockHistory(pos(t.Context()), &inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: "S1"})
		if err != nil && status.Code(err) != codes.NotFound { // NotFound: not projected yet
			t.Fatal(err)
		}
		if evs := h.GetEvents(); len(evs) == 2 {
			if evs[0].GetActor() != "till-2" || evs[1].GetActor() != "admin" {
				t.Fatalf("history actors %q, %q; want till-2 (the sale), admin (the receipt)", evs[0].GetActor(), evs[1].GetActor())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history %v: the sale did not show in 15 s", h.GetEvents())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func contains(roles []auth.Role, r auth.Role) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

// A watch of every store by a token scoped to S1 watches S1 only: another
// store's crossings never reach it.
func TestStoreScopedWatchSeesOnlyItsStores(t *testing.T) {
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	p := uniq("wa")
	receive := func(sku, st string, q int64) {
		t.Helper()
		if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("r"), SkuId: sku, StoreId: st, Quantity: q}); err != nil {
			t.Fatal(err)
		}
	}
	receive(p+"-a", "S1", 3) // low at both stores (default reorder point 10)
	receive(p+"-a", "S2", 3)
	ctx, cancel := context.WithCancel(a.as(t, "till-3", auth.RolePOS, "S1")(t.Context()))
	defer cancel()
	st, err := a.qry.WatchLowStock(ctx, &inventoryv1.WatchLowStockRequest{SkuPrefix: p})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *inventoryv1.WatchLowStockResponse, 100)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				close(msgs)
				return
			}
			msgs <- m
		}
	}()
	next := func() *inventoryv1.WatchLowStockResponse {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("the watch ended")
			}
			return m
		case <-time.After(15 * time.Second):
			t.Fatal("no message in 15 s")
		}
		return nil
	}
	var seen []string
	for m := next(); !m.GetCaughtUp(); m = next() {
		seen = append(seen, m.GetItem().GetStoreId())
	}
	// Crossings at both stores: S2 recovers, then S1 does.
	receive(p+"-a", "S2", 50)
	receive(p+"-a", "S1", 50)
	seen = append(seen, next().GetItem().GetStoreId())
	select {
	case m := <-msgs:
		seen = append(seen, m.GetItem().GetStoreId())
	case <-time.After(500 * time.Millisecond):
	}
	if strings.Join(seen, ",") != "S1,S1" {
		t.Fatalf("stores delivered %v, want S1's initial item and its recovery only", seen)
	}
	// Naming another store is refused.
	bad, err := a.qry.WatchLowStock(ctx, &inventoryv1.WatchLowStockRequest{StoreIds: []string{"S2"}})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("watch of S2 by an S1 token: %v, want PermissionDenied", err)
	}
}

// --rate-limit: a caller beyond its calls per second gets
// RESOURCE_EXHAUSTED (here without auth: the bucket is the client's IP).
func TestRateLimitAnswersResourceExhausted(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []string{"--addr", addr, "--data-dir", dir, "--kafka-listen", freeAddr(), "--partitions", "1", "--log-level", "error",
			"--rate-limit", "0.5", "--rate-burst", "5", "--insecure-no-auth"})
	}()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	qry := inventoryv1.NewQueryServiceClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	var got []codes.Code
	for len(got) < 8 {
		_, err := qry.GetStock(t.Context(), &inventoryv1.GetStockRequest{SkuId: "A", StoreId: "S1"})
		if c := status.Code(err); c == codes.Unavailable && len(got) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("tally serve not serving")
			}
			time.Sleep(200 * time.Millisecond) // still starting (not counted: the listener is not up)
			continue
		} else {
			got = append(got, c)
		}
	}
	if got[len(got)-1] != codes.ResourceExhausted {
		t.Fatalf("codes of 8 calls at once with a burst of 5: %v, want the last refused ResourceExhausted", got)
	}
}

// --protect-metrics: /metrics answers 401 without a token or with one of a
// role other than admin or analyst; health stays open.
func TestProtectedMetricsNeedAnAdminOrAnalyst(t *testing.T) {
	a := startAuthed(t)
	var body []byte
	get := func(tok string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr+"/metrics", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	pos, _ := auth.Issue(a.key, "till", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	analyst, _ := auth.Issue(a.key, "bi", []auth.Role{auth.RoleAnalyst}, nil, time.Hour)
	if c := get(""); c != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %d, want 401", c)
	}
	if c := get(pos); c != http.StatusUnauthorized {
		t.Errorf("/metrics with a POS token: %d, want 401", c)
	}
	if c := get(analyst); c != http.StatusOK {
		t.Errorf("/metrics with an analyst token: %d, want 200", c)
	}
	// The process's own, the read model pool's and the RPC counters (the
	// refused calls above were RPCs too) are all there.
	for _, m := range []string{"go_goroutines", "tally_pg_pool_max_conns", "tally_pg_pool_acquires_total", "tally_rpc_requests_total"} {
		if !strings.Contains(string(body), "\n"+m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a token: %v, want it open", err)
	}
}

// A reservation names no store in commit and release: a token of S1 cannot
// end, or find, a reservation held at S2 (answered as if there were none);
// the reservation stays for its own store.
func TestReservationOfAnotherStoreCannotBeEnded(t *testing.T) {
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	sku := uniq("resv")
	if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("seed"), SkuId: sku, StoreId: "S2", Quantity: 5}); err != nil {
		t.Fatal(err)
	}
	s2 := a.as(t, "web-S2", auth.RoleEcommerce, "S2")
	if _, err := a.cmds.Reserve(s2(t.Context()), &inventoryv1.ReserveRequest{CommandId: uniq("r"), SkuId: sku, StoreId: "S2", ReservationId: "cart-7", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	s1 := a.as(t, "till-S1", auth.RolePOS, "S1")
	_, err := a.cmds.CommitReservation(s1(t.Context()), &inventoryv1.CommitReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "cart-7"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("commit of S2's reservation by an S1 token: %v, want FailedPrecondition (no such reservation for it)", err)
	}
	_, err = a.cmds.ReleaseReservation(s1(t.Context()), &inventoryv1.ReleaseReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "cart-7"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("release of S2's reservation by an S1 token: %v, want FailedPrecondition", err)
	}
	res, err := a.cmds.CommitReservation(s2(t.Context()), &inventoryv1.CommitReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "cart-7"})
	if err != nil || res.GetResult().GetStores()[0].GetOnHand() != 3 {
		t.Fatalf("commit by S2's own token: %v %v, want on hand 3", res, err)
	}
}

// GetSalesHeatmap names stores in a list, which the store check of the
// other reads does not see: a token scoped to stores reads its own only
// (all of them when it names none), and a scoped token without stores is
// refused rather than shown every store.
func TestSalesHeatmapKeepsToTheTokensStores(t *testing.T) {
	a := startAuthed(t)
	s1 := a.as(t, "manager-S1", auth.RoleAnalyst, "S1")
	none := a.as(t, "analyst-nowhere", auth.RoleAnalyst)
	if _, err := a.qry.GetSalesHeatmap(s1(t.Context()), &inventoryv1.GetSalesHeatmapRequest{}); err != nil {
		t.Errorf("S1's manager, no stores named: %v, want its own", err)
	}
	if _, err := a.qry.GetSalesHeatmap(s1(t.Context()), &inventoryv1.GetSalesHeatmapRequest{StoreIds: []string{"S1", "S2"}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("S1's manager naming S2: %v, want PermissionDenied", err)
	}
	if _, err := a.qry.GetSalesHeatmap(none(t.Context()), &inventoryv1.GetSalesHeatmapRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a scoped token without stores: %v, want PermissionDenied", err)
	}
}
