// Package stocknotify is the contract between the projector, which raises
// low-stock announcements with pg_notify inside its transactions, and the
// query instances that LISTEN for them: the channel, the payload and the
// watch range. It is wire format only and knows neither side.
package stocknotify

import "encoding/json"

const (
	// Channel is the NOTIFY channel of low-stock changes.
	Channel = "tally_stock"
	// ProjectedChannel is notified by every projector transaction, so
	// readers waiting for a version re-check at once instead of polling
	// and caches of levels drop what changed. Its payloads name the
	// levels the transaction changed (EncodeProjected); an empty payload
	// means any level may have changed.
	ProjectedChannel = "tally_projected"
	// DefaultReorderPoint and DefaultTargetLevel apply where no policy is set.
	DefaultReorderPoint = 10
	DefaultTargetLevel  = 30
	// WatchCeiling: a change is announced when available is at or below
	// max(reorder_point, WatchCeiling) before or after it, so any watch
	// threshold up to WatchCeiling sees every crossing.
	WatchCeiling = 100
	// maxPayload keeps each NOTIFY under Postgres's 8000-byte limit.
	maxPayload = 7000
	// MaxProjectedPayloads bounds the ProjectedChannel notifications of
	// one transaction; a transaction that changed more levels sends one
	// empty payload instead.
	MaxProjectedPayloads = 64
)

// Change is one announced level change.
type Change struct {
	SKU             string `json:"k"`
	Store           string `json:"s"`
	AvailableBefore int64  `json:"b"`
	Available       int64  `json:"a"`
	OnHand          int64  `json:"o"`
	Reserved        int64  `json:"r"`
	Version         int64  `json:"v"`
	ReorderPoint    int64  `json:"p"`
	ReorderBefore   int64  `json:"q"`
	TargetLevel     int64  `json:"t"`
}

// Encode packs changes into as few payloads (JSON arrays) as fit.
func Encode(changes []Change) []string { return pack(changes, 0) }

// pack packs items into as few JSON arrays of at most maxPayload bytes as
// fit; with limit > 0, into no more than limit of them, or none when they
// need more or one item alone does not fit.
func pack[T any](items []T, limit int) []string {
	var out []string
	var cur []byte
	for _, it := range items {
		b, _ := json.Marshal(it)
		if limit > 0 && len(b)+2 > maxPayload {
			return nil // one item alone is too large for a payload
		}
		if len(cur)+len(b)+2 > maxPayload && len(cur) > 0 {
			out = append(out, string(append(cur, ']')))
			cur = nil
			if limit > 0 && len(out) == limit {
				return nil
			}
		}
		if cur == nil {
			cur = []byte{'['}
		} else {
			cur = append(cur, ',')
		}
		cur = append(cur, b...)
	}
	if cur != nil {
		out = append(out, string(append(cur, ']')))
	}
	return out
}

// Decode reads one payload.
func Decode(payload string) ([]Change, error) {
	var out []Change
	err := json.Unmarshal([]byte(payload), &out)
	return out, err
}

// Projected is what a projector transaction changed of one SKU: the
// stores whose levels changed and the SKU's newest version among them.
type Projected struct {
	SKU     string   `json:"k"`
	Version int64    `json:"v"`
	Stores  []string `json:"s"`
}

// EncodeProjected is the ProjectedChannel payloads of a transaction that
// changed these levels: JSON arrays of Projected, or one empty payload
// (any level may have changed) when they need more than
// MaxProjectedPayloads. A transaction that changed no level has none.
func EncodeProjected(changed []Projected) []string {
	if len(changed) == 0 {
		return nil
	}
	if out := pack(changed, MaxProjectedPayloads); out != nil {
		return out
	}
	return []string{""}
}

// DecodeProjected reads a ProjectedChannel payload: the levels changed,
// or all when the payload does not name them (empty, or unreadable).
func DecodeProjected(payload string) (changed []Projected, all bool) {
	if payload == "" || json.Unmarshal([]byte(payload), &changed) != nil {
		return nil, true
	}
	return changed, false
}
