package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"cloud.google.com/go/bigquery/storage/managedwriter/adapt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// maxAppendBytes bounds one AppendRows request: BigQuery takes up to 10 MB,
// the emulator's gRPC server 4 MiB.
const maxAppendBytes = 2 << 20

// rowType is a table's rows as protobuf messages, described from the
// table's BigQuery schema (adapt), so the rows and the table never
// disagree.
type rowType struct {
	md protoreflect.MessageDescriptor
	dp *descriptorpb.DescriptorProto
}

func newRowType(schema bigquery.Schema, name string) (*rowType, error) {
	ts, err := adapt.BQSchemaToStorageTableSchema(schema)
	if err != nil {
		return nil, err
	}
	d, err := adapt.StorageSchemaToProto2Descriptor(ts, name)
	if err != nil {
		return nil, err
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("row descriptor of %s is a %T", name, d)
	}
	dp, err := adapt.NormalizeDescriptor(md)
	if err != nil {
		return nil, err
	}
	return &rowType{md: md, dp: dp}, nil
}

// minTimestamp and maxTimestamp bound BigQuery's TIMESTAMP.
var (
	minTimestamp = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTimestamp = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// encode turns a row, as a ValueSaver gives it, into the row message's
// wire form. A value BigQuery cannot hold (a timestamp outside years
// 1–9999) is an error naming the column: the row would be refused.
func (t *rowType) encode(row map[string]bigquery.Value) ([]byte, error) {
	m, err := t.message(t.md, row)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(m)
}

func (t *rowType) message(md protoreflect.MessageDescriptor, row map[string]bigquery.Value) (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(md)
	for name, v := range row {
		if v == nil {
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("column %s: not in the table's schema", name)
		}
		if fd.IsList() {
			items, ok := v.([]bigquery.Value)
			if !ok {
				return nil, fmt.Errorf("column %s: a repeated column needs a list, got %T", name, v)
			}
			list := m.Mutable(fd).List()
			for _, it := range items {
				rec, ok := it.(map[string]bigquery.Value)
				if !ok {
					return nil, fmt.Errorf("column %s: a record needs a map, got %T", name, it)
				}
				sub, err := t.message(fd.Message(), rec)
				if err != nil {
					return nil, fmt.Errorf("column %s: %w", name, err)
				}
				list.Append(protoreflect.ValueOfMessage(sub))
			}
			continue
		}
		pv, err := scalar(fd, v)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", name, err)
		}
		m.Set(fd, pv)
	}
	return m, nil
}

// scalar is v as fd's protobuf value (TIMESTAMP: microseconds since the
// epoch, as BigQuery takes it).
func scalar(fd protoreflect.FieldDescriptor, v bigquery.Value) (protoreflect.Value, error) {
	switch x := v.(type) {
	case string:
		return protoreflect.ValueOfString(x), nil
	case []byte:
		return protoreflect.ValueOfBytes(x), nil
	case bool:
		return protoreflect.ValueOfBool(x), nil
	case float64:
		return protoreflect.ValueOfFloat64(x), nil
	case float32:
		return protoreflect.ValueOfFloat64(float64(x)), nil
	case int64:
		return protoreflect.ValueOfInt64(x), nil
	case int32:
		return protoreflect.ValueOfInt64(int64(x)), nil
	case int:
		return protoreflect.ValueOfInt64(int64(x)), nil
	case time.Time:
		if x.Before(minTimestamp) || x.After(maxTimestamp) {
			return protoreflect.Value{}, fmt.Errorf("%s is outside BigQuery's TIMESTAMP range (years 1 to 9999)", x.Format(time.RFC3339Nano))
		}
		return protoreflect.ValueOfInt64(x.UnixMicro()), nil
	}
	return protoreflect.Value{}, fmt.Errorf("no BigQuery type for %T (field %s)", v, fd.Name())
}

// storageWriter writes tables of a dataset through the Storage Write API.
//
// Every append opens its own connection to the stream, naming it: the
// emulator routes a request that does not name its stream (managedwriter
// names it only in a connection's first request) to whichever stream it
// finds first, another table's included. On BigQuery that costs a
// GetWriteStream and a connection per append, at most one append per
// partition and flush.
type storageWriter struct {
	mw               *managedwriter.Client
	project, dataset string
	// appended counts the bytes of rows appended, by table.
	appended func(table string, bytes int)
	// committed are the streams this process committed and has not yet
	// been told are settled: a retried flush does not commit them again
	// (BigQuery would refuse; the emulator, which records no commit
	// time, would add their rows twice).
	mu        sync.Mutex
	committed map[string]bool
}

// settled forgets streams whose rows are settled.
func (w *storageWriter) settled(streams []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range streams {
		delete(w.committed, s)
	}
}

func (w *storageWriter) parent(table string) string {
	return managedwriter.TableParentFromParts(w.project, w.dataset, table)
}

// createPending creates a pending stream on table: its rows become visible
// only when commit commits it.
func (w *storageWriter) createPending(ctx context.Context, table string) (string, error) {
	return w.create(ctx, table, storagepb.WriteStream_PENDING)
}

