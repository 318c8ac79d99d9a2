package bench

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestParseMix(t *testing.T) {
	m, err := ParseMix("sale=70,return=10,receipt=15,transfer=5")
	if err != nil || m != (Mix{70, 10, 15, 5}) {
		t.Fatalf("ParseMix = %+v, %v", m, err)
	}
	for _, bad := range []string{"sale=70", "sale=50,refund=50", "sale=x,return=100"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestWorkloadIsRepeatableAndFollowsTheMix(t *testing.T) {
	mix := Mix{70, 10, 15, 5}
	a, b := newWorkload(42, 1000, 10, 1.1, mix, "r"), newWorkload(42, 1000, 10, 1.1, mix, "r")
	kinds := map[string]int{}
	hot := 0
	const n = 20000
	for range n {
		x, y := a.next(), b.next()
		if !proto.Equal(x, y) {
			t.Fatalf("same seed, different commands: %v vs %v", x, y)
		}
		kinds[kindName(x)]++
		if sku, _ := keyOf(x); sku == SKUName(0) {
			hot++
		}
		if tr := x.GetTransfer(); tr != nil && tr.GetFromStoreId() == tr.GetToStoreId() {
			t.Fatalf("transfer to the same store: %v", tr)
		}
	}
	for kind, pct := range map[string]int{"sale": 70, "return": 10, "receipt": 15, "transfer": 5} {
		if got := kinds[kind] * 100 / n; got < pct-2 || got > pct+2 {
			t.Errorf("%s: %d%%, want about %d%%", kind, got, pct)
		}
	}
	// Zipf 1.1: the hottest SKU alone takes several percent.
	if hot < n/50 {
		t.Errorf("hottest SKU got %d of %d commands: not Zipf-shaped", hot, n)
	}
}

func TestQuantilesFromPrometheusBuckets(t *testing.T) {
	before := &histogram{bounds: []float64{0.001, 0.01, 0.1, 1}, counts: []uint64{5, 5, 5, 5}}
	after := &histogram{bounds: []float64{0.001, 0.01, 0.1, 1}, counts: []uint64{55, 95, 104, 105}}
	p := quantilesSince(before, after)
	if p == nil || p.Count != 100 || p.P50 != 1 || p.P95 != 100 || p.P99 != 100 || p.Max != 1000 {
		t.Fatalf("quantiles %+v", p)
	}
}

func TestUnaryAndBatchRejectionsAreNamedAlike(t *testing.T) {
	for _, c := range []struct {
		code   codes.Code
		batch  string
		reason string
	}{
		{codes.FailedPrecondition, "failed_precondition", "insufficient_stock"},
		{codes.Aborted, "aborted", "version_conflict"},
		{codes.Unavailable, "unavailable", "unavailable"},
	} {
		var bc connect.Code
		if err := bc.UnmarshalText([]byte(c.batch)); err != nil {
			t.Fatal(err)
		}
		unary, batch := reasonOf(status.Error(c.code, "x")), reasonOfCode(codes.Code(bc))
		if unary != c.reason || batch != c.reason {
			t.Errorf("%v: unary %q, batch %q, want %q", c.code, unary, batch, c.reason)
		}
	}
}
