package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Fingerprint identifies what a command asks for, so that the writer can
// tell a retry (same command_id, same request: answered with the original
// result) from a command_id reused for a different request (refused with
// package command's *CommandIDReusedError). It travels in every event of
// the command (InventoryEvent.command_fingerprint), so the dedupe window
// rebuilt from the log after a restart checks it too. The zero fingerprint is an event
// written before fingerprints existed, and matches any request.
type Fingerprint [16]byte

// fingerprintVersion starts the encoding. Never change the encoding of a
// version: fingerprints live in the log as long as the events.
const fingerprintVersion = 1

// metadataKeys is the capacity of the sorted metadata keys: a constant (a
// validated command has at most command.MaxMetadataEntries), so that they
// stay off the heap.
const metadataKeys = 32

// FingerprintOf returns the first 16 bytes of SHA-256 over a canonical
// encoding of the validated command: every field a client sets, except the
// command_id itself (the dedupe key), in this order:
//
//	kind, sku_id, store_id (from_store_id of a transfer), to_store_id,
//	quantity (quantity_delta of an adjustment), expected_version (whether
//	set, and its value), allow_negative, adjustment_reason, reservation_id,
//	ttl (as applied, so an omitted ttl equals the default), reorder_point,
//	target_level, occurred_at (whether set, and its instant), user_id,
//	reason, metadata (entries in key order), then the kind's own Args,
//	when it has them.
//
// Text and metadata are included although they do not change the decision:
// they are copied into the events, and a "retry" that says something else
// would be answered with events that do not say it. Integers are varints,
// strings are length-prefixed, so the encoding is unambiguous. A field added
// to Command later must be appended only when it is set, so that
// fingerprints of commands that do not use it stay the same.
func FingerprintOf(c *Command) Fingerprint {
	var buf [256]byte
	b := append(buf[:0], fingerprintVersion)
	b = binary.AppendVarint(b, int64(c.Kind))
	b = appendString(b, c.SKU)
	b = appendString(b, c.Store)
	b = appendString(b, c.ToStore)
	b = binary.AppendVarint(b, c.Quantity)
	b = appendBool(b, c.CheckVersion)
	if c.CheckVersion {
		b = binary.AppendVarint(b, c.ExpectedVersion)
	}
	b = appendBool(b, c.AllowNegative)
	b = binary.AppendVarint(b, int64(c.AdjustmentReason))
	b = appendString(b, c.ReservationID)
	b = binary.AppendVarint(b, int64(c.TTL))
	b = binary.AppendVarint(b, c.ReorderPoint)
	b = binary.AppendVarint(b, c.TargetLevel)
	b = appendBool(b, !c.OccurredAt.IsZero())
	if !c.OccurredAt.IsZero() {
		b = binary.AppendVarint(b, c.OccurredAt.Unix())
		b = binary.AppendVarint(b, int64(c.OccurredAt.Nanosecond()))
	}
	b = appendString(b, c.UserID)
	b = appendString(b, c.Reason)
	b = binary.AppendUvarint(b, uint64(len(c.Metadata)))
	keys := make([]string, 0, metadataKeys)
	for k := range c.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, c.Metadata[k])
	}
	if c.Args != nil {
		b = c.Args.AppendFingerprint(b)
	}
	sum := sha256.Sum256(b)
	return Fingerprint(sum[:16])
}

// appendString appends s length-prefixed.
func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// FingerprintOfEvent is the fingerprint an event carries; zero when it has
// none.
func FingerprintOfEvent(b []byte) Fingerprint {
	var fp Fingerprint
	if len(b) == len(fp) {
		copy(fp[:], b)
	}
	return fp
}
