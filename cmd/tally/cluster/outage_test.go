package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/cmd/tally/check"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/testenv"
)

// PostgreSQL stopped for a while under load: commands keep succeeding (the
// write side never needs it), queries answer UNAVAILABLE at once instead of
// hanging, and when it is back the projector (which retried with backoff)
// catches up: the read model equals the fold of the log, nothing lost.
func TestPostgresOutageUnderLoad(t *testing.T) {
	dir := t.TempDir()
	port, err := pg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	startPG := func() *pg.Cluster {
		cl, err := pg.StartCluster(t.Context(), pg.ClusterConfig{Dir: filepath.Join(dir, "pg"), Port: port, Logger: testenv.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	db := startPG()
	dsn, err := db.CreateDatabase(t.Context(), "tally")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			db.Stop()
		}
	})

	c := startCluster(t, 2)
	projAddr, queryAddr := freeAddr(t), freeAddr(t)
	testenv.StartChild(t, "projector", "ADDR="+projAddr, "KAFKA="+c.kafka, "DATABASE_URL="+dsn)
	testenv.StartChild(t, "query", "ADDR="+queryAddr, "KAFKA="+c.kafka, "DATABASE_URL="+dsn)
	qry := inventoryv1connect.NewQueryServiceClient(http.DefaultClient, "http://"+queryAddr)

	l, stopLoad := startLoad(t, c, "pgdown", 4)
	sku := l.snapshot()[0].sku

	db.Stop()
	stopped = true
	downAt := time.Now()
	// Queries answer at once, UNAVAILABLE.
	var slowest time.Duration
	for range 5 {
		start := time.Now()
		_, err := qry.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S1"}))
		if d := time.Since(start); d > slowest {
			slowest = d
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("GetStock with PostgreSQL down: %v; want UNAVAILABLE", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if slowest > 3*time.Second {
		t.Errorf("GetStock took %v to answer with PostgreSQL down; want an answer at once", slowest)
	}
	// min_version: a clear answer within the caller's deadline.
	mctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	_, err = qry.GetStock(mctx, connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S1", MinVersion: 1 << 40}))
	cancel()
	if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded {
		t.Fatalf("GetStock min_version with PostgreSQL down: %v; want UNAVAILABLE or DEADLINE_EXCEEDED", err)
	}
	time.Sleep(3 * time.Second)
	ackedDuring := 0
	for _, a := range l.snapshot() {
		if a.at.After(downAt) {
			ackedDuring++
		}
	}
	db = startPG()
	stopped = false
	upAt := time.Now()
	time.Sleep(time.Second)
	stopLoad()
	if ackedDuring == 0 {
		t.Fatal("no command acknowledged while PostgreSQL was down")
	}

	// The projection catches up: the read model equals the fold of the log.
	var rep *check.Report
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err = check.Check(t.Context(), check.Options{Brokers: []string{c.kafka}, DatabaseURL: dsn})
		if err == nil && rep.ReadModel != nil && rep.ReadModel.EventsBehind == 0 && rep.ProblemCount() == 0 {
			break
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			if rep != nil {
				rep.Print(&b, 5)
			}
			t.Fatalf("the read model did not catch up within 60 s of PostgreSQL's return: %v\n%s", err, b.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	caughtUp := time.Since(upAt)
	l.audit(t)
	if _, err := qry.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S1"})); err != nil {
		t.Fatalf("GetStock after PostgreSQL returned: %v", err)
	}
	t.Logf("PostgreSQL down for %v under load: %d commands acknowledged while it was down (%d in all), queries UNAVAILABLE in at most %v; read model equal to the fold of the log (%d levels) %v after it returned",
		upAt.Sub(downAt).Round(time.Millisecond), ackedDuring, len(l.acks), slowest.Round(time.Millisecond), rep.ReadModel.Rows, caughtUp.Round(time.Millisecond))
}

// Kafka killed (SIGKILL) under load and restarted on its data directory:
// while it is down commands answer within their deadline, UNAVAILABLE or
// DEADLINE_EXCEEDED, never a success; the writers recover by themselves
// when it is back, and every acknowledged command is in the log once.
func TestKafkaOutageUnderLoad(t *testing.T) {
	c := startCluster(t, 2)
	l, stopLoad := startLoad(t, c, "kdown", 4)
	c.kafkaChild.Kill(t)
	downAt := time.Now()
	// A command sent now is answered within its deadline, and not with a
	// success.
	var slowest time.Duration
	for i := range 4 {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		start := time.Now()
		_, err := c.clients[i%2].ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: fmt.Sprintf("%s-down-%d", l.prefix, i), SkuId: fmt.Sprintf("%s-%d", l.prefix, i), StoreId: "S1", Quantity: 1}))
		cancel()
		slowest = max(slowest, time.Since(start))
		if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded {
			t.Fatalf("a command with Kafka down answered %v; want UNAVAILABLE or DEADLINE_EXCEEDED", err)
		}
	}
	if slowest > 2500*time.Millisecond {
		t.Errorf("a command with a 2 s deadline answered after %v with Kafka down", slowest)
	}
	time.Sleep(time.Second)
	c.startKafka(t)
	upAt := time.Now()
	time.Sleep(8 * time.Second)
	stopLoad()
	after := 0
	var first time.Duration
	for _, a := range l.acks {
		if a.sentAt.After(upAt) {
			after++
			if first == 0 || a.at.Sub(upAt) < first {
				first = a.at.Sub(upAt)
			}
		}
	}
	if after == 0 {
		t.Fatal("no command acknowledged in the 8 s after Kafka returned")
	}
	events := l.audit(t)
	l.replayed(t, 50)
	t.Logf("Kafka SIGKILLed under load, down %v: commands answered within their deadline (slowest %v), never a success; %d acknowledged after it returned (first %v after), %d in all, %d events, each acknowledged command once",
		upAt.Sub(downAt).Round(time.Millisecond), slowest.Round(time.Millisecond), after, first.Round(time.Millisecond), len(l.acks), events)
	if len(l.failed) > 0 {
		t.Errorf("%d commands were never acknowledged in 30 s of retries", len(l.failed))
	}
}
