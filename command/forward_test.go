package command_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/auth"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/server"
)

// instance is one command instance of a cluster: its service advertises its
// own listener, so the others forward to it.
type instance struct {
	addr string
	reg  *prometheus.Registry
	stop func()
	// http and scheme are what a client of the instance uses.
	http   *http.Client
	scheme string
}

func startInstance(t testing.TB, brokers []string, opts ...connect.HandlerOption) *instance {
	t.Helper()
	return startSecureInstance(t, brokers, security{handler: opts})
}

// security is how an instance serves and reaches Kafka; the zero value is
// h2c and plaintext Kafka.
type security struct {
	kafka  *kafka.Security
	server *tls.Config // the API's TLS
	peer   *tls.Config // forwarding's TLS (command.ServiceConfig.ForwardTLS)
	client *tls.Config // the test's client's TLS
	// handler are the command handler's options (an auth interceptor).
	handler []connect.HandlerOption
}

func startSecureInstance(t testing.TB, brokers []string, sec security) *instance {
	t.Helper()
	log := quietLogger()
	srv, err := server.Listen("127.0.0.1:0", nil, log, server.WithTLS(sec.server))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := command.NewService(t.Context(), command.ServiceConfig{
		WriterConfig:   command.WriterConfig{Brokers: brokers, Kafka: sec.kafka, Logger: log, Metrics: command.NewMetrics(reg)},
		Partitions:     6,
		Advertise:      srv.Addr(),
		ForwardTLS:     sec.peer,
		SessionTimeout: 2 * time.Second,
	})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	path, h := command.NewHandler(svc, log).HTTPHandler(sec.handler...)
	srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, 5*time.Second); close(done) }()
	in := &instance{addr: srv.Addr(), reg: reg, http: http.DefaultClient, scheme: "http://"}
	if sec.server != nil {
		tr := &http.Transport{TLSClientConfig: sec.client, ForceAttemptHTTP2: true}
		in.http, in.scheme = &http.Client{Transport: tr}, "https://"
		t.Cleanup(tr.CloseIdleConnections)
	}
	stopped := false
	in.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			_ = svc.Close(context.Background())
		}
	}
	t.Cleanup(in.stop)
	return in
}

func (in *instance) client() inventoryv1connect.CommandServiceClient {
	return inventoryv1connect.NewCommandServiceClient(in.http, in.scheme+in.addr)
}

