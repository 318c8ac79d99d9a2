package readmodel

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// An event's fields in the read models: every field of InventoryEvent is a
// column of the same name, in the PostgreSQL ledger and in BigQuery's
// inventory_events, except the fields in notProjected. The projections
// write them, and the query side reads them back, through EventColumns, so
// a field added to the event reaches both read models with a migration that
// adds its ledger column and no code (BigQuery's column is added at start).
// The migrations are checked against EventColumns by a test.

// notProjected are the event's fields no read model keeps.
var notProjected = map[protoreflect.Name]bool{
	// What a command asked for, for the writer's idempotency only.
	"command_fingerprint": true,
}

// EventColumn is one field of InventoryEvent as a read model column.
type EventColumn struct {
	Name  string
	Field protoreflect.FieldDescriptor
}

var eventColumns = func() []EventColumn {
	fields := (*inventoryv1.InventoryEvent)(nil).ProtoReflect().Descriptor().Fields()
	var out []EventColumn
	for i := range fields.Len() {
		fd := fields.Get(i)
		if notProjected[fd.Name()] {
			continue
		}
		if !columnKind(fd) {
			panic(fmt.Sprintf("readmodel: event field %s has a type no read model column is defined for", fd.Name()))
		}
		out = append(out, EventColumn{Name: string(fd.Name()), Field: fd})
	}
	return out
}()

// columnKind reports whether fd has a type the read models store: a scalar,
// an enum, a google.protobuf.Timestamp or a map of strings.
func columnKind(fd protoreflect.FieldDescriptor) bool {
	switch {
	case fd.IsMap():
		return fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind
	case fd.IsList():
		return false
	case fd.Kind() == protoreflect.MessageKind:
		return fd.Message().FullName() == "google.protobuf.Timestamp"
	case fd.Kind() == protoreflect.GroupKind:
		return false
	}
	return true
}

// EventColumns are the event's columns, in field-number order.
func EventColumns() []EventColumn { return eventColumns }

// EnumName is an enum value as the BigQuery model stores it: its name
// without the enum's prefix ("SALE" for EVENT_TYPE_SALE), "" for the zero
// value (X_UNSPECIFIED).
func EnumName(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	if n == 0 {
		return ""
	}
	v := ed.Values().ByNumber(n)
	if v == nil {
		return fmt.Sprint(int32(n))
	}
	prefix := strings.TrimSuffix(string(ed.Values().ByNumber(0).Name()), "UNSPECIFIED")
	return strings.TrimPrefix(string(v.Name()), prefix)
}

// The ledger's columns that are not the event's: where its record is.
const (
	LogPartition = "log_partition"
	LogOffset    = "log_offset"
)

// LedgerColumns are the ledger's columns in LedgerRow's order.
func LedgerColumns() []string {
	out := make([]string, 0, len(eventColumns)+2)
	for _, c := range eventColumns {
		out = append(out, c.Name)
	}
	return append(out, LogPartition, LogOffset)
}

// LedgerRow is e's ledger row, in LedgerColumns' order, for COPY: id is its
// event_id, parsed (the column is a uuid), and partition and offset where
// its record is. Enums are stored as their numbers, timestamps as
// timestamptz (NULL when unset), the metadata map as jsonb (NULL when
// empty).
func LedgerRow(e *inventoryv1.InventoryEvent, id uuid.UUID, partition int32, offset int64) []any {
	m := e.ProtoReflect()
	row := make([]any, 0, len(eventColumns)+2)
	for _, c := range eventColumns {
		fd := c.Field
		switch {
		case c.Name == "event_id":
			// As pgtype.UUID: a uuid.UUID would be encoded through its
			// driver.Valuer, as text parsed back, at a cost per event.
			row = append(row, pgtype.UUID{Bytes: id, Valid: true})
		case fd.IsMap():
			var v any
			if mp := m.Get(fd).Map(); mp.Len() > 0 {
				kv := make(map[string]string, mp.Len())
				mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
					kv[k.String()] = v.String()
					return true
				})
				v, _ = json.Marshal(kv)
			}
			row = append(row, v)
		case fd.Kind() == protoreflect.MessageKind:
			var v any
			if m.Has(fd) {
				v = m.Get(fd).Message().Interface().(*timestamppb.Timestamp).AsTime()
			}
			row = append(row, v)
		case fd.Kind() == protoreflect.EnumKind:
			row = append(row, int16(m.Get(fd).Enum()))
		default:
			row = append(row, m.Get(fd).Interface())
		}
	}
	return append(row, partition, offset)
}

// LedgerSelect is the select list that ScanEvent reads, for a query on the
// ledger: the event's columns.
var LedgerSelect = func() string {
	names := make([]string, len(eventColumns))
	for i, c := range eventColumns {
		names[i] = c.Name
		if c.Name == "event_id" {
			names[i] = "event_id::text"
		}
	}
	return strings.Join(names, ", ")
}()

// ScanEvent reads an event from a row selected with LedgerSelect.
func ScanEvent(row pgx.Row) (*inventoryv1.InventoryEvent, error) {
	dest := make([]any, len(eventColumns))
	for i, c := range eventColumns {
		fd := c.Field
		switch {
		case fd.IsMap():
			dest[i] = new(map[string]string)
		case fd.Kind() == protoreflect.MessageKind:
			dest[i] = new(*time.Time)
		case fd.Kind() == protoreflect.EnumKind:
			dest[i] = new(int16)
		default:
			dest[i] = scalarDest(fd.Kind())
		}
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	e := &inventoryv1.InventoryEvent{}
	m := e.ProtoReflect()
	for i, c := range eventColumns {
		fd := c.Field
		switch d := dest[i].(type) {
		case *map[string]string:
			mp := m.Mutable(fd).Map()
			for k, v := range *d {
				mp.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(v))
			}
		case **time.Time:
			if *d != nil {
				m.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(**d).ProtoReflect()))
			}
		case *int16:
			m.Set(fd, protoreflect.ValueOfEnum(protoreflect.EnumNumber(*d)))
		default:
			m.Set(fd, protoreflect.ValueOf(deref(d)))
		}
	}
	return e, nil
}

// scalarDest is where a scalar column of kind k is scanned to.
func scalarDest(k protoreflect.Kind) any {
	switch k {
	case protoreflect.StringKind:
		return new(string)
	case protoreflect.BoolKind:
		return new(bool)
	case protoreflect.BytesKind:
		return new([]byte)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return new(int32)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return new(uint32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return new(uint64)
	case protoreflect.FloatKind:
		return new(float32)
	case protoreflect.DoubleKind:
		return new(float64)
	}
	return new(int64)
}

func deref(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *[]byte:
		return *p
	case *int32:
		return *p
	case *uint32:
		return *p
	case *uint64:
		return *p
	case *float32:
		return *p
	case *float64:
		return *p
	case *int64:
		return *p
	}
	panic(fmt.Sprintf("readmodel: no scalar behind %T", p))
}
