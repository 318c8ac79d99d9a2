package serve_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
)

// On a cluster with SASL SCRAM and an authorizer, Tally runs with exactly
// the ACLs `tally kafka-acls --apply` grants its principal, and without
// them refuses to start, saying which authorization Kafka refused.
func TestServeRunsOnAClusterWithACLsWithTheGrantsAlone(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(), kfake.GroupMinSessionTimeout(time.Second),
		kfake.Superuser(kafka.ScramSHA256, "admin", "admin-secret"),
		kfake.User(kafka.ScramSHA256, "tally", "tally-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := strings.Join(c.ListenAddrs(), ",")
	secrets := t.TempDir()
	password := func(user, secret string) string {
		f := filepath.Join(secrets, user)
		if err := os.WriteFile(f, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	tallyPassword := password("tally", "tally-secret")
	dir := t.TempDir() // one read model for both starts
	serveAsTally := func(ctx context.Context, addr string) error {
		return serve.Run(ctx, []string{"--addr", addr, "--data-dir", dir, "--kafka-brokers", brokers, "--partitions", "2", "--log-level", "error",
			"--insecure-no-auth", "--kafka-sasl-mechanism", kafka.ScramSHA256, "--kafka-sasl-user", "tally", "--kafka-sasl-password-file", tallyPassword})
	}

	// No ACLs yet: the start fails, naming the refusal.
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	err = serveAsTally(ctx, freeAddr())
	cancel()
	if err == nil || !strings.Contains(err.Error(), "AUTHORIZATION_FAILED") {
		t.Fatalf("tally serve without ACLs: %v; want a start refused with Kafka's AUTHORIZATION_FAILED", err)
	}
	t.Logf("without ACLs: %v", err)

	// A user that may not alter ACLs cannot grant them.
	if err := serve.RunKafkaACLs(t.Context(), []string{"--principal", "tally", "--apply", "--kafka-brokers", brokers,
		"--kafka-sasl-mechanism", kafka.ScramSHA256, "--kafka-sasl-user", "tally", "--kafka-sasl-password-file", tallyPassword}); err == nil {
		t.Fatal("tally granted itself ACLs")
	}
	if err := serve.RunKafkaACLs(t.Context(), []string{"--principal", "User:tally", "--apply", "--kafka-brokers", brokers,
		"--kafka-sasl-mechanism", kafka.ScramSHA256, "--kafka-sasl-user", "admin", "--kafka-sasl-password-file", password("admin", "admin-secret")}); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr()
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveAsTally(ctx, addr) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tally serve stopped with: %v", err)
		}
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmds, qry := inventoryv1.NewCommandServiceClient(conn), inventoryv1.NewQueryServiceClient(conn)
	sku := uniq("acl")
	deadline := time.Now().Add(90 * time.Second)
	var version int64
	for version == 0 {
		select {
		case err := <-done:
			t.Fatalf("tally serve with the granted ACLs exited: %v", err)
		default:
		}
		cctx, ccancel := context.WithTimeout(t.Context(), 2*time.Second)
		r, err := cmds.ReceiveStock(cctx, &inventoryv1.ReceiveStockRequest{CommandId: sku, SkuId: sku, StoreId: "S1", Quantity: 7})
		ccancel()
		switch {
		case err == nil:
			version = r.GetResult().GetSkuVersion()
		case time.Now().After(deadline):
			t.Fatalf("no receipt accepted with the granted ACLs: %v", err)
		default:
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Projected: the projector's group and read of the topic are granted too.
	for {
		cctx, ccancel := context.WithTimeout(t.Context(), 3*time.Second)
		r, err := qry.GetStock(cctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S1", MinVersion: version})
		ccancel()
		if err == nil {
			if got := r.GetLevel().GetOnHand(); got != 7 {
				t.Fatalf("on hand %d after a receipt of 7", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receipt was not projected: %v", err)
		}
	}
}
