package command

import (
	"strings"
	"testing"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// TestForwardedBatchesStayUnderTheOwnersRequestLimit: calls each under the
// limit are not coalesced into an Apply the owner would refuse whole.
func TestForwardedBatchesStayUnderTheOwnersRequestLimit(t *testing.T) {
	cmd := func(reason int) *piped {
		c := &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{
			CommandId: "c", SkuId: "A", StoreId: "S1", Quantity: 1, Metadata: map[string]string{"k": strings.Repeat("v", reason)}}}}
		return &piped{cmd: c, size: appliedSize(c)}
	}
	for _, tc := range []struct {
		name   string
		budget int
		queue  []*piped
		want   int
	}{
		{"small calls fill a batch", 4 << 20, repeat(cmd(10), 1500), pipeBatch},
		{"large calls go fewer at a time", 8192, repeat(cmd(4000), 10), 2},
		{"a call alone over the budget still goes", 8192, []*piped{cmd(9000), cmd(10)}, 1},
		{"an empty queue", 8192, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pipe{f: &forwarder{batchBytes: tc.budget}, queue: tc.queue}
			if got := p.batchLen(); got != tc.want {
				t.Fatalf("batchLen = %d, want %d", got, tc.want)
			}
			size := 0
			for _, c := range tc.queue[:tc.want] {
				size += c.size
			}
			if tc.want > 1 && size > tc.budget {
				t.Fatalf("a batch of %d bytes", size)
			}
		})
	}
}

func repeat(c *piped, n int) []*piped {
	out := make([]*piped, n)
	for i := range out {
		out[i] = c
	}
	return out
}
