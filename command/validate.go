package command

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/internal/apierr"
)

// Input limits. They bound what one event can carry, so a misbehaving client
// cannot bloat the log that every projection must read forever.
const (
	MaxIDBytes          = apierr.MaxIDBytes
	MaxQuantity         = 1_000_000
	MaxTextBytes        = 512
	MaxMetadataEntries  = 32
	MaxMetadataBytes    = 4096
	MaxFutureSkew       = 5 * time.Minute
	MaxBatchCommands    = 1000
	minOccurredAtYear   = 2000
	maxExpectedVersion  = 1 << 53
	maxMetadataKeyBytes = 64
)

// checker collects every violation of one command, with field paths under a
// prefix (e.g. "commands[3].sale.").
type checker struct {
	prefix string
	now    time.Time
	vs     []Violation
}

func (c *checker) add(field, format string, args ...any) {
	c.vs = append(c.vs, Violation{Field: c.prefix + field, Description: fmt.Sprintf(format, args...)})
}

func (c *checker) id(field, v string, required bool) {
	if p := apierr.IDProblem(v, required); p != "" {
		c.add(field, "%s", p)
	}
}

func (c *checker) text(field, v string) {
	switch {
	case len(v) > MaxTextBytes:
		c.add(field, "at most %d bytes, got %d", MaxTextBytes, len(v))
	case !utf8.ValidString(v):
		c.add(field, "must be valid UTF-8")
	case strings.IndexByte(v, 0) >= 0:
		c.add(field, "must not contain U+0000 (NUL)")
	}
}

func (c *checker) quantity(field string, q int64) {
	if q <= 0 {
		c.add(field, "must be > 0, got %d", q)
	} else if q > MaxQuantity {
		c.add(field, "at most %d, got %d", MaxQuantity, q)
	}
}

func (c *checker) metadata(field string, m map[string]string) {
	if len(m) > MaxMetadataEntries {
		c.add(field, "at most %d entries, got %d", MaxMetadataEntries, len(m))
		return
	}
	total := 0
	// Sorted, so the violation reported for a bad map is always the same.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		total += len(k) + len(v)
		switch {
		case k == "" || len(k) > maxMetadataKeyBytes:
			c.add(field, "keys must be 1 to %d bytes", maxMetadataKeyBytes)
			return
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			c.add(field, "keys and values must be valid UTF-8")
			return
		case strings.IndexByte(k, 0) >= 0:
			c.add(field, "keys must not contain U+0000 (NUL): key %q", k)
			return
		case strings.IndexByte(v, 0) >= 0:
			c.add(field, "values must not contain U+0000 (NUL): value of key %q", k)
			return
		}
	}
	if total > MaxMetadataBytes {
		c.add(field, "at most %d bytes of keys and values, got %d", MaxMetadataBytes, total)
	}
}

func (c *checker) occurredAt(field string, ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	if err := ts.CheckValid(); err != nil {
		c.add(field, "not a valid timestamp")
		return time.Time{}
	}
	t := ts.AsTime()
	if t.Year() < minOccurredAtYear {
		c.add(field, "before the year %d", minOccurredAtYear)
	}
	if t.After(c.now.Add(MaxFutureSkew)) {
		c.add(field, "more than %s in the future", MaxFutureSkew)
	}
	return t.UTC()
}

func (c *checker) version(field string, v *int64) (bool, int64) {
	if v == nil {
		return false, 0
	}
	if *v < 0 || *v > maxExpectedVersion {
		c.add(field, "must be between 0 and %d, got %d", int64(maxExpectedVersion), *v)
	}
	return true, *v
}

func (c *checker) err() error {
	if len(c.vs) == 0 {
		return nil
	}
	return &ValidationError{What: "command", Violations: c.vs}
}

// Reservation limits.
const (
	DefaultReservationTTL = 15 * time.Minute
	MinReservationTTL     = time.Second
	MaxReservationTTL     = 24 * time.Hour
	MaxReorderLevel       = 10_000_000
)

// storeQuantityRequest is a request that moves a quantity at one store.
type storeQuantityRequest interface {
	GetStoreId() string
	GetQuantity() int64
}

// storeQuantity checks and copies a request's store_id and quantity.
func (c *checker) storeQuantity(r storeQuantityRequest, cmd *Command) {
	cmd.Store, cmd.Quantity = r.GetStoreId(), r.GetQuantity()
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
}

// The fields every command request has, or may have. A request without one
// is validated as if it had it at its zero value.
type (
	withReason        interface{ GetReason() string }
	withMetadata      interface{ GetMetadata() map[string]string }
	withAllowNegative interface{ GetAllowNegative() bool }
	withOccurredAt    interface {
		GetOccurredAt() *timestamppb.Timestamp
	}
	commonRequest interface {
		proto.Message
		GetCommandId() string
		GetSkuId() string
		GetUserId() string
	}
)

// common checks the fields every request has, by name, and copies them into
// cmd.
func (c *checker) common(r proto.Message, cmd *Command) {
	in := r.(commonRequest)
	if g, ok := r.(withReason); ok {
		cmd.Reason = g.GetReason()
	}
	if g, ok := r.(withMetadata); ok {
		cmd.Metadata = g.GetMetadata()
	}
	if g, ok := r.(withAllowNegative); ok {
		cmd.AllowNegative = g.GetAllowNegative()
	}
	var occurredAt *timestamppb.Timestamp
	if g, ok := r.(withOccurredAt); ok {
		occurredAt = g.GetOccurredAt()
	}
	cmd.ID, cmd.SKU, cmd.UserID = in.GetCommandId(), in.GetSkuId(), in.GetUserId()

	c.id("command_id", cmd.ID, true)
	if p, ok := reservedIDPrefix(cmd.ID); ok {
		c.add("command_id", "must not start with %q: reserved for commands Tally generates itself", p)
	}
	c.id("sku_id", cmd.SKU, true)
	c.id("user_id", cmd.UserID, false)
	c.text("reason", cmd.Reason)
	c.metadata("metadata", cmd.Metadata)
	cmd.CheckVersion, cmd.ExpectedVersion = c.version("expected_version", expectedVersion(r.ProtoReflect()))
	cmd.OccurredAt = c.occurredAt("occurred_at", occurredAt)
}

// expectedVersion returns the optional expected_version if m has it and it
// is set: its presence, not its value, makes a command conditional.
func expectedVersion(m protoreflect.Message) *int64 {
	fd := m.Descriptor().Fields().ByName("expected_version")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	v := m.Get(fd).Int()
	return &v
}

// legacyExpiryPrefix started the writer's expiry ids before SystemIDPrefix.
// Events with such ids stay in the log; clients may not use it either.
const legacyExpiryPrefix = "expire:"

// reservedIDPrefix returns the reserved prefix that id starts with, if any.
func reservedIDPrefix(id string) (string, bool) {
	for _, p := range []string{SystemIDPrefix, legacyExpiryPrefix} {
		if strings.HasPrefix(id, p) {
			return p, true
		}
	}
	return "", false
}
