package apierr

import "testing"

func BenchmarkIDProblemASCII(b *testing.B) {
	for b.Loop() {
		if p := IDProblem("SKU-000123-blue-XL", true); p != "" {
			b.Fatal(p)
		}
	}
}

// The ASCII fast path decides every ASCII rune as the Unicode tables do.
func TestIDRuneProblemASCIIMatchesTheUnicodeTables(t *testing.T) {
	for r := rune(0); r < 0x80; r++ {
		for _, first := range []bool{true, false} {
			if got, want := idRuneProblem(r, first), idRuneProblemUnicode(r, first); got != want {
				t.Errorf("%U (first %v): %q, the Unicode tables say %q", r, first, got, want)
			}
		}
	}
}
