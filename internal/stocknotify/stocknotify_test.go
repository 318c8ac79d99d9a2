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
