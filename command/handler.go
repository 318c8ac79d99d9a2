package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/apierr"
)

// ReasonCommandIDReused is the google.rpc.ErrorInfo reason of an
// ALREADY_EXISTS answer to a command_id reused for a different request.
const ReasonCommandIDReused = "COMMAND_ID_REUSED"

// ReasonCommandIDTooOld is the google.rpc.ErrorInfo reason of a
// FAILED_PRECONDITION answer to a command too old for the dedupe window to
// tell from a retry (CommandTooOldError).
const ReasonCommandIDTooOld = "COMMAND_ID_TOO_OLD"

// Handler serves CommandService over Connect, gRPC and gRPC-Web.
type Handler struct {
	svc *Service
	log *slog.Logger
	now func() time.Time
	fwd *forwarder // nil: commands for other instances' partitions are refused
	// maxAdjustment is the most units an adjustment by a non-admin may
	// move (0: any).
	maxAdjustment int64
}

// SetMaxAdjustment bounds the units of an adjustment a caller without the
// admin role may make (--max-adjustment; 0: no bound).
func (h *Handler) SetMaxAdjustment(units int64) { h.maxAdjustment = units }

var _ inventoryv1connect.CommandServiceHandler = (*Handler)(nil)

// NewHandler returns the CommandService handler over svc.
func NewHandler(svc *Service, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{svc: svc, log: log, now: time.Now}
	if svc.cfg.Advertise != "" {
		h.fwd = newForwarder(svc.rootCtx, svc.cfg.Advertise, svc.cfg.ForwardTLS, svc.cfg.Metrics, svc.cfg.MaxRequestBytes)
	}
	return h
}

// HTTPHandler returns the path and the http.Handler that serve h over
// Connect, gRPC and gRPC-Web. Mount the CommandService only through it: it
// makes unknown request fields errors (strictJSON, rejectUnknownFields).
// opts (the server's HandlerOptions: the request size limit; the auth
// interceptor) come first, so they cannot undo that.
func (h *Handler) HTTPHandler(opts ...connect.HandlerOption) (string, http.Handler) {
	return inventoryv1connect.NewCommandServiceHandler(h, append(opts,
		connect.WithCodec(strictJSON{"json"}),
		connect.WithCodec(strictJSON{"json; charset=utf-8"}),
		connect.WithInterceptors(connect.UnaryInterceptorFunc(h.rejectUnknownFields)),
	)...)
}

// Apply implements CommandService.
func (h *Handler) Apply(ctx context.Context, req *connect.Request[inventoryv1.ApplyRequest]) (*connect.Response[inventoryv1.ApplyResponse], error) {
	in := req.Msg.GetCommands()
	if len(in) == 0 || len(in) > MaxBatchCommands {
		return nil, h.rejected(&ValidationError{What: "command", Violations: []Violation{{
			Field: "commands", Description: fmt.Sprintf("1 to %d commands, got %d", MaxBatchCommands, len(in)),
		}}})
	}
	now := h.now()
	cmds := make([]*Command, len(in))
	invalid := make([]error, len(in))
	for i, c := range in {
		cmds[i], invalid[i] = FromBatchCommand(i, c, now)
		if invalid[i] == nil {
			invalid[i] = authorize(ctx, cmds[i], h.maxAdjustment)
		}
		if invalid[i] != nil {
			cmds[i] = nil
			h.countRejected(invalid[i])
		}
	}
	outcomes := h.svc.DoBatch(ctx, cmds)
	resp := &inventoryv1.ApplyResponse{Outcomes: make([]*inventoryv1.CommandOutcome, len(in))}
	if h.fwd != nil && !forwarded(req.Header()) {
		h.applyRemote(ctx, req.Header().Get(authorizationHeader), in, cmds, outcomes, resp.Outcomes)
	}
	failures := batchFailures{byCode: map[connect.Code]int{}}
	for i, o := range outcomes {
		if resp.Outcomes[i] != nil {
			continue // the owner's outcome, relayed
		}
		err := invalid[i]
		if err == nil {
			err = o.Err
		}
		if err != nil {
			code, _, ce, report := h.classify(err)
			failures.add(code, err, report)
			resp.Outcomes[i] = &inventoryv1.CommandOutcome{Outcome: &inventoryv1.CommandOutcome_Error{Error: ce}}
			continue
		}
		resp.Outcomes[i] = &inventoryv1.CommandOutcome{Outcome: &inventoryv1.CommandOutcome_Result{Result: o.Result.proto()}}
	}
	failures.log(ctx, h.log, len(in))
	return connect.NewResponse(resp), nil
}

