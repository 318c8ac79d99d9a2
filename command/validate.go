package command

import (
	"fmt"
	"github.com/tally-oss/tally/internal/apierr"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// common are the fields every command request has.
type common struct {
	commandID, skuID, userID, reason string
	expected                         *int64
	occurredAt                       *timestamppb.Timestamp
	metadata                         map[string]string
	allowNegative                    bool
}

func (c *checker) common(in common, cmd *Command) {
	c.id("command_id", in.commandID, true)
	if p, ok := reservedIDPrefix(in.commandID); ok {
		c.add("command_id", "must not start with %q: reserved for commands Tally generates itself", p)
	}
	c.id("sku_id", in.skuID, true)
	c.id("user_id", in.userID, false)
	c.text("reason", in.reason)
	c.metadata("metadata", in.metadata)
	cmd.ID, cmd.SKU, cmd.UserID, cmd.Reason = in.commandID, in.skuID, in.userID, in.reason
	cmd.Metadata = in.metadata
	cmd.AllowNegative = in.allowNegative
	cmd.CheckVersion, cmd.ExpectedVersion = c.version("expected_version", in.expected)
	cmd.OccurredAt = c.occurredAt("occurred_at", in.occurredAt)
}

// FromSale validates a sale request. now bounds occurred_at.
func FromSale(r *inventoryv1.RecordSaleRequest, now time.Time) (*Command, error) {
	return fromSale(r, &checker{now: now})
}

func fromSale(r *inventoryv1.RecordSaleRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindSale, Store: r.GetStoreId(), Quantity: r.GetQuantity()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), r.GetReason(), r.ExpectedVersion, r.GetOccurredAt(), r.GetMetadata(), r.GetAllowNegative()}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
	return cmd, c.err()
}

// FromReturn validates a return request.
func FromReturn(r *inventoryv1.RecordReturnRequest, now time.Time) (*Command, error) {
	return fromReturn(r, &checker{now: now})
}

func fromReturn(r *inventoryv1.RecordReturnRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindReturn, Store: r.GetStoreId(), Quantity: r.GetQuantity()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), r.GetReason(), r.ExpectedVersion, r.GetOccurredAt(), r.GetMetadata(), false}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
	return cmd, c.err()
}

// FromReceipt validates a receipt request.
func FromReceipt(r *inventoryv1.ReceiveStockRequest, now time.Time) (*Command, error) {
	return fromReceipt(r, &checker{now: now})
}

func fromReceipt(r *inventoryv1.ReceiveStockRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindReceipt, Store: r.GetStoreId(), Quantity: r.GetQuantity()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), r.GetReason(), r.ExpectedVersion, r.GetOccurredAt(), r.GetMetadata(), false}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
	return cmd, c.err()
}

// FromAdjustment validates an adjustment request.
func FromAdjustment(r *inventoryv1.AdjustStockRequest, now time.Time) (*Command, error) {
	return fromAdjustment(r, &checker{now: now})
}

func fromAdjustment(r *inventoryv1.AdjustStockRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindAdjustment, Store: r.GetStoreId(), Quantity: r.GetQuantityDelta(), AdjustmentReason: r.GetAdjustmentReason()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), r.GetReason(), r.ExpectedVersion, r.GetOccurredAt(), r.GetMetadata(), r.GetAllowNegative()}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	switch d := r.GetQuantityDelta(); {
	case d == 0:
		c.add("quantity_delta", "must not be 0")
	case d > MaxQuantity || d < -MaxQuantity:
		c.add("quantity_delta", "at most %d units either way, got %d", MaxQuantity, d)
	}
	if _, ok := inventoryv1.AdjustmentReason_name[int32(r.GetAdjustmentReason())]; !ok || r.GetAdjustmentReason() == inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_UNSPECIFIED {
		c.add("adjustment_reason", "required: one of COUNT_CORRECTION, DAMAGED, SHRINKAGE, EXPIRED, FOUND, OTHER")
	}
	return cmd, c.err()
}

// FromTransfer validates a transfer request.
func FromTransfer(r *inventoryv1.TransferStockRequest, now time.Time) (*Command, error) {
	return fromTransfer(r, &checker{now: now})
}

func fromTransfer(r *inventoryv1.TransferStockRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindTransfer, Store: r.GetFromStoreId(), ToStore: r.GetToStoreId(), Quantity: r.GetQuantity()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), r.GetReason(), r.ExpectedVersion, r.GetOccurredAt(), r.GetMetadata(), r.GetAllowNegative()}, cmd)
	c.id("from_store_id", r.GetFromStoreId(), true)
	c.id("to_store_id", r.GetToStoreId(), true)
	if r.GetFromStoreId() != "" && r.GetFromStoreId() == r.GetToStoreId() {
		c.add("to_store_id", "must differ from from_store_id")
	}
	c.quantity("quantity", r.GetQuantity())
	return cmd, c.err()
}

// Reservation limits.
const (
	DefaultReservationTTL = 15 * time.Minute
	MinReservationTTL     = time.Second
	MaxReservationTTL     = 24 * time.Hour
	MaxReorderLevel       = 10_000_000
)

// FromReserve validates a reservation request.
func FromReserve(r *inventoryv1.ReserveRequest, now time.Time) (*Command, error) {
	return fromReserve(r, &checker{now: now})
}

