// Package progress shows long work (replay, bench) on a terminal as one
// redrawn line with a bar, and elsewhere (a log file, CI) as a plain line
// now and then, so logs are not filled with carriage returns.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Line is a progress line on w.
type Line struct {
	w     io.Writer
	tty   bool
	every time.Duration

	mu    sync.Mutex
	last  time.Time
	shown bool
}

// New returns a progress line on w: redrawn in place when w is a terminal,
// else printed at most once per every.
func New(w io.Writer, every time.Duration) *Line {
	return &Line{w: w, tty: IsTerminal(w), every: every}
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Show shows text, with a bar of done (0 to 1; negative: no bar).
func (l *Line) Show(done float64, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.tty {
		if now := time.Now(); now.Sub(l.last) >= l.every {
			l.last = now
			fmt.Fprintln(l.w, text)
		}
		return
	}
	l.shown = true
	if done < 0 {
		fmt.Fprintf(l.w, "\r\033[K%s", text)
		return
	}
	fmt.Fprintf(l.w, "\r\033[K%s %s", Bar(done, 24), text)
}

// Done ends the line (a newline on a terminal where something was shown).
func (l *Line) Done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tty && l.shown {
		fmt.Fprintln(l.w)
	}
}

// Bar is a bar of width cells, done (0 to 1) of them full.
func Bar(done float64, width int) string {
	n := int(min(max(done, 0), 1)*float64(width) + 0.5)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
