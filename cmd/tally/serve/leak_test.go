package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// A `tally serve` whose last part fails to build gives back everything
// built before it: the listener, the embedded broker and its port, the
// command service with its group member and writers, the Postgres cluster
// and the data directory's lock. The same serve then starts on the same
// directory and addresses, and every partition takes commands.
func TestServeFailingLateLeavesNothingBehind(t *testing.T) {
	// The BigQuery client is the last thing built, after the command
	// service has joined its group; with credentials that are not there
	// it cannot be.
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
	dir, addr, kafkaAddr := t.TempDir(), freeAddr(), freeAddr()
	args := []string{"--addr", addr, "--data-dir", dir, "--kafka-listen", kafkaAddr, "--partitions", "3", "--log-level", "warn", "--insecure-no-auth"}
	before := commandGoroutines()

	err := serve.Run(t.Context(), append(args, "--bigquery-project", "p", "--bigquery-dataset", "d"))
	if err == nil || !strings.Contains(err.Error(), "bigquery client") {
		t.Fatalf("serve with BigQuery and no credentials: %v; want the BigQuery client's error", err)
	}

	for _, a := range []string{addr, kafkaAddr} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s still taken after serve failed: %v", a, err)
			continue
		}
		l.Close()
	}
	// This package's serve, started in TestMain, runs its own command
	// goroutines: the failed one must leave no more than there were.
	deadline := time.Now().Add(10 * time.Second)
	for n := commandGoroutines(); n > before; n = commandGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in package command after serve failed, %d before:\n%s", n, before, commandStacks())
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var runErr error
	stopped := make(chan struct{})
	go func() { runErr = serve.Run(ctx, args); close(stopped) }()
	defer func() {
		cancel()
		<-stopped
		if runErr != nil {
			t.Errorf("second serve stopped with: %v", runErr)
		}
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := inventoryv1.NewCommandServiceClient(conn)
	// Enough SKUs to land in every partition.
	for i := range 30 {
		receiveSoon(t, client, stopped, fmt.Sprintf("after-leak-%d", i))
	}
}

// receiveSoon retries ReceiveStock for sku until it succeeds, for up to a
// minute: the serve is starting and its writers opening.
func receiveSoon(t *testing.T, client inventoryv1.CommandServiceClient, stopped <-chan struct{}, sku string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-stopped:
			t.Fatal("second serve exited")
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err := client.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S", Quantity: 1})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ReceiveStock %s on the second serve: %v", sku, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commandStacks are the stacks of the goroutines running code of package
// command.
func commandStacks() string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("github.com/tally-oss/tally/command.")) {
			out = append(out, string(g))
		}
	}
	return strings.Join(out, "\n\n")
}

func commandGoroutines() int {
	s := commandStacks()
	if s == "" {
		return 0
	}
	return strings.Count(s, "\n\n") + 1
}
