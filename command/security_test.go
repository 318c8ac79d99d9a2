package command_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/testenv"
)

// Instances that serve TLS and require client certificates forward to
// each other over TLS, presenting their own certificate.
func TestCommandsAreForwardedOverMutualTLS(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ca := testenv.NewCA(t)
	client := ca.Issue(t, "client")
	var ins []*instance
	for i := range 2 {
		cert := ca.Issue(t, fmt.Sprintf("instance-%d", i), "127.0.0.1")
		ins = append(ins, startSecureInstance(t, k.Addrs(), security{
			server: &tls.Config{Certificates: []tls.Certificate{cert.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool},
			peer:   &tls.Config{Certificates: []tls.Certificate{cert.TLS}, RootCAs: ca.Pool},
			client: &tls.Config{Certificates: []tls.Certificate{client.TLS}, RootCAs: ca.Pool},
		}))
	}
	waitBalanced(t, k.Addrs(), 2)

	prefix := uniq("tls")
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		_, err := ins[i%2].client().ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{
			CommandId: fmt.Sprintf("%s-r%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 5,
		}))
		cancel()
		if err != nil {
			t.Fatalf("receipt %d through instance %d: %v", i, i%2, err)
		}
	}
	if n := ins[0].forwarded(t) + ins[1].forwarded(t); n == 0 {
		t.Fatal("no command forwarded among 20 sent to 2 instances in turn")
	}
}

// saslCluster is a kfake cluster that speaks TLS and asks for SCRAM-SHA-256
// credentials (user tally), and the client security for password.
func saslCluster(t *testing.T) (c *kfake.Cluster, with func(password string) *kafka.Security) {
	t.Helper()
	ca := testenv.NewCA(t)
	cert := ca.Issue(t, "kafka", "127.0.0.1")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.GroupMinSessionTimeout(time.Second),
		kfake.Superuser(kafka.ScramSHA256, "tally", "right-password"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert.TLS}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, func(password string) *kafka.Security {
		m, err := kafka.NewSASL(kafka.ScramSHA256, "tally", password)
		if err != nil {
			t.Fatal(err)
		}
		return &kafka.Security{TLS: &tls.Config{RootCAs: ca.Pool}, SASL: m}
	}
}

func TestCommandRoleAuthenticatesToKafkaWithSCRAMOverTLS(t *testing.T) {
	c, with := saslCluster(t)
	in := startSecureInstance(t, c.ListenAddrs(), security{kafka: with("right-password")})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := in.client().ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{
		CommandId: uniq("sasl"), SkuId: uniq("sasl"), StoreId: "S1", Quantity: 5,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetResult().GetSkuVersion() != 1 {
		t.Fatalf("receipt: %v", resp.Msg)
	}
}

// A wrong password fails the start at once, saying so: it is not retried
// until a deadline.
func TestWrongKafkaPasswordFailsStartWithAuthenticationFailed(t *testing.T) {
	c, with := saslCluster(t)
	// kfake drops the connection of a client whose SCRAM proof is wrong;
	// Kafka answers SASL_AUTHENTICATION_FAILED first, which franz-go does
	// not retry (a dropped connection it retries, for half a minute, and
	// reports as EOF). Answer as Kafka does.
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.SASLAuthenticateRequest)
		if !strings.HasPrefix(string(req.SASLAuthBytes), "c=") { // not the client's final message, with the proof
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	svc, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: c.ListenAddrs(), Kafka: with("wrong-password"), Logger: quietLogger()},
	})
	if err == nil {
		_ = svc.Close(context.Background())
		t.Fatal("started with a wrong password")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authentication failed") {
		t.Fatalf("error %q does not say authentication failed", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the start took %v to fail", d)
	}
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