func (in *instance) forwarded(t testing.TB) float64 {
	t.Helper()
	mfs, err := in.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "tally_command_forwarded_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// Three instances behind a round-robin client: every command succeeds
// wherever it lands (forwarded once to the instance writing its
// partition, the answer relayed), an Apply batch spanning every partition
// is split, forwarded and reassembled in order, and the log holds each
// command once.
func TestAnyInstanceTakesAnyCommand(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	var ins []*instance
	for range 3 {
		ins = append(ins, startInstance(t, k.Addrs()))
	}
	waitBalanced(t, k.Addrs(), 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	prefix := uniq("fwd")
	const skus = 60
	for i := range skus {
		c := ins[i%3].client()
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := c.ReceiveStock(cctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{
			CommandId: fmt.Sprintf("%s-r%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 5,
		}))
		ccancel()
		if err != nil {
			t.Fatalf("receipt %d through instance %d: %v", i, i%3, err)
		}
		if resp.Msg.GetResult().GetSkuVersion() != 1 {
			t.Fatalf("receipt %d: %v", i, resp.Msg)
		}
	}
	var forwarded float64
	for _, in := range ins {
		forwarded += in.forwarded(t)
	}
	if forwarded < skus/3 {
		t.Fatalf("%v calls forwarded for %d commands sent round-robin to 3 instances; want most of two thirds", forwarded, skus)
	}

	// One batch through one instance, every SKU sold from twice, in order:
	// the second sale of each SKU sees the first.
	var batch []*inventoryv1.Command
	for i := range skus {
		for j := range 2 {
			batch = append(batch, &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{
				CommandId: fmt.Sprintf("%s-s%d-%d", prefix, i, j), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 2,
			}}})
		}
	}
	resp, err := ins[0].client().Apply(ctx, connect.NewRequest(&inventoryv1.ApplyRequest{Commands: batch}))
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range resp.Msg.GetOutcomes() {
		r := o.GetResult()
		if r.GetSkuId() != fmt.Sprintf("%s-%d", prefix, i/2) || r.GetSkuVersion() != int64(2+i%2) || r.GetStores()[0].GetOnHand() != int64(3-2*(i%2)) {
			t.Fatalf("outcome %d: %v; want %s-%d at version %d", i, o, prefix, i/2, 2+i%2)
		}
	}

	// The owner's errors are relayed with their details: a third sale of
	// 2 finds 1 left, wherever it is sent.
	for i := range 6 {
		_, err := ins[i%3].client().RecordSale(ctx, connect.NewRequest(&inventoryv1.RecordSaleRequest{
			CommandId: fmt.Sprintf("%s-x%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 2,
		}))
		var ce *connect.Error
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !errors.As(err, &ce) || len(ce.Details()) == 0 {
			t.Fatalf("oversell through instance %d: %v; want FAILED_PRECONDITION with InsufficientStock", i%3, err)
		}
	}

	// A forwarded call is never forwarded again: marked as forwarded, a
	// command for another instance's partition is UNAVAILABLE, naming it.
	refused := 0
	for i := range skus {
		req := connect.NewRequest(&inventoryv1.RecordReturnRequest{
			CommandId: fmt.Sprintf("%s-h%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 1,
		})
		req.Header().Set("Tally-Forwarded-By", "127.0.0.1:1")
		_, err := ins[0].client().RecordReturn(ctx, req)
		switch {
		case err == nil:
		case connect.CodeOf(err) == connect.CodeUnavailable && (strings.Contains(err.Error(), ins[1].addr) || strings.Contains(err.Error(), ins[2].addr)):
			refused++
		default:
			t.Fatalf("forwarded-marked return %d: %v", i, err)
		}
	}
	if refused == 0 || refused == skus {
		t.Fatalf("%d of %d forwarded-marked commands refused by instance 0; want those of the other instances' partitions", refused, skus)
	}

	evs := map[string]int{}
	for _, e := range readAllEvents(t, k.Addrs(), prefix) {
		evs[e.GetCommandId()]++
	}
	if want := skus + 2*skus + skus - refused; len(evs) != want {
		t.Fatalf("%d commands in the log, want %d", len(evs), want)
	}
	for id, n := range evs {
		if n != 1 {
			t.Fatalf("command %s in the log %d times", id, n)
		}
	}
}

// An owner that cannot be reached (its advertised address takes no
// connections) is retried until the caller's deadline, then the caller
// gets UNAVAILABLE naming the owner and why; nothing is applied twice.
func TestUnreachableOwnerIsUnavailableWithTheReason(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	log := quietLogger()
	// The other instance advertises a port nothing listens on.
	dead := "127.0.0.1:1"
	other, err := command.NewService(t.Context(), command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: k.Addrs(), Logger: log}, Partitions: 6, Advertise: dead, SessionTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	in := startInstance(t, k.Addrs())
	c := in.client()
	prefix := uniq("unreach")
	// Until the group has given the other instance some partitions.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := c.ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: fmt.Sprintf("%s-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 1}))
		cancel()
		if err != nil {
			if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), dead) {
				t.Fatalf("command %d: %v; want UNAVAILABLE naming %s", i, err, dead)
			}
			t.Logf("command %d, for the unreachable instance's partition: %v", i, err)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no command was for the unreachable instance's partitions in 20 s")
		}
	}
}