func fromReserve(r *inventoryv1.ReserveRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindReserve, Store: r.GetStoreId(), Quantity: r.GetQuantity(), ReservationID: r.GetReservationId(), TTL: DefaultReservationTTL}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), "", r.ExpectedVersion, nil, r.GetMetadata(), false}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	c.id("reservation_id", r.GetReservationId(), true)
	c.quantity("quantity", r.GetQuantity())
	if r.GetTtl() != nil {
		if err := r.GetTtl().CheckValid(); err != nil {
			c.add("ttl", "not a valid duration")
		} else if d := r.GetTtl().AsDuration(); d < MinReservationTTL || d > MaxReservationTTL {
			c.add("ttl", "%s to %s, got %s", MinReservationTTL, MaxReservationTTL, d)
		} else {
			cmd.TTL = d
		}
	}
	return cmd, c.err()
}

// FromCommitReservation validates a commit of a reservation.
func FromCommitReservation(r *inventoryv1.CommitReservationRequest, now time.Time) (*Command, error) {
	return fromCommitReservation(r, &checker{now: now})
}

func fromCommitReservation(r *inventoryv1.CommitReservationRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindCommitReservation, ReservationID: r.GetReservationId()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), "", nil, r.GetOccurredAt(), r.GetMetadata(), false}, cmd)
	c.id("reservation_id", r.GetReservationId(), true)
	return cmd, c.err()
}

// FromReleaseReservation validates a release of a reservation.
func FromReleaseReservation(r *inventoryv1.ReleaseReservationRequest, now time.Time) (*Command, error) {
	return fromReleaseReservation(r, &checker{now: now})
}

func fromReleaseReservation(r *inventoryv1.ReleaseReservationRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindReleaseReservation, ReservationID: r.GetReservationId()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), "", nil, nil, nil, false}, cmd)
	c.id("reservation_id", r.GetReservationId(), true)
	return cmd, c.err()
}

// FromSetReorderPolicy validates a reorder policy.
func FromSetReorderPolicy(r *inventoryv1.SetReorderPolicyRequest, now time.Time) (*Command, error) {
	return fromSetReorderPolicy(r, &checker{now: now})
}

func fromSetReorderPolicy(r *inventoryv1.SetReorderPolicyRequest, c *checker) (*Command, error) {
	cmd := &Command{Kind: KindSetReorderPolicy, Store: r.GetStoreId(), ReorderPoint: r.GetReorderPoint(), TargetLevel: r.GetTargetLevel()}
	c.common(common{r.GetCommandId(), r.GetSkuId(), r.GetUserId(), "", r.ExpectedVersion, nil, nil, false}, cmd)
	c.id("store_id", r.GetStoreId(), true)
	if p := r.GetReorderPoint(); p < 0 || p > MaxReorderLevel {
		c.add("reorder_point", "0 to %d, got %d", MaxReorderLevel, p)
	}
	if t := r.GetTargetLevel(); t <= r.GetReorderPoint() || t > MaxReorderLevel {
		c.add("target_level", "must be above reorder_point (%d) and at most %d, got %d", r.GetReorderPoint(), MaxReorderLevel, t)
	}
	return cmd, c.err()
}

// FromBatchCommand validates command i of an Apply batch; field paths are
// prefixed with "commands[i].<kind>.".
func FromBatchCommand(i int, bc *inventoryv1.Command, now time.Time) (*Command, error) {
	c := &checker{now: now}
	switch k := bc.GetKind().(type) {
	case *inventoryv1.Command_Sale:
		c.prefix = fmt.Sprintf("commands[%d].sale.", i)
		return fromSale(k.Sale, c)
	case *inventoryv1.Command_Return:
		c.prefix = fmt.Sprintf("commands[%d].return.", i)
		return fromReturn(k.Return, c)
	case *inventoryv1.Command_Receipt:
		c.prefix = fmt.Sprintf("commands[%d].receipt.", i)
		return fromReceipt(k.Receipt, c)
	case *inventoryv1.Command_Adjustment:
		c.prefix = fmt.Sprintf("commands[%d].adjustment.", i)
		return fromAdjustment(k.Adjustment, c)
	case *inventoryv1.Command_Transfer:
		c.prefix = fmt.Sprintf("commands[%d].transfer.", i)
		return fromTransfer(k.Transfer, c)
	case *inventoryv1.Command_Reserve:
		c.prefix = fmt.Sprintf("commands[%d].reserve.", i)
		return fromReserve(k.Reserve, c)
	case *inventoryv1.Command_CommitReservation:
		c.prefix = fmt.Sprintf("commands[%d].commit_reservation.", i)
		return fromCommitReservation(k.CommitReservation, c)
	case *inventoryv1.Command_ReleaseReservation:
		c.prefix = fmt.Sprintf("commands[%d].release_reservation.", i)
		return fromReleaseReservation(k.ReleaseReservation, c)
	case *inventoryv1.Command_ReorderPolicy:
		c.prefix = fmt.Sprintf("commands[%d].reorder_policy.", i)
		return fromSetReorderPolicy(k.ReorderPolicy, c)
	}
	return nil, &ValidationError{What: "command", Violations: []Violation{{Field: fmt.Sprintf("commands[%d]", i),
		Description: "one of sale, return, receipt, adjustment, transfer, reserve, commit_reservation, release_reservation, reorder_policy is required"}}}
}
