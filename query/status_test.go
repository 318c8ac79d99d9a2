package query_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/query"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// client serves a query service on a fresh read model (the projector's
// schema, no rows) and returns a client of it and the database.
func client(t testing.TB) (inventoryv1connect.QueryServiceClient, func(sql string, args ...any)) {
	t.Helper()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(t.Context(), pool, nil); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(inventoryv1connect.NewQueryServiceHandler(query.New(query.Config{Pool: pool, Logger: testenv.Logger()})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(t.Context(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	return inventoryv1connect.NewQueryServiceClient(srv.Client(), srv.URL), exec
}

func TestProjectionStatusReportsTheNewestDeadLetters(t *testing.T) {
	c, exec := client(t)
	status := func() *inventoryv1.GetProjectionStatusResponse {
		t.Helper()
		r, err := c.GetProjectionStatus(t.Context(), connect.NewRequest(&inventoryv1.GetProjectionStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
	if s := status(); s.GetDeadLetterCount() != 0 || len(s.GetRecentDeadLetters()) != 0 {
		t.Fatalf("a read model without dead letters reports %d: %v", s.GetDeadLetterCount(), s.GetRecentDeadLetters())
	}

	// Twelve events refused over an hour, one record that did not decode
	// after them, and one dead letter of another projection.
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, event_id, sku_id, sku_version, error, sqlstate, dead_lettered_at)
		SELECT 'postgres', i % 3, 100 + i, ('00000000-0000-7000-8000-0000000000' || lpad(i::text, 2, '0'))::uuid, 'sku-' || i, i,
		       'postgres refused the event: invalid byte sequence', '22021', now() - interval '1 hour' + i * interval '1 minute'
		FROM generate_series(1, 12) i`)
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, error) VALUES ('postgres', 2, 500, 'decode InventoryEvent: bad')`)
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, error) VALUES ('replay', 0, 7, 'other')`)

	s := status()
	var got []string
	for _, d := range s.GetRecentDeadLetters() {
		got = append(got, fmt.Sprintf("%d/%d:%s:%s:%d:%s", d.GetPartition(), d.GetOffset(), d.GetEventId(), d.GetSkuId(), d.GetSkuVersion(), d.GetSqlstate()))
		if d.GetError() == "" || d.GetDeadLetteredAt() == nil {
			t.Errorf("dead letter %d/%d without error or time", d.GetPartition(), d.GetOffset())
		}
	}
	want := []string{"2/500:::0:"}
	for i := 12; len(want) < query.RecentDeadLetters; i-- {
		want = append(want, fmt.Sprintf("%d/%d:00000000-0000-7000-8000-0000000000%02d:sku-%d:%d:22021", i%3, 100+i, i, i, i))
	}
	if s.GetDeadLetterCount() != 13 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%d dead letters, newest first:\n%s\nwant 13:\n%s", s.GetDeadLetterCount(), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
