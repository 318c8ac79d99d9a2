package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/apierr"
)

var errLogUnavailable = errors.New("log unavailable")

// InvalidError lists every problem with a request.
type InvalidError = apierr.InvalidError

// NotFoundError means the read model has no such (sku, store).
type NotFoundError struct{ SKU, Store string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no stock recorded for sku %q at store %q", e.SKU, e.Store)
}

// BehindError means the projection did not reach min_version in time.
type BehindError struct {
	SKU                   string
	MinVersion, Projected int64
	cause                 error
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("the read model has sku %q at version %d, not yet %d; retry", e.SKU, e.Projected, e.MinVersion)
}

// Archive is where the events older than the read model keeps are: the
// analytical model's table (projector/bigquery.go).
const Archive = "bigquery:inventory_events"

// NotRetainedError means a read reaches before the oldest event the read
// model keeps: the projector drops months older than its retention.
type NotRetainedError struct {
	// RetainedFrom is how far back the ledger goes.
	RetainedFrom time.Time
}

func (e *NotRetainedError) Error() string {
	return fmt.Sprintf("the read model keeps history recorded since %s; BigQuery (%s) holds the older events",
		e.RetainedFrom.UTC().Format(time.RFC3339), Archive)
}

func notFound(err error, sku, store string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return &NotFoundError{SKU: sku, Store: store}
	}
	return err
}

// connectError is the one place where read-side errors meet RPC codes.
// Database errors are logged and answered without their text.
func (s *Service) connectError(err error) *connect.Error {
	var (
		inv    *InvalidError
		nf     *NotFoundError
		behind *BehindError
		old    *NotRetainedError
		pgErr  *pgconn.PgError
	)
	switch {
	case errors.As(err, &inv):
		return apierr.InvalidArgument(inv)
	case errors.As(err, &nf):
		return connect.NewError(connect.CodeNotFound, errors.New(nf.Error()))
	case errors.As(err, &old):
		ce := connect.NewError(connect.CodeOutOfRange, errors.New(old.Error()))
		if d, derr := connect.NewErrorDetail(&inventoryv1.HistoryNotRetained{RetainedFrom: timestamppb.New(old.RetainedFrom), Archive: Archive}); derr == nil {
			ce.AddDetail(d)
		}
		return ce
	case errors.As(err, &behind):
		if errors.Is(behind.cause, context.Canceled) {
			return connect.NewError(connect.CodeCanceled, errors.New("canceled"))
		}
		ce := connect.NewError(connect.CodeUnavailable, errors.New(behind.Error()))
		if d, derr := connect.NewErrorDetail(&inventoryv1.ProjectionBehind{SkuId: behind.SKU, MinVersion: behind.MinVersion, ProjectedVersion: behind.Projected}); derr == nil {
			ce.AddDetail(d)
		}
		return ce
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	case errors.Is(err, errLogUnavailable):
		s.log.Warn("query: log unavailable", "error", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("the log is unavailable"))
	case unreachable(err):
		s.log.Warn("query: database unreachable", "error", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("the read model is unavailable; retry"))
	case errors.As(err, &pgErr):
		s.log.Error("query: database error", "error", err, "sqlstate", pgErr.Code)
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	s.log.Error("query failed", "error", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// unreachable: the read model's server could not be reached or went away
// (down, restarting, out of connections), as opposed to refusing the query.
func unreachable(err error) bool {
	var (
		pgErr   *pgconn.PgError
		connErr *pgconn.ConnectError
		netErr  net.Error
	)
	if errors.As(err, &pgErr) {
		// 08: connection exception, 53: insufficient resources (too many
		// connections), 57: operator intervention (shutting down).
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "53") || strings.HasPrefix(pgErr.Code, "57")
	}
	return errors.As(err, &connErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, pgx.ErrTxClosed)
}