// batchFailures sums up the failures of one Apply batch for one log line:
// a batch whose transaction fails would otherwise log once per command.
type batchFailures struct {
	byCode      map[connect.Code]int // every failed command, reported or not
	internal    error                // the first internal error
	unavailable error                // the first error of the log being unavailable
}

func (b *batchFailures) add(code connect.Code, err error, report bool) {
	b.byCode[code]++
	switch {
	case !report:
	case code == connect.CodeInternal:
		if b.internal == nil {
			b.internal = err
		}
	case b.unavailable == nil:
		b.unavailable = err
	}
}

// log writes the batch's line, if any of its failures is worth reporting
// (as classify decides): an error if a command failed internally, else a
// warning, with the count of failures per code and the first error.
func (b *batchFailures) log(ctx context.Context, log *slog.Logger, commands int) {
	level, msg, first := slog.LevelError, "apply batch: commands failed", b.internal
	if first == nil {
		level, msg, first = slog.LevelWarn, "apply batch: commands unavailable", b.unavailable
	}
	if first == nil {
		return
	}
	codes := slices.Sorted(maps.Keys(b.byCode))
	counts := make([]slog.Attr, len(codes))
	for i, c := range codes {
		counts[i] = slog.Int(c.String(), b.byCode[c])
	}
	log.LogAttrs(ctx, level, msg, slog.Int("commands", commands),
		slog.GroupAttrs("failed", counts...), slog.Any("error", first))
}

func (r *Result) proto() *inventoryv1.CommandResult {
	out := &inventoryv1.CommandResult{
		SkuId:         r.SKU,
		SkuVersion:    r.Version,
		EventIds:      r.EventIDs,
		Replayed:      r.Replayed,
		NegativeStock: r.Negative,
	}
	for _, s := range r.Stores {
		out.Stores = append(out.Stores, &inventoryv1.StoreLevel{
			StoreId: s.Store, OnHand: s.OnHand, Reserved: s.Reserved, Available: s.Available(),
		})
	}
	return out
}

// classify is the one place where write-side errors meet RPC codes: it
// returns the code, the message a client may see, the typed details, and
// whether operators should hear of the failure (the log unavailable, an
// internal error; not what a client caused or can act on). It does not log:
// a unary call logs its failure, an Apply batch one line for all of them.
func (h *Handler) classify(err error) (code connect.Code, msg string, ce *inventoryv1.CommandError, report bool) {
	var (
		ve      *ValidationError
		vc      *VersionConflictError
		is      *InsufficientStockError
		no      *NotOwnerError
		rx      *ReservationExistsError
		rn      *ReservationNotActiveError
		cr      *CommandIDReusedError
		co      *CommandTooOldError
		pe      *PermissionError
		qo      *QuantityOverflowError
		relayed *connect.Error
		un      *UnavailableError
	)
	ce = &inventoryv1.CommandError{}
	code, msg = connect.CodeInternal, "internal error"
	switch {
	case errors.As(err, &ve):
		code, msg = connect.CodeInvalidArgument, ve.Error()
		for _, v := range ve.Violations {
			ce.FieldViolations = append(ce.FieldViolations, &inventoryv1.FieldViolation{Field: v.Field, Description: v.Description})
		}
	case errors.As(err, &vc):
		code, msg = connect.CodeAborted, vc.Error()
		ce.VersionConflict = &inventoryv1.VersionConflict{SkuId: vc.SKU, ExpectedVersion: vc.Expected, CurrentVersion: vc.Current}
	case errors.As(err, &is):
		code, msg = connect.CodeFailedPrecondition, is.Error()
		ce.InsufficientStock = &inventoryv1.InsufficientStock{SkuId: is.SKU, StoreId: is.Store, Requested: is.Requested, Available: is.Available}
	case errors.As(err, &cr):
		code, msg = connect.CodeAlreadyExists, cr.Error()
		ce.CommandIdReused = &inventoryv1.CommandIdReused{SkuId: cr.SKU, CommandId: cr.CommandID}
	case errors.As(err, &pe):
		code, msg = connect.CodePermissionDenied, pe.Error()
	case errors.As(err, &co):
		code, msg = connect.CodeFailedPrecondition, co.Error()
		ce.CommandIdTooOld = &inventoryv1.CommandIdTooOld{SkuId: co.SKU, CommandId: co.CommandID, OccurredAt: timestamppb.New(co.OccurredAt), RememberedSince: timestamppb.New(co.RememberedSince)}
	case errors.As(err, &qo):
		// The command is well formed; the SKU's state is what it cannot go on from.
		code, msg = connect.CodeFailedPrecondition, qo.Error()
	case errors.As(err, &rx):
		code, msg = connect.CodeAlreadyExists, rx.Error()
	case errors.As(err, &rn):
		code, msg = connect.CodeFailedPrecondition, rn.Error()
		ce.ReservationNotActive = &inventoryv1.ReservationNotActive{SkuId: rn.SKU, ReservationId: rn.ReservationID}
	case errors.As(err, &no):
		code, msg = connect.CodeUnavailable, no.Error()+"; retry"
		if no.Owner != "" {
			msg = no.Error() + "; send the command there"
		}
	case errors.As(err, &un):
		code, msg = connect.CodeUnavailable, un.Reason+"; retry with the same command_id"
	case errors.Is(err, ErrUnavailable):
		code, msg = connect.CodeUnavailable, "the inventory log is unavailable; nothing was applied unless a retry with the same command_id says so"
		report = true
	case errors.As(err, &relayed):
		// Another instance's answer to a forwarded batch, in its words.
		code, msg = relayed.Code(), relayed.Message()
		report = code == connect.CodeInternal || code == connect.CodeUnknown
	case errors.Is(err, context.Canceled):
		code, msg = connect.CodeCanceled, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = connect.CodeDeadlineExceeded, "deadline exceeded; retry with the same command_id to learn the outcome"
	default:
		report = true
	}
	ce.Code, ce.Message = code.String(), msg
	return code, msg, ce, report
}

