package serve

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tally-oss/tally/bench"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// StartEmbedded runs a whole `tally serve` under dir on free loopback ports
// and returns once it takes commands: what `tally bench --embedded` drives.
func StartEmbedded(ctx context.Context, dir string) (*bench.Embedded, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--addr", addr, "--data-dir", dir, "--kafka-listen", kafkaAddr, "--log-level", "warn", "--insecure-no-auth"})
	}()
	stop := func() { cancel(); <-done }
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, err
	}
	defer conn.Close()
	cmd := inventoryv1.NewCommandServiceClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-done:
			cancel()
			// %v, not %w: err is nil when serve returned cleanly.
			return nil, fmt.Errorf("tally serve exited: %v", err)
		default:
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cmd.ReceiveStock(cctx, &inventoryv1.ReceiveStockRequest{CommandId: "embedded-ready", SkuId: "embedded-ready", StoreId: "ready", Quantity: 1})
		ccancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("tally serve not ready after 60s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	dsn, err := os.ReadFile(filepath.Join(dir, "pg", "DATABASE_URL"))
	if err != nil {
		stop()
		return nil, err
	}
	return &bench.Embedded{Addr: addr, Brokers: []string{kafkaAddr}, DatabaseURL: strings.TrimSpace(string(dsn)), Stop: stop}, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
