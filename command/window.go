package command

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/tally-oss/tally/command/domain"
)

// The dedupe window: every command a partition accepted in the last
// WriterConfig.DedupeWindow of recorded time, so that a retry (same SKU,
// same command_id) is answered with the original outcome, "replayed",
// instead of being applied again.
//
// Each command is remembered in a few dozen bytes, not as its result: a
// hash of (sku, command_id), 8 bytes of the request's fingerprint and where
// its events are in the log. A retry is answered from the log (the events
// say everything the original answer said), except for the latest commands,
// whose whole results are kept (recent) because retries come mostly within
// seconds. The guarantee beyond the window: a command recorded after the
// window's horizon is always found; a retry that carries occurred_at from
// before the horizon (less the allowed clock skew) cannot be told from a new
// command and is refused (CommandTooOldError) rather than applied twice. A
// command without occurred_at is protected within the window only.

// windowKey identifies (sku, command_id). SHA-256 rather than a fast hash:
// command ids are the clients', and a crafted collision must not make a new
// command answer "replayed".
type windowKey [16]byte

func keyOf(sku, commandID string) windowKey {
	h := sha256.New()
	h.Write([]byte(sku))
	h.Write([]byte{0})
	h.Write([]byte(commandID))
	var k windowKey
	copy(k[:], h.Sum(nil))
	return k
}

// remembered is one accepted command: 16 bytes.
type remembered struct {
	loc uint64 // offset of its first event << 8 | number of events
	fp  uint32 // the first 4 bytes of its fingerprint; 0 when its events predate fingerprints
	// at is when it was recorded (seconds since windowEpoch): the slot in
	// the window's order that remembers this use of its key. An id used
	// again after the window forgot it has a slot of its own, and the
	// first use's slot must not take the second with it.
	at uint32
}

// windowEpoch is the zero of remembered.at.
var windowEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

func secondsOf(t time.Time) uint32 { return uint32(max(0, t.Unix()-windowEpoch)) }

func timeOf(s uint32) time.Time { return time.Unix(windowEpoch+int64(s), 0) }

func rememberedOf(fp domain.Fingerprint, offset int64, events int) remembered {
	return remembered{fp: binary.BigEndian.Uint32(fp[:4]), loc: uint64(offset)<<8 | uint64(events)}
}

func (r remembered) offset() int64 { return int64(r.loc >> 8) }
func (r remembered) events() int   { return int(r.loc & 0xff) }

// matches reports whether c is the request r remembers (or r predates
// fingerprints, so any request with its id is taken for a retry).
func (r remembered) matches(c *Command) bool {
	if r.fp == 0 {
		return true
	}
	fp := domain.FingerprintOf(c)
	return binary.BigEndian.Uint32(fp[:4]) == r.fp
}

type windowSlot struct {
	key windowKey
	at  uint32 // recorded (remembered.at)
}

// windowChunk is the commands in one chunk of a window's order.
const windowChunk = 4096

// recentResults is how many whole results a window keeps.
const recentResults = 4096

type window struct {
	span time.Duration
	m    map[windowKey]remembered
	// order is the commands oldest first, in chunks (no slack of a
	// doubling slice): order[0][head] is the oldest.
	order [][]windowSlot
	head  int
	// appended counts the commands ever put; base is the count before
	// order[0][0].
	appended, base uint64
	// horizon is the newest recorded time evicted: every command recorded
	// after it is in m.
	horizon time.Time
	recent  map[windowKey]*Result
	ring    []windowKey // recent's keys, oldest overwritten first
	next    int
}

func newWindow(span time.Duration) *window {
	return &window{span: span, m: map[windowKey]remembered{}, recent: map[windowKey]*Result{}, ring: make([]windowKey, recentResults)}
}

// get returns what the window remembers of key, and the whole result when
// it is one of the latest.
func (w *window) get(key windowKey) (remembered, *Result, bool) {
	r, ok := w.m[key]
	return r, w.recent[key], ok
}

// put remembers a command recorded at at; res, when not nil, is kept whole
// among the latest. A key put again at the same second is the same use (a
// transfer's second event); at a later one, a new use with a slot of its own.
func (w *window) put(key windowKey, r remembered, at time.Time, res *Result) {
	r.at = secondsOf(at)
	if old, ok := w.m[key]; !ok || old.at != r.at {
		if n := len(w.order); n == 0 || len(w.order[n-1]) == windowChunk {
			w.order = append(w.order, make([]windowSlot, 0, windowChunk))
		}
		last := &w.order[len(w.order)-1]
		*last = append(*last, windowSlot{key: key, at: r.at})
		w.appended++
	}
	w.m[key] = r
	if res != nil {
		if _, ok := w.recent[key]; !ok {
			if old := w.ring[w.next]; old != (windowKey{}) {
				delete(w.recent, old)
			}
			w.ring[w.next] = key
			w.next = (w.next + 1) % len(w.ring)
		}
		w.recent[key] = res
	}
}

// evict forgets the commands recorded before now less the span.
func (w *window) evict(now time.Time) {
	cutoff := secondsOf(now.Add(-w.span))
	for len(w.order) > 0 {
		c := w.order[0]
		if w.head == len(c) {
			if len(c) < windowChunk {
				return // the chunk being filled
			}
			w.order[0] = nil
			w.order, w.head = w.order[1:], 0
			w.base += windowChunk
			continue
		}
		s := c[w.head]
		if s.at >= cutoff {
			return
		}
		if r, ok := w.m[s.key]; ok && r.at == s.at {
			delete(w.m, s.key) // this use; a later use of the key has its own slot
		}
		// Seconds are truncated: the horizon is the end of the second,
		// so it never claims to remember what it may have forgotten.
		if at := timeOf(s.at + 1); at.After(w.horizon) {
			w.horizon = at
		}
		w.head++
	}
}

// packedSince returns the commands still remembered among those put after
// the first n, oldest first.
func (w *window) packedSince(n uint64) []packed {
	var out []packed
	i := max(n, w.base+uint64(w.head)) - w.base // index from order[0][0]
	for c := int(i / windowChunk); c < len(w.order); c++ {
		for _, s := range w.order[c][i%windowChunk:] {
			if r, ok := w.m[s.key]; ok && r.at == s.at {
				out = append(out, packed{key: s.key, r: r, at: timeOf(s.at).UnixNano()})
			}
		}
		i = 0
	}
	return out
}

// len is the number of commands remembered.
func (w *window) len() int { return len(w.m) }

// tooOld reports whether c, not in the window, may still be a retry of a
// command recorded before the horizon: its occurred_at, allowing for the
// clock skew validation accepts, is not after the horizon.
func (w *window) tooOld(c *Command) bool {
	return !w.horizon.IsZero() && !c.OccurredAt.IsZero() && !c.OccurredAt.Add(-MaxFutureSkew).After(w.horizon)
}
