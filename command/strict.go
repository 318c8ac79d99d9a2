package command

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The CommandService refuses fields it does not know, in every encoding. A
// field this server ignores is one it does not apply, and for a command that
// is never harmless: a misspelt "expectedVersoin" turned a conditional sale
// into an unconditional one. connect's default JSON codec discards unknown
// fields and the binary codec keeps them aside unread, so the handler gets
// its own JSON codec and an interceptor that looks at what binary kept.

// strictJSON is protojson with unknown fields and unknown enum names as
// errors. connect wraps a codec's error as INVALID_ARGUMENT with the text,
// which names the field; it has no way to add details to it.
type strictJSON struct{ name string }

func (c strictJSON) Name() string { return c.name }

func (c strictJSON) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.Marshal(pm)
}

func (c strictJSON) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, pm); err != nil {
		return fmt.Errorf("%s: %w", pm.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// rejectUnknownFields answers INVALID_ARGUMENT, with one field violation per
// unknown field, when a request decoded from binary protobuf (gRPC, gRPC-Web,
// Connect) carries fields this server's schema does not have, anywhere in
// it (an Apply batch is refused as a whole, as its JSON form is).
func (h *Handler) rejectUnknownFields(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if m, ok := req.Any().(proto.Message); ok && hasUnknownFields(m.ProtoReflect()) {
			if vs := unknownFields(m.ProtoReflect(), "", nil); len(vs) > 0 {
				return nil, h.rejected(&ValidationError{What: "command", Violations: vs})
			}
		}
		return next(ctx, req)
	}
}

// hasUnknownFields reports whether m or a message it holds has unknown
// fields: the walk of every request, without the paths unknownFields
// names them by.
func hasUnknownFields(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = hasUnknownFields(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				found = hasUnknownFields(mv.Message())
				return !found
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			found = hasUnknownFields(v.Message())
		}
		return !found
	})
	return found
}

// unknownFields appends a violation for every unknown field in m and the
// messages it holds, named by its path and field number
// ("commands[2].sale.12").
func unknownFields(m protoreflect.Message, path string, vs []Violation) []Violation {
	for b := m.GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return append(vs, Violation{Field: path, Description: "malformed unknown field"})
		}
		l := protowire.ConsumeFieldValue(num, typ, b[n:])
		if l < 0 {
			return append(vs, Violation{Field: join(path, strconv.Itoa(int(num))), Description: "malformed unknown field"})
		}
		b = b[n+l:]
		vs = append(vs, Violation{
			Field:       join(path, strconv.Itoa(int(num))),
			Description: fmt.Sprintf("unknown field number %d of %s; this server refuses fields it does not know", num, m.Descriptor().FullName()),
		})
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := join(path, string(fd.Name()))
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				vs = unknownFields(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), vs)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				vs = unknownFields(mv.Message(), fmt.Sprintf("%s[%q]", name, k.String()), vs)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			vs = unknownFields(v.Message(), name, vs)
		}
		return true
	})
	return vs
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
