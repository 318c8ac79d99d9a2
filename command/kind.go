package command

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Each kind of command (Kind, declared in package domain) is declared once,
// in its own file kind_<name>.go: its Kind constant, its checks, its
// decision and its RPC, registered with register. Everything that varies by
// kind (its name, validation alone or in an Apply batch, decide, the
// response) is looked up in the registry; nothing switches over kinds.

// kindName returns the kind's name: its field in an Apply batch's oneof.
func kindName(k Kind) string {
	if e, ok := registry[k]; ok {
		return e.name
	}
	return "unknown"
}

// kind is what a kind declares: how its request (Req) becomes a *Command
// and how the command is decided against the aggregate. The rest comes from
// the proto: the kind's name and place in an Apply batch are the field of
// Command's oneof kind whose type is Req, and its unary response (Resp) is
// the command's result in Resp's field result. A kind whose response says
// more implements responder[Resp] as well.
type kind[Req any] interface {
	// check validates the fields only this kind has and copies them into
	// cmd; c.common has already checked the fields every request has.
	check(r *Req, c *checker, cmd *Command)
	// decide returns the events of d's command against d's SKU. It is pure.
	decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error)
}

// responder is a kind whose unary response carries more than the result.
// It is given the command the result is of (a retry's, when replayed,
// which asks for the same thing).
type responder[Resp any] interface {
	respond(cmd *Command, res *Result, out *Resp)
}

// entry is a registered kind with its request and response types erased.
type entry struct {
	name     string
	request  protoreflect.FullName
	validate func(m proto.Message, c *checker) (*Command, error)
	// field is the kind's field in the oneof of an Apply batch's Command.
	field  protoreflect.FieldDescriptor
	decide func(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error)
}

var (
	registry = map[Kind]entry{}
	// kindOrder lists the registered kinds in ascending order.
	kindOrder []Kind
)

// registered is a kind in the registry. The unary RPC of a kind is served
// only through it, so a kind cannot be served without being registered.
type registered[Req, Resp any] struct {
	k      Kind
	def    kind[Req]
	result protoreflect.FieldDescriptor // of Resp
	// rpc is the kind's method of CommandService, procedure its path.
	rpc, procedure string
}

// register adds the kind k, declared by def, to the registry. k is written
// into command fingerprints and must never change. A kind whose request is
// not in the oneof of an Apply batch's Command or lacks command_id, sku_id
// or user_id, whose response has no result, or two kinds with the same
// constant are programming errors and panic at start-up.
func register[Resp, Req any](k Kind, def kind[Req]) registered[Req, Resp] {
	req := any((*Req)(nil)).(proto.Message).ProtoReflect().Descriptor()
	resp := any((*Resp)(nil)).(proto.Message).ProtoReflect().Descriptor()
	fd := batchField(req.FullName())
	r := registered[Req, Resp]{k: k, def: def, result: resp.Fields().ByName("result")}
	_, common := any((*Req)(nil)).(commonRequest)
	svc := inventoryv1.File_tally_inventory_v1_command_proto.Services().ByName("CommandService")
	for i := range svc.Methods().Len() {
		if m := svc.Methods().Get(i); m.Input().FullName() == req.FullName() {
			r.rpc, r.procedure = string(m.Name()), "/"+string(svc.FullName())+"/"+string(m.Name())
		}
	}
	if _, dup := registry[k]; dup || fd == nil || r.result == nil || !common || r.rpc == "" {
		panic(fmt.Sprintf("command: kind %d (%s) registered twice, not in the Command oneof, without a result, without the common fields or without an RPC", k, req.FullName()))
	}
	registry[k] = entry{
		name:    string(fd.Name()),
		request: req.FullName(),
		field:   fd,
		validate: func(m proto.Message, c *checker) (*Command, error) {
			return r.validate(any(m).(*Req), c)
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
	cmd := &Command{Kind: r.k}
	c.common(any(req).(proto.Message), cmd)
	r.def.check(req, c, cmd)
	return cmd, c.err()
}

// unary serves the kind's own RPC: validate, do, respond.
func (r registered[Req, Resp]) unary(ctx context.Context, h *Handler, req *connect.Request[Req]) (*connect.Response[Resp], error) {
	cmd, err := r.validate(req.Msg, &checker{now: h.now()})
	if err == nil {
		err = authorize(ctx, cmd, h.maxAdjustment)
	}
	if err != nil {
		return nil, h.rejected(err)
	}
	res, relayed, err := doUnary(ctx, h, r, req, cmd)
	var ce *connect.Error
	switch {
	case relayed != nil:
		return relayed, nil
	case errors.As(err, &ce):
		return nil, ce // the owner's answer, or why forwarding failed
	case err != nil:
		return nil, h.connectError(err)
	}
	out := new(Resp)
	any(out).(proto.Message).ProtoReflect().Set(r.result, protoreflect.ValueOfMessage(res.proto().ProtoReflect()))
	if x, ok := r.def.(responder[Resp]); ok {
		x.respond(cmd, res, out)
	}
	return connect.NewResponse(out), nil
}

// FromRequest validates the request of any kind (a *inventoryv1.RecordSaleRequest,
// …); now bounds occurred_at.
func FromRequest(req proto.Message, now time.Time) (*Command, error) {
	name := req.ProtoReflect().Descriptor().FullName()
	for _, k := range kindOrder {
		if e := registry[k]; e.request == name {
			return e.validate(req, &checker{now: now})
		}
	}
	return nil, &ValidationError{What: "command", Violations: []Violation{{Field: "kind", Description: "unknown command kind"}}}
}

// FromBatchCommand validates command i of an Apply batch; field paths are
// prefixed with "commands[i].<kind>.".
func FromBatchCommand(i int, bc *inventoryv1.Command, now time.Time) (*Command, error) {
	m := bc.ProtoReflect()
	for _, k := range kindOrder {
		if e := registry[k]; m.WhichOneof(e.field.ContainingOneof()) == e.field {
			c := &checker{now: now, prefix: fmt.Sprintf("commands[%d].%s.", i, e.name)}
			return e.validate(m.Get(e.field).Message().Interface(), c)
		}
	}
	names := make([]string, len(kindOrder))
	for j, k := range kindOrder {
		names[j] = registry[k].name
	}
	return nil, &ValidationError{What: "command", Violations: []Violation{{Field: fmt.Sprintf("commands[%d]", i),
		Description: "one of " + strings.Join(names, ", ") + " is required"}}}
}
