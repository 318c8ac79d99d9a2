package query_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/stocknotify"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/query"
)

// env is a throwaway PostgreSQL and an embedded (kfake) Kafka, shared by
// the package's tests; each test gets its own database.
var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// fixture is a query service on a fresh read model (the projector's
// schema, rows seeded by SQL), served over HTTP/2 like tally serve serves
// it, with its low-stock hub listening.
type fixture struct {
	t    testing.TB
	pool *pgxpool.Pool
	srv  *httptest.Server
	// c speaks the Connect protocol; grpc the gRPC protocol.
	c, grpc inventoryv1connect.QueryServiceClient
}

// newFixture serves query.New(cfg) with cfg.Pool and cfg.Logger filled in.
func newFixture(t testing.TB, cfg query.Config) *fixture {
	t.Helper()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(t.Context(), pool, nil); err != nil {
		t.Fatal(err)
	}
	cfg.Pool, cfg.Logger = pool, testenv.Logger()
	svc := query.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	hub := make(chan error, 1)
	go func() { hub <- svc.RunHub(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-hub; err != nil {
			t.Errorf("RunHub: %v", err)
		}
	})
	mux := http.NewServeMux()
	mux.Handle(inventoryv1connect.NewQueryServiceHandler(svc))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &fixture{t: t, pool: pool, srv: srv,
		c:    inventoryv1connect.NewQueryServiceClient(srv.Client(), srv.URL),
		grpc: inventoryv1connect.NewQueryServiceClient(srv.Client(), srv.URL, connect.WithGRPC()),
	}
}

// exec runs SQL on the read model.
func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.t.Context(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

var eventIDs atomic.Int64

// event is one projected event of a (sku, store).
type event struct {
	sku, store         string
	version            int64
	typ                inventoryv1.EventType
	delta, onHand      int64
	reserved           int64
	occurred, recorded time.Time
}

// project seeds the read model as the projector would leave it after
// events: one ledger row each (in its month's partition, made when
// missing), and each (sku, store)'s level at its newest.
func (f *fixture) project(events ...event) {
	f.t.Helper()
	for _, e := range events {
		if e.recorded.IsZero() {
			e.recorded = time.Now()
		}
		if e.occurred.IsZero() {
			e.occurred = e.recorded
		}
		if _, err := readmodel.EnsureLedgerMonths(f.t.Context(), f.pool, readmodel.Month(e.recorded)); err != nil {
			f.t.Fatal(err)
		}
		id := fmt.Sprintf("00000000-0000-7000-8000-%012d", eventIDs.Add(1))
		f.exec(`INSERT INTO `+readmodel.Ledger+` (sku_id, sku_version, event_id, event_type, store_id, quantity_delta,
			on_hand_after, reserved_after, occurred_at, recorded_at, command_id, log_partition, log_offset)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $2)`,
			e.sku, e.version, id, int16(e.typ), e.store, e.delta, e.onHand, e.reserved, e.occurred, e.recorded, "cmd-"+id)
		f.exec(`INSERT INTO `+readmodel.Levels+` (sku_id, store_id, on_hand, reserved, sku_version, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (sku_id, store_id) DO UPDATE SET on_hand = $3, reserved = $4, sku_version = $5, updated_at = $6
			WHERE `+readmodel.Levels+`.sku_version < $5`,
			e.sku, e.store, e.onHand, e.reserved, e.version, e.recorded)
		// As the projector announces each transaction's levels.
		f.notifyProjected(stocknotify.Projected{SKU: e.sku, Version: e.version, Stores: []string{e.store}})
	}
}

// notifyProjected announces changed levels as a projector transaction
// does.
func (f *fixture) notifyProjected(changed ...stocknotify.Projected) {
	f.t.Helper()
	for _, p := range stocknotify.EncodeProjected(changed) {
		f.exec("SELECT pg_notify($1, $2)", stocknotify.ProjectedChannel, p)
	}
}

// receipt is an event that brings a (sku, store) to onHand.
func receipt(sku, store string, version, onHand int64) event {
	return event{sku: sku, store: store, version: version, typ: inventoryv1.EventType_EVENT_TYPE_RECEIPT, delta: onHand, onHand: onHand}
}

// code is err's Connect code, failing the test when err is no Connect
// error.
func code(t testing.TB, err error) connect.Code {
	t.Helper()
	if err == nil {
		return 0
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is no Connect error", err)
	}
	return ce.Code()
}

// detail is err's one detail of type T.
func detail[T any, PT interface {
	*T
	any
}](t testing.TB, err error) PT {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is no Connect error", err)
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			t.Fatal(derr)
		}
		if p, ok := v.(PT); ok {
			return p
		}
	}
	t.Fatalf("%v has no %T detail", err, PT(nil))
	return nil
}

// fields are a BadRequest's violated fields, in order.
func fields(br *errdetails.BadRequest) []string {
	var out []string
	for _, v := range br.GetFieldViolations() {
		out = append(out, v.GetField())
	}
	return out
}
