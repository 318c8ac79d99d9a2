package stocknotify

import (
	"fmt"
	"testing"
)

func TestEncodeSplitsUnderTheLimitAndRoundTrips(t *testing.T) {
	var in []Change
	for i := range 500 {
		in = append(in, Change{SKU: fmt.Sprintf("SKU-%06d", i), Store: "ST-001", AvailableBefore: 11, Available: 9, Version: int64(i + 1), ReorderPoint: 10, TargetLevel: 30})
	}
	payloads := Encode(in)
	if len(payloads) < 2 {
		t.Fatalf("500 changes fit in %d payload(s)", len(payloads))
	}
	var out []Change
	for _, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload of %d bytes: Postgres refuses 8000 or more", len(p))
		}
		cs, err := Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cs...)
	}
	if len(out) != len(in) || out[499] != in[499] {
		t.Fatalf("round trip lost changes: %d of %d", len(out), len(in))
	}
}

func TestProjectedPayloadsNameTheLevelsOrAll(t *testing.T) {
	in := []Projected{{SKU: "sku-1", Version: 3, Stores: []string{"S1", "S2"}}, {SKU: `odd "sku" \ é`, Version: 9, Stores: []string{"S1"}}}
	payloads := EncodeProjected(in)
	if len(payloads) != 1 {
		t.Fatalf("%d payloads, want 1", len(payloads))
	}
	got, all := DecodeProjected(payloads[0])
	if all || len(got) != 2 || got[0].SKU != "sku-1" || got[0].Version != 3 || len(got[0].Stores) != 2 || got[1].SKU != in[1].SKU {
		t.Fatalf("round trip: %+v all=%v, want %+v", got, all, in)
	}
	if p := EncodeProjected(nil); len(p) != 0 {
		t.Fatalf("no level changed: %q, want no payload", p)
	}

	var many []Projected
	for i := range 2000 {
		many = append(many, Projected{SKU: fmt.Sprintf("SKU-%06d", i), Version: 1, Stores: []string{"ST-001", "ST-002"}})
	}
	payloads = EncodeProjected(many)
	if len(payloads) < 2 || len(payloads) > MaxProjectedPayloads {
		t.Fatalf("%d payloads for 2000 SKUs", len(payloads))
	}
	n := 0
	for _, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload of %d bytes: Postgres refuses 8000 or more", len(p))
		}
		got, all := DecodeProjected(p)
		if all {
			t.Fatal("a payload naming levels read as all")
		}
		n += len(got)
	}
	if n != len(many) {
		t.Fatalf("%d SKUs named, want %d", n, len(many))
	}

	for i := range 100000 {
		many = append(many, Projected{SKU: fmt.Sprintf("SKU-%06d", i), Version: 1, Stores: []string{"ST-001"}})
	}
	if p := EncodeProjected(many); len(p) != 1 || p[0] != "" {
		t.Fatalf("%d payloads for 102,000 SKUs, want one empty payload", len(p))
	}
	// One SKU changed at so many stores that it alone exceeds a payload
	// (PostgreSQL would refuse the NOTIFY, and the projector retry forever).
	var stores []string
	for i := range 400 {
		stores = append(stores, fmt.Sprintf("store-%04d-with-a-long-id", i))
	}
	if p := EncodeProjected([]Projected{{SKU: "sku-1", Version: 9, Stores: stores}}); len(p) != 1 || p[0] != "" {
		t.Fatalf("one item of %d stores: %d payloads, want one empty payload", len(stores), len(p))
	}
	if _, all := DecodeProjected(""); !all {
		t.Fatal("an empty payload must mean every level")
	}
	if _, all := DecodeProjected("not json"); !all {
		t.Fatal("an unreadable payload must mean every level")
	}
}