// Two instances advertising the same address cannot forward to each
// other: a command for the other's partitions is UNAVAILABLE saying so.
func TestTwoInstancesOnOneAdvertiseAddressAreNamed(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	in := startInstance(t, k.Addrs())
	log := quietLogger()
	twin, err := command.NewService(t.Context(), command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: k.Addrs(), Logger: log}, Partitions: 6, Advertise: in.addr, SessionTimeout: 2 * time.Second,
		AssignWait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = twin.Close(context.Background()) })
	c := in.client()
	prefix := uniq("twin")
	// Until the group has given the twin its partitions.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := c.ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: fmt.Sprintf("%s-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 1}))
		cancel()
		if err != nil {
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("command %d: %v; want UNAVAILABLE naming the shared --advertise", i, err)
			}
			if strings.Contains(err.Error(), "advertises this instance's address") {
				return
			}
			// A partition changing hands while the twin joins answers
			// UNAVAILABLE of its own; keep asking.
			t.Logf("command %d: %v", i, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no command was refused for the twin's partitions in 20 s")
		}
	}
}

// waitBalanced waits until the writers' group has n members, each writing
// at least one partition.
func waitBalanced(t testing.TB, brokers []string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		writers := map[string]bool{}
		for _, addr := range writersOf(t, brokers) {
			writers[addr] = true
		}
		if len(writers) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writers' group has %d members with partitions after 30 s, want %d", len(writers), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writersOf asks the writers' group which instance (by address) writes
// each partition.
func writersOf(t testing.TB, brokers []string) map[int32]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	owners, _, err := command.Writers(t.Context(), kadm.NewClient(cl), command.WritersGroup, kafka.EventsTopic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return nil // no instance has joined yet
	}
	if err != nil {
		t.Fatal(err)
	}
	return owners
}

// With authentication on, a forwarded call carries the caller's token: the
// owner authenticates and authorizes it again (a POS token of S1 sells at
// S1 through any instance; at S2 it is refused wherever it lands).
func TestForwardedCallsCarryTheCallersToken(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close) // after the instances' cleanups
	keyFile := filepath.Join(t.TempDir(), "key")
	key, _, err := auth.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(t.Context(), auth.Config{KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	a := startInstance(t, k.Addrs(), connect.WithInterceptors(auth.Interceptor(v)))
	b := startInstance(t, k.Addrs(), connect.WithInterceptors(auth.Interceptor(v)))
	waitBalanced(t, k.Addrs(), 2)
	admin, _ := auth.Issue(key, "admin", []auth.Role{auth.RoleAdmin}, nil, time.Hour)
	pos, _ := auth.Issue(key, "till", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	with := func(tok string, m *inventoryv1.RecordSaleRequest) *connect.Request[inventoryv1.RecordSaleRequest] {
		r := connect.NewRequest(m)
		r.Header().Set("Authorization", "Bearer "+tok)
		return r
	}
	prefix := uniq("fa")
	forwarded := 0
	for i := range 12 {
		sku := fmt.Sprintf("%s-%d", prefix, i)
		for _, st := range []string{"S1", "S2"} {
			r := connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: uniq("r"), SkuId: sku, StoreId: st, Quantity: 5})
			r.Header().Set("Authorization", "Bearer "+admin)
			if _, err := a.client().ReceiveStock(t.Context(), r); err != nil {
				t.Fatal(err)
			}
		}
		before := a.forwarded(t)
		if _, err := a.client().RecordSale(t.Context(), with(pos, &inventoryv1.RecordSaleRequest{CommandId: uniq("s"), SkuId: sku, StoreId: "S1", Quantity: 1})); err != nil {
			t.Fatalf("POS sale at S1 through %s: %v", a.addr, err)
		}
		if a.forwarded(t) > before {
			forwarded++
		}
		_, err := b.client().RecordSale(t.Context(), with(pos, &inventoryv1.RecordSaleRequest{CommandId: uniq("s"), SkuId: sku, StoreId: "S2", Quantity: 1}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("POS sale at S2 through %s: %v, want permission_denied", b.addr, err)
		}
	}
	if forwarded == 0 {
		t.Fatal("no sale was forwarded: the test proves nothing")
	}
}
