// Package stocknotify is the contract between the projector, which raises
// low-stock announcements with pg_notify inside its transactions, and the
// query instances that LISTEN for them: the channel, the payload and the
// watch range. It is wire format only and knows neither side.
package stocknotify

import "encoding/json"

const (
	// Channel is the NOTIFY channel of low-stock changes.
	Channel = "tally_stock"
	// ProjectedChannel is notified (empty payload) by every projector
	// transaction, so readers waiting for a version re-check at once
	// instead of polling.
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
func Encode(changes []Change) []string {
	var out []string
	var cur []byte
	for _, c := range changes {
		b, _ := json.Marshal(c)
		if len(cur)+len(b)+2 > maxPayload && len(cur) > 0 {
			out = append(out, string(append(cur, ']')))
			cur = nil
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
