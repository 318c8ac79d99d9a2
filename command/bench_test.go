package command_test

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
)

// BenchmarkApplyUnary sends one receipt per gRPC call from parallel
// clients, through the server, writers and kfake.
func BenchmarkApplyUnary(b *testing.B) {
	g := shared.grpcClient(b)
	prefix := uniq("bu")
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(uint64(n.Add(1)), 1))
		for pb.Next() {
			i := n.Add(1)
			_, err := g.ReceiveStock(b.Context(), &inventoryv1.ReceiveStockRequest{
				CommandId: fmt.Sprintf("%s-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, r.IntN(10000)), StoreId: "S1", Quantity: 1,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkApplyBatched sends Apply batches of 1,000 receipts from parallel
// clients; one op is one batch.
func BenchmarkApplyBatched(b *testing.B) {
	const batch = 1000
	g := shared.grpcClient(b)
	prefix := uniq("bb")
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(2)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(uint64(n.Add(1)), 2))
		cmds := make([]*inventoryv1.Command, batch)
		for pb.Next() {
			for j := range cmds {
				i := n.Add(1)
				cmds[j] = &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{
					CommandId: fmt.Sprintf("%s-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, r.IntN(100000)), StoreId: "S1", Quantity: 1,
				}}}
			}
			resp, err := g.Apply(b.Context(), &inventoryv1.ApplyRequest{Commands: cmds})
			if err != nil {
				b.Error(err)
				return
			}
			for _, o := range resp.GetOutcomes() {
				if o.GetError() != nil {
					b.Error(o.GetError())
					return
				}
			}
		}
	})
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkInstances sends receipts from parallel clients round-robin over
// 1 or 3 command instances (in this process, one broker): with 3, two
// calls in three are forwarded to the partition's owner ("batch": Apply
// batches of 100, split by owner). One op is one command.
func BenchmarkInstances(b *testing.B) {
	for _, batch := range []int{1, 100} {
		for _, n := range []int{1, 3} {
			name := fmt.Sprint(n)
			if batch > 1 {
				name = fmt.Sprintf("batch/%d", n)
			}
			b.Run(name, func(b *testing.B) { benchmarkInstances(b, n, batch, false) })
		}
	}
	// The clients send each command to its partition's owner: no
	// forwarding, the ceiling of three instances here.
	b.Run("direct/3", func(b *testing.B) { benchmarkInstances(b, 3, 1, true) })
}

func benchmarkInstances(b *testing.B, n, batch int, direct bool) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.Close) // after the instances' cleanups
	var clients []inventoryv1.CommandServiceClient
	byAddr := map[string]inventoryv1.CommandServiceClient{}
	for range n {
		in := startInstance(b, k.Addrs())
		st := &stack{addr: in.addr}
		clients = append(clients, st.grpcClient(b))
		byAddr[in.addr] = clients[len(clients)-1]
	}
	waitBalanced(b, k.Addrs(), n)
	owner := map[int32]inventoryv1.CommandServiceClient{}
	for p, addr := range writersOf(b, k.Addrs()) {
		owner[p] = byAddr[addr]
	}
	prefix := uniq("inst")
	// Every partition writable, wherever it is.
	for i := range 60 {
		if _, err := clients[i%n].ReceiveStock(b.Context(), &inventoryv1.ReceiveStockRequest{
			CommandId: fmt.Sprintf("%s-warm-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, i), StoreId: "S1", Quantity: 1,
		}); err != nil {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(uint64(seq.Add(1)), 3))
		var cmds []*inventoryv1.Command
		for pb.Next() {
			i := seq.Add(1)
			req := &inventoryv1.ReceiveStockRequest{
				CommandId: fmt.Sprintf("%s-%d", prefix, i), SkuId: fmt.Sprintf("%s-%d", prefix, r.IntN(10000)), StoreId: "S1", Quantity: 1,
			}
			c := clients[i%int64(n)]
			if direct {
				c = owner[kafka.PartitionFor(req.GetSkuId(), 6)]
			}
			var err error
			if batch == 1 {
				_, err = c.ReceiveStock(b.Context(), req)
			} else if cmds = append(cmds, &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: req}}); len(cmds) == batch {
				_, err = c.Apply(b.Context(), &inventoryv1.ApplyRequest{Commands: cmds})
				cmds = nil
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
}