// countRejected counts a command refused before it reached a writer
// (tally_commands_total{outcome="invalid_argument"|"permission_denied"}).
func (h *Handler) countRejected(err error) {
	if h.svc != nil {
		h.svc.cfg.Metrics.observeRejected(err)
	}
}

// rejected counts a refusal made before the writer and returns its answer.
func (h *Handler) rejected(err error) *connect.Error {
	h.countRejected(err)
	return h.connectError(err)
}

func (h *Handler) connectError(err error) *connect.Error {
	code, _, ce, report := h.classify(err)
	switch {
	case !report:
	case code == connect.CodeInternal:
		h.log.Error("command failed", "error", err)
	default:
		h.log.Warn("command unavailable", "error", err)
	}
	return errorOf(ce)
}

// errorOf is the RPC error of a command's error outcome: a unary call's
// answer is errorOf(classify(err)), so an outcome relayed from another
// instance's Apply answers as that instance would have answered the call.
func errorOf(ce *inventoryv1.CommandError) *connect.Error {
	var code connect.Code
	if err := code.UnmarshalText([]byte(ce.GetCode())); err != nil {
		code = connect.CodeUnknown
	}
	out := connect.NewError(code, errors.New(ce.GetMessage()))
	if len(ce.FieldViolations) > 0 {
		vs := make([]apierr.Violation, len(ce.FieldViolations))
		for i, v := range ce.FieldViolations {
			vs[i] = apierr.Violation{Field: v.Field, Description: v.Description}
		}
		addDetail(out, apierr.BadRequest(vs))
	}
	if ce.VersionConflict != nil {
		addDetail(out, ce.VersionConflict)
	}
	if ce.InsufficientStock != nil {
		addDetail(out, ce.InsufficientStock)
	}
	if ce.ReservationNotActive != nil {
		addDetail(out, ce.ReservationNotActive)
	}
	if r := ce.CommandIdTooOld; r != nil {
		addDetail(out, &errdetails.ErrorInfo{
			Reason: ReasonCommandIDTooOld,
			Domain: inventoryv1connect.CommandServiceName,
			Metadata: map[string]string{"sku_id": r.GetSkuId(), "command_id": r.GetCommandId(),
				"occurred_at": r.GetOccurredAt().AsTime().Format(time.RFC3339Nano), "remembered_since": r.GetRememberedSince().AsTime().Format(time.RFC3339Nano)},
		})
	}
	if r := ce.CommandIdReused; r != nil {
		addDetail(out, &errdetails.ErrorInfo{
			Reason:   ReasonCommandIDReused,
			Domain:   inventoryv1connect.CommandServiceName,
			Metadata: map[string]string{"sku_id": r.GetSkuId(), "command_id": r.GetCommandId()},
		})
	}
	return out
}

func addDetail(e *connect.Error, m proto.Message) {
	if d, err := connect.NewErrorDetail(m); err == nil {
		e.AddDetail(d)
	}
}
