package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/server"
)

// outcome is one command's answer as the bench counts it.
type outcome struct {
	accepted bool
	// reason names a rejection ("insufficient_stock", "unavailable", ...).
	reason  string
	version int64
}

// target is what the bench drives.
type target interface {
	// do runs cmds (one = a unary call, more = one batch) and returns one
	// outcome per command, or an error for the whole call.
	do(ctx context.Context, cmds []*inventoryv1.Command) ([]outcome, error)
	close()
}

// grpcTarget drives a CommandService (Tally's or the no-op one) through
// the generated grpc-go client: round-robin over one or more instances.
type grpcTarget struct {
	conns []*grpc.ClientConn
	cmds  []inventoryv1.CommandServiceClient
	next  atomic.Uint64
}

func dialGRPC(addrs []string) (*grpcTarget, error) {
	t := &grpcTarget{}
	for _, addr := range addrs {
		conn, err := grpc.NewClient(addr, dialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))...)
		if err != nil {
			t.close()
			return nil, err
		}
		t.conns = append(t.conns, conn)
		t.cmds = append(t.cmds, inventoryv1.NewCommandServiceClient(conn))
	}
	return t, nil
}

func (t *grpcTarget) close() {
	for _, c := range t.conns {
		c.Close()
	}
}

// cmd is the client of the next instance.
func (t *grpcTarget) cmd() inventoryv1.CommandServiceClient {
	return t.cmds[t.next.Add(1)%uint64(len(t.cmds))]
}

// reasonOf names a rejected call's reason from its status code.
func reasonOf(err error) string { return reasonOfCode(codes.Code(status.Code(err))) }

// reasonOfCode is the one mapping from a code to a reported reason, for
// unary errors and for Apply's per-command errors alike (gRPC and Connect
// number their codes the same).
func reasonOfCode(c codes.Code) string {
	switch c {
	case codes.FailedPrecondition:
		return "insufficient_stock"
	case codes.Aborted:
		return "version_conflict"
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.Unavailable:
		return "unavailable"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	}
	return "error:" + c.String()
}

func (t *grpcTarget) do(ctx context.Context, cmds []*inventoryv1.Command) ([]outcome, error) {
	if len(cmds) > 1 {
		resp, err := t.cmd().Apply(ctx, &inventoryv1.ApplyRequest{Commands: cmds})
		if err != nil {
			return nil, err
		}
		out := make([]outcome, len(cmds))
		for i, o := range resp.GetOutcomes() {
			if e := o.GetError(); e != nil {
				var c connect.Code
				if err := c.UnmarshalText([]byte(e.GetCode())); err != nil {
					c = connect.CodeUnknown
				}
				out[i] = outcome{reason: reasonOfCode(codes.Code(c))}
				continue
			}
			out[i] = outcome{accepted: true, version: o.GetResult().GetSkuVersion()}
		}
		return out, nil
	}
	var res interface {
		GetResult() *inventoryv1.CommandResult
	}
	var err error
	switch k := cmds[0].GetKind().(type) {
	case *inventoryv1.Command_Sale:
		res, err = t.cmd().RecordSale(ctx, k.Sale)
	case *inventoryv1.Command_Return:
		res, err = t.cmd().RecordReturn(ctx, k.Return)
	case *inventoryv1.Command_Receipt:
		res, err = t.cmd().ReceiveStock(ctx, k.Receipt)
	case *inventoryv1.Command_Transfer:
		res, err = t.cmd().TransferStock(ctx, k.Transfer)
	default:
		return nil, errors.New("unsupported command")
	}
	if err != nil {
		if status.Code(err) == codes.Canceled {
			return nil, err
		}
		return []outcome{{reason: reasonOf(err)}}, nil
	}
	return []outcome{{accepted: true, version: res.GetResult().GetSkuVersion()}}, nil
}

// noop is a CommandService that answers at once: the RPC ceiling of the box.
type noop struct {
	inventoryv1connect.UnimplementedCommandServiceHandler
}

func ok() *inventoryv1.CommandResult { return &inventoryv1.CommandResult{SkuVersion: 1} }

