package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBar(t *testing.T) {
	for _, c := range []struct {
		done float64
		want string
	}{{0, "[....]"}, {0.5, "[##..]"}, {1, "[####]"}, {2, "[####]"}, {-1, "[....]"}} {
		if got := Bar(c.done, 4); got != c.want {
			t.Errorf("Bar(%v) = %q, want %q", c.done, got, c.want)
		}
	}
}

// Not on a terminal, progress is plain lines, no more often than asked.
func TestPlainLinesOffATerminal(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, time.Hour)
	l.Show(0.1, "first")
	l.Show(0.2, "second") // within the hour: not shown
	l.Done()
	if got := b.String(); got != "first\n" || strings.Contains(got, "\r") {
		t.Fatalf("%q, want one plain line", got)
	}
}
