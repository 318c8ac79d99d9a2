package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
)

// tlsOnlyHBA lets every TLS connection in and, of the plaintext ones, only
// the cluster's own (StartCluster's readiness check and CreateDatabase:
// user postgres to database postgres): Tally's database takes TLS alone.
const tlsOnlyHBA = `local     all      all                   trust
hostssl   all      all      127.0.0.1/32 trust
hostnossl postgres postgres 127.0.0.1/32 trust
hostnossl all      all      127.0.0.1/32 reject
`

// startTLSCluster starts a PostgreSQL cluster with ssl=on, serving a
// certificate for 127.0.0.1 that ca issued, whose database tally refuses
// plaintext connections. It returns the tally database's URL without
// parameters (postgres://postgres@127.0.0.1:port/tally).
func startTLSCluster(t *testing.T, ca *testenv.CA) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pg")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Under dir, which StartCluster gives to the server's user (postgres,
	// as root): the certificate's directory is root's alone, and the
	// server takes a key only others cannot read (0600).
	cert := ca.Issue(t, "postgres-server", "127.0.0.1")
	files := map[string]string{"server.crt": cert.CertFile, "server.key": cert.KeyFile}
	for name, from := range files {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "pg_hba.conf"), []byte(tlsOnlyHBA), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := pg.StartCluster(t.Context(), pg.ClusterConfig{
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Settings: map[string]string{
			"ssl":           "on",
			"ssl_cert_file": filepath.Join(dir, "server.crt"),
			"ssl_key_file":  filepath.Join(dir, "server.key"),
			"hba_file":      filepath.Join(dir, "pg_hba.conf"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	plain, err := c.CreateDatabase(t.Context(), "tally")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = ""
	return u.String()
}

// withSSL is base with sslmode (and sslrootcert, unless empty).
func withSSL(base, mode, rootCert string) string {
	q := url.Values{"sslmode": {mode}}
	if rootCert != "" {
		q.Set("sslrootcert", rootCert)
	}
	return base + "?" + q.Encode()
}

// sslConnections counts the client connections to database tally other
// than conn's own, and those of them over TLS.
func sslConnections(t *testing.T, conn *pgx.Conn) (all, ssl int) {
	t.Helper()
	err := conn.QueryRow(t.Context(), `SELECT count(*), count(*) FILTER (WHERE s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.datname = 'tally' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()`).Scan(&all, &ssl)
	if err != nil {
		t.Fatal(err)
	}
	return all, ssl
}

// TestDatabaseURLSSLModeEndToEnd (issue #15): the TLS settings of
// --database-url reach PostgreSQL 15 (ssl=on, a test CA's certificate for
// 127.0.0.1, plaintext refused by pg_hba.conf) from `tally migrate`,
// `tally projector` and `tally query` as the user runs them: verify-full
// with the CA works, and the connections are TLS; the wrong CA, a host
// name the certificate does not name, and sslmode=disable are refused.
func TestDatabaseURLSSLModeEndToEnd(t *testing.T) {
	ca := testenv.NewCA(t)
	base := startTLSCluster(t, ca)
	good := withSSL(base, "verify-full", ca.File)

	t.Run("refused", func(t *testing.T) {
		otherCA := testenv.NewCA(t)
		for _, tc := range []struct {
			name, url, want string
		}{
			{"plaintext", withSSL(base, "disable", ""), "no encryption"},
			{"another CA", withSSL(base, "verify-full", otherCA.File), "certificate signed by unknown authority"},
			{"a host the certificate does not name", withSSL(strings.Replace(base, "127.0.0.1", "localhost", 1), "verify-full", ca.File), "wanted to match localhost"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, stderr := startTally(t, "migrate", "--database-url", tc.url, "--log-level", "warn").exited(t, time.Minute)
				t.Logf("tally migrate: exit %d, stderr:\n%s", code, stderr)
				if code != 1 || !strings.Contains(stderr, tc.want) {
					t.Errorf("tally migrate with %s: exit %d; want 1 and an error saying %q", tc.url, code, tc.want)
				}
			})
		}
	})

	// The test's own view of the server, over TLS too: the database takes
	// nothing else.
	conn, err := pgx.Connect(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ssl bool
	var version string
	if err := conn.QueryRow(t.Context(), "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Fatal("pg_stat_ssl.ssl is false for a verify-full connection")
	}
	t.Logf("the test's connection: %s", version)

	// Nothing yet: the refused migrations left no schema.
	var migrated bool
	levels := func() bool {
		t.Helper()
		if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", readmodel.Levels).Scan(&migrated); err != nil {
			t.Fatal(err)
		}
		return migrated
	}
	if levels() {
		t.Fatalf("%s exists before tally migrate succeeded", readmodel.Levels)
	}
	if code, stderr := startTally(t, "migrate", "--database-url", good, "--log-level", "warn").exited(t, time.Minute); code != 0 {
		t.Fatalf("tally migrate with %s: exit %d, stderr:\n%s", good, code, stderr)
	}
	if !levels() {
		t.Fatalf("tally migrate with %s exited 0 and made no %s", good, readmodel.Levels)
	}

	// A command through the write side, projected and read back by a
	// projector and a query process whose pools use the URL.
	brokers, _ := startKafka(t)
	cmdAddr, projAddr, qryAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	command := startTally(t, "command", "--insecure-no-auth", "--kafka-brokers", brokers, "--addr", cmdAddr, "--partitions", "1", "--log-level", "warn")
	command.waitFor(t, "serving", serving(cmdAddr))
	projector := startTally(t, "projector", "--kafka-brokers", brokers, "--database-url", good, "--addr", projAddr, "--log-level", "warn")
	query := startTally(t, "query", "--insecure-no-auth", "--kafka-brokers", brokers, "--database-url", good, "--addr", qryAddr, "--log-level", "warn")
	projector.waitFor(t, "serving", serving(projAddr))
	query.waitFor(t, "serving", serving(qryAddr))

	dial := func(addr string) *grpc.ClientConn {
		t.Helper()
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	sku := fmt.Sprintf("sku-tls-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	qry := inventoryv1.NewQueryServiceClient(dial(qryAddr))
	if _, err := qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetStock of a SKU never received: %v; want NotFound (the query answered from the read model)", err)
	}
	r, err := inventoryv1.NewCommandServiceClient(dial(cmdAddr)).ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: sku, SkuId: sku, StoreId: "S", Quantity: 7})
	if err != nil {
		t.Fatal(err)
	}
	var got *inventoryv1.GetStockResponse
	for attempt := 1; ; attempt++ {
		got, err = qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S", MinVersion: r.GetResult().GetSkuVersion()})
		if status.Code(err) == codes.Unavailable && attempt < 10 {
			continue // not projected within the call's wait: ask again
		}
		if err != nil {
			t.Fatalf("GetStock at min_version %d: %v", r.GetResult().GetSkuVersion(), err)
		}
		break
	}
	if got.GetLevel().GetOnHand() != 7 {
		t.Fatalf("on_hand %d after receiving 7; want 7", got.GetLevel().GetOnHand())
	}

	// Every connection Tally holds to the database is TLS: the projector's
	// and the query's pools (pg_hba.conf would have refused any other).
	all, n := sslConnections(t, conn)
	t.Logf("Tally's connections to database tally: %d, over TLS: %d", all, n)
	if all < 2 || n != all {
		t.Errorf("Tally holds %d connections to database tally, %d of them TLS; want at least 2 (projector and query), all TLS", all, n)
	}

	for _, p := range []*proc{query, projector, command} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, stderr := p.exited(t, time.Minute); code != 0 {
			t.Errorf("tally %s after SIGTERM: exit %d, stderr:\n%s", p.cmd.Args[1], code, stderr)
		}
	}
}