func (noop) RecordSale(context.Context, *connect.Request[inventoryv1.RecordSaleRequest]) (*connect.Response[inventoryv1.RecordSaleResponse], error) {
	return connect.NewResponse(&inventoryv1.RecordSaleResponse{Result: ok()}), nil
}

func (noop) RecordReturn(context.Context, *connect.Request[inventoryv1.RecordReturnRequest]) (*connect.Response[inventoryv1.RecordReturnResponse], error) {
	return connect.NewResponse(&inventoryv1.RecordReturnResponse{Result: ok()}), nil
}

func (noop) ReceiveStock(context.Context, *connect.Request[inventoryv1.ReceiveStockRequest]) (*connect.Response[inventoryv1.ReceiveStockResponse], error) {
	return connect.NewResponse(&inventoryv1.ReceiveStockResponse{Result: ok()}), nil
}

func (noop) TransferStock(context.Context, *connect.Request[inventoryv1.TransferStockRequest]) (*connect.Response[inventoryv1.TransferStockResponse], error) {
	return connect.NewResponse(&inventoryv1.TransferStockResponse{Result: ok()}), nil
}

func (noop) Apply(_ context.Context, req *connect.Request[inventoryv1.ApplyRequest]) (*connect.Response[inventoryv1.ApplyResponse], error) {
	out := make([]*inventoryv1.CommandOutcome, len(req.Msg.GetCommands()))
	for i := range out {
		out[i] = &inventoryv1.CommandOutcome{Outcome: &inventoryv1.CommandOutcome_Result{Result: ok()}}
	}
	return connect.NewResponse(&inventoryv1.ApplyResponse{Outcomes: out}), nil
}

// startNoop serves the no-op CommandService on a loopback port.
func startNoop(ctx context.Context, log *slog.Logger) (string, func(), error) {
	srv, err := server.Listen("127.0.0.1:0", nil, log)
	if err != nil {
		return "", nil, err
	}
	path, h := inventoryv1connect.NewCommandServiceHandler(noop{}, srv.HandlerOptions()...)
	srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, time.Second); close(done) }()
	return srv.Addr(), func() { cancel(); <-done }, nil
}

// naive is the design most retailers run today: one Postgres transaction
// per command (or per batch, rows locked in SKU order), a conditional
// UPDATE of a stock row plus a ledger INSERT.
type naive struct {
	pool *pgxpool.Pool
}

func openNaive(ctx context.Context, dsn string, conns int) (*naive, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	// Like pgbench's 16 clients: on 2 cores more connections only add
	// lock and scheduler contention, which would make the peer look worse
	// than it is.
	cfg.MaxConns = int32(min(conns, 16))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	_, err = pool.Exec(ctx, `
		DROP TABLE IF EXISTS naive_stock, naive_ledger;
		CREATE TABLE naive_stock (sku_id text COLLATE "C", store_id text COLLATE "C", on_hand bigint NOT NULL,
			PRIMARY KEY (sku_id, store_id));
		CREATE TABLE naive_ledger (id bigserial PRIMARY KEY, command_id text NOT NULL, sku_id text NOT NULL,
			store_id text NOT NULL, delta bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());`)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &naive{pool: pool}, nil
}

func (n *naive) close() { n.pool.Close() }

// move is one row change of a command.
type move struct {
	sku, store string
	delta      int64
}

func movesOf(c *inventoryv1.Command) []move {
	switch k := c.GetKind().(type) {
	case *inventoryv1.Command_Sale:
		return []move{{k.Sale.GetSkuId(), k.Sale.GetStoreId(), -k.Sale.GetQuantity()}}
	case *inventoryv1.Command_Return:
		return []move{{k.Return.GetSkuId(), k.Return.GetStoreId(), k.Return.GetQuantity()}}
	case *inventoryv1.Command_Receipt:
		return []move{{k.Receipt.GetSkuId(), k.Receipt.GetStoreId(), k.Receipt.GetQuantity()}}
	case *inventoryv1.Command_Transfer:
		t := k.Transfer
		return []move{{t.GetSkuId(), t.GetFromStoreId(), -t.GetQuantity()}, {t.GetSkuId(), t.GetToStoreId(), t.GetQuantity()}}
	}
	return nil
}