// createCommitted creates a committed stream on table: each append is
// visible once answered. (Not the table's default stream, which the
// emulator cannot find by its name and so appends to some other stream.)
func (w *storageWriter) createCommitted(ctx context.Context, table string) (string, error) {
	return w.create(ctx, table, storagepb.WriteStream_COMMITTED)
}

func (w *storageWriter) create(ctx context.Context, table string, typ storagepb.WriteStream_Type) (string, error) {
	ws, err := w.mw.CreateWriteStream(ctx, &storagepb.CreateWriteStreamRequest{
		Parent: w.parent(table), WriteStream: &storagepb.WriteStream{Type: typ},
	})
	if err != nil {
		return "", fmt.Errorf("create a %s stream on %s: %w", typ, table, err)
	}
	return ws.GetName(), nil
}

// RowError is a row BigQuery refused, by its index in the append.
type RowError struct {
	Index int
	Err   error
}

// AppendError is an append BigQuery refused because of some of its rows:
// nothing of it was written.
type AppendError struct{ Rows []RowError }

func (e *AppendError) Error() string {
	return fmt.Sprintf("bigquery refused %d rows of the append, the first (row %d): %v", len(e.Rows), e.Rows[0].Index, e.Rows[0].Err)
}

// append appends rows to a new stream in requests of at most
// maxAppendBytes, at explicit offsets from 0, so that BigQuery refuses a
// request it already has (the emulator ignores offsets: the flush never
// appends to one stream twice, see streamRows).
func (w *storageWriter) append(ctx context.Context, table, stream string, rt *rowType, rows [][]byte) error {
	var offset int64
	for from := 0; from < len(rows); {
		to, size := from, 0
		for to < len(rows) && (to == from || size+len(rows[to]) <= maxAppendBytes) {
			size += len(rows[to])
			to++
		}
		if err := w.appendOnce(ctx, table, stream, rt, rows[from:to], offset); err != nil {
			var ae *AppendError
			if errors.As(err, &ae) {
				for i := range ae.Rows {
					ae.Rows[i].Index += from
				}
			}
			return err
		}
		if w.appended != nil {
			w.appended(table, size)
		}
		offset += int64(to - from)
		from = to
	}
	return nil
}

func (w *storageWriter) appendOnce(ctx context.Context, table, stream string, rt *rowType, rows [][]byte, offset int64) error {
	ms, err := w.mw.NewManagedStream(ctx, managedwriter.WithSchemaDescriptor(rt.dp), managedwriter.WithStreamName(stream))
	if err != nil {
		return fmt.Errorf("open a write stream on %s: %w", table, err)
	}
	defer ms.Close()
	res, err := ms.AppendRows(ctx, rows, managedwriter.WithOffset(offset))
	if err != nil {
		return fmt.Errorf("append to %s: %w", table, err)
	}
	resp, err := res.FullResponse(ctx)
	if errs := resp.GetRowErrors(); len(errs) > 0 {
		ae := &AppendError{}
		for _, re := range errs {
			ae.Rows = append(ae.Rows, RowError{Index: int(re.GetIndex()), Err: fmt.Errorf("%s: %s", re.GetCode(), re.GetMessage())})
		}
		return ae
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", table, err)
	}
	return nil
}

// finalize closes stream to appends, as a commit needs.
func (w *storageWriter) finalize(ctx context.Context, stream string) error {
	ms, err := w.mw.NewManagedStream(ctx, managedwriter.WithStreamName(stream))
	if err != nil {
		return fmt.Errorf("open %s to finalize it: %w", stream, err)
	}
	defer ms.Close()
	if _, err := ms.Finalize(ctx); err != nil {
		return fmt.Errorf("finalize %s: %w", stream, err)
	}
	return nil
}

// commit commits the pending streams of table, but none this process has
// committed already (the emulator would add its rows again). A stream
// committed by another projector is refused by BigQuery
// (STREAM_ALREADY_COMMITTED) and taken as done; no lookup comes first,
// since BigQuery's refusal says the same and the emulator records no
// commit time to look up.
func (w *storageWriter) commit(ctx context.Context, table string, streams []string) error {
	var todo []string
	w.mu.Lock()
	for _, s := range streams {
		if !w.committed[s] {
			todo = append(todo, s)
		}
	}
	w.mu.Unlock()
	// One stream per request: the emulator leaves a failed stream's
	// transaction open and then waits forever on the next one's.
	var errs []error
	for _, s := range todo {
		resp, err := w.mw.BatchCommitWriteStreams(ctx, &storagepb.BatchCommitWriteStreamsRequest{Parent: w.parent(table), WriteStreams: []string{s}})
		if err != nil {
			return fmt.Errorf("commit %s: %w", s, err)
		}
		ok := true
		for _, se := range resp.GetStreamErrors() {
			if se.GetCode() == storagepb.StorageError_STREAM_ALREADY_COMMITTED {
				continue // committed meanwhile by another projector recovering it
			}
			ok = false
			errs = append(errs, fmt.Errorf("commit %s: %s: %s", se.GetEntity(), se.GetCode(), se.GetErrorMessage()))
		}
		if ok {
			w.mu.Lock()
			if w.committed == nil {
				w.committed = map[string]bool{}
			}
			w.committed[s] = true
			w.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}
