package command

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Kind is the kind of a command. Each kind is declared in its own file,
// kind_<name>.go, which defines its Kind constant, a kind implementation
// and registers it; everything else that varies by kind (String, validation
// of an Apply batch, Decide, the unary RPC) is looked up in the registry.
type Kind int

// String returns the kind's name: its field in an Apply batch's oneof.
func (k Kind) String() string {
	if e, ok := registry[k]; ok {
		return e.name
	}
	return "unknown"
}

// kind declares one command kind: the request it comes as (Req, alone or
// in an Apply batch), how the request becomes a *Command, how the command
// is decided against the aggregate, and the unary response (Resp). A kind
// that misses a piece does not compile: register takes a kind[Req, Resp],
// and the unary RPC is served only through what register returns. The
// kind's name and its place in an Apply batch come from the proto: the
// field of Command's oneof kind whose type is Req.
type kind[Req, Resp any] interface {
	// kind is the kind's constant; it is written into command fingerprints
	// and must never change.
	kind() Kind
	// check validates the fields only this kind has and copies them into
	// cmd; c.common has already checked the fields every request has.
	check(r *Req, c *checker, cmd *Command)
	// decide returns the events of d's command against d's SKU. It is pure.
	decide(d *decision) ([]*inventoryv1.InventoryEvent, error)
	// respond builds the unary response from the command's result.
	respond(res *Result) *Resp
}

// entry is a registered kind with its request and response types erased.
type entry struct {
	name   string
	batch  func(bc *inventoryv1.Command, c *checker) (*Command, error, bool)
	decide func(d *decision) ([]*inventoryv1.InventoryEvent, error)
}

var (
	registry = map[Kind]entry{}
	// kindOrder lists the registered kinds in ascending order.
	kindOrder []Kind
)

// registered is a kind in the registry; only it serves the unary RPC.
type registered[Req, Resp any] struct{ def kind[Req, Resp] }

// register adds def to the registry. A kind whose request is not in the
// oneof of an Apply batch's Command, or two kinds with the same constant,
// are programming errors and panic at start-up.
func register[Req, Resp any](def kind[Req, Resp]) registered[Req, Resp] {
	k := def.kind()
	fd := batchField(any((*Req)(nil)).(proto.Message).ProtoReflect().Descriptor().FullName())
	if _, dup := registry[k]; dup || fd == nil {
		panic(fmt.Sprintf("command: kind %d (%T) registered twice or not in the Command oneof", k, def))
	}
	r := registered[Req, Resp]{def}
	registry[k] = entry{
		name: string(fd.Name()),
		batch: func(bc *inventoryv1.Command, c *checker) (*Command, error, bool) {
			m := bc.ProtoReflect()
			if m.WhichOneof(fd.ContainingOneof()) != fd {
				return nil, nil, false
			}
			cmd, err := r.validate(any(m.Get(fd).Message().Interface()).(*Req), c)
			return cmd, err, true
		},
		decide: def.decide,
	}
	kindOrder = append(kindOrder, k)
	slices.Sort(kindOrder)
	return r
}

// batchField returns the field of Command's oneof kind whose type is the
// request message req, or nil.
func batchField(req protoreflect.FullName) protoreflect.FieldDescriptor {
	fields := (*inventoryv1.Command)(nil).ProtoReflect().Descriptor().Oneofs().ByName("kind").Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Message().FullName() == req {
			return fd
		}
	}
	return nil
}

// kinds returns every registered kind in ascending order.
func kinds() []Kind { return slices.Clone(kindOrder) }

// validate turns a request into a command, collecting every violation: first
// those of the fields every request has, then the kind's own.
func (r registered[Req, Resp]) validate(req *Req, c *checker) (*Command, error) {
	cmd := &Command{Kind: r.def.kind()}
	c.common(any(req).(proto.Message), cmd)
	r.def.check(req, c, cmd)
	return cmd, c.err()
}

// from validates a unary request; now bounds occurred_at.
func (r registered[Req, Resp]) from(req *Req, now time.Time) (*Command, error) {
	return r.validate(req, &checker{now: now})
}

// unary serves the kind's own RPC: validate, do, respond.
func (r registered[Req, Resp]) unary(ctx context.Context, h *Handler, req *connect.Request[Req]) (*connect.Response[Resp], error) {
	cmd, err := r.from(req.Msg, h.now())
	if err != nil {
		return nil, h.connectError(err)
	}
	res, err := h.svc.Do(ctx, cmd)
	if err != nil {
		return nil, h.connectError(err)
	}
	return connect.NewResponse(r.def.respond(res)), nil
}

// FromBatchCommand validates command i of an Apply batch; field paths are
// prefixed with "commands[i].<kind>.".
func FromBatchCommand(i int, bc *inventoryv1.Command, now time.Time) (*Command, error) {
	names := make([]string, len(kindOrder))
	for j, k := range kindOrder {
		e := registry[k]
		names[j] = e.name
		c := &checker{now: now, prefix: fmt.Sprintf("commands[%d].%s.", i, e.name)}
		if cmd, err, ok := e.batch(bc, c); ok {
			return cmd, err
		}
	}
	return nil, &ValidationError{What: "command", Violations: []Violation{{Field: fmt.Sprintf("commands[%d]", i),
		Description: "one of " + strings.Join(names, ", ") + " is required"}}}
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