var errInsufficient = errors.New("insufficient stock")

// apply runs one command's moves inside tx; a move that would go negative
// fails the command.
func applyMoves(ctx context.Context, tx pgx.Tx, id string, moves []move) error {
	for _, m := range moves {
		var tag pgconn.CommandTag
		var err error
		if m.delta < 0 {
			tag, err = tx.Exec(ctx, `UPDATE naive_stock SET on_hand = on_hand + $3 WHERE sku_id = $1 AND store_id = $2 AND on_hand + $3 >= 0`, m.sku, m.store, m.delta)
		} else {
			tag, err = tx.Exec(ctx, `INSERT INTO naive_stock VALUES ($1, $2, $3) ON CONFLICT (sku_id, store_id) DO UPDATE SET on_hand = naive_stock.on_hand + excluded.on_hand`, m.sku, m.store, m.delta)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errInsufficient
		}
		if _, err := tx.Exec(ctx, `INSERT INTO naive_ledger (command_id, sku_id, store_id, delta) VALUES ($1, $2, $3, $4)`, id, m.sku, m.store, m.delta); err != nil {
			return err
		}
	}
	return nil
}

func (n *naive) do(ctx context.Context, cmds []*inventoryv1.Command) ([]outcome, error) {
	out := make([]outcome, len(cmds))
	if len(cmds) == 1 {
		// A transfer's two rows in key order, so two opposite transfers
		// cannot deadlock.
		moves := movesOf(cmds[0])
		sort.Slice(moves, func(i, j int) bool {
			return moves[i].sku < moves[j].sku || moves[i].sku == moves[j].sku && moves[i].store < moves[j].store
		})
		err := pgx.BeginFunc(ctx, n.pool, func(tx pgx.Tx) error { return applyMoves(ctx, tx, commandID(cmds[0]), moves) })
		switch {
		case err == nil:
			out[0] = outcome{accepted: true}
		case errors.Is(err, errInsufficient):
			out[0] = outcome{reason: "insufficient_stock"}
		case ctx.Err() != nil:
			return nil, err
		default:
			out[0] = outcome{reason: "error"}
		}
		return out, nil
	}
	// A batch is one transaction; rows are locked in key order first so
	// concurrent batches cannot deadlock, and each command is a savepoint
	// so a rejected one does not undo the others.
	keys := map[[2]string]bool{}
	for _, c := range cmds {
		for _, m := range movesOf(c) {
			keys[[2]string{m.sku, m.store}] = true
		}
	}
	sorted := make([][2]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool {
		return sorted[i][0] < sorted[j][0] || sorted[i][0] == sorted[j][0] && sorted[i][1] < sorted[j][1]
	})
	skus, stores := make([]string, len(sorted)), make([]string, len(sorted))
	for i, k := range sorted {
		skus[i], stores[i] = k[0], k[1]
	}
	err := pgx.BeginFunc(ctx, n.pool, func(tx pgx.Tx) error {
		// Create missing rows, then lock every row, both in key order:
		// concurrent batches queue instead of deadlocking.
		if _, err := tx.Exec(ctx, `INSERT INTO naive_stock SELECT sku, store, 0 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY k(sku, store, n)
			ORDER BY k.n ON CONFLICT DO NOTHING`, skus, stores); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM naive_stock s JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY k(sku, store, n)
			ON s.sku_id = k.sku AND s.store_id = k.store ORDER BY k.n FOR UPDATE OF s`, skus, stores); err != nil {
			return err
		}
		for i, c := range cmds {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := applyMoves(ctx, sp, commandID(c), movesOf(c)); err != nil {
				_ = sp.Rollback(ctx)
				if errors.Is(err, errInsufficient) {
					out[i] = outcome{reason: "insufficient_stock"}
					continue
				}
				return err
			}
			if err := sp.Commit(ctx); err != nil {
				return err
			}
			out[i] = outcome{accepted: true}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("naive batch: %w", err)
	}
	return out, nil
}
