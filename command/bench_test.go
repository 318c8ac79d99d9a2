package command_test

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
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
