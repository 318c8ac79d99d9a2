package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/config"
)

// Commands are the CLI's subcommands, in the order help lists them.
var Commands = []Command{
	{Path: []string{"stock", "get"}, Args: "SKU STORE", nargs: 2, Summary: "show one store's stock of a SKU",
		Example: "tally stock get SKU-1 S1 --min-version 3", flags: stockGet},
	{Path: []string{"stock", "list"}, Args: "", nargs: 0, Summary: "list a store's levels (by SKU prefix) or a SKU's stores",
		Example: "tally stock list --store S1 --prefix SKU-\ntally stock list --sku SKU-1 --below 10", flags: stockList},
	{Path: []string{"stock", "history"}, Args: "SKU STORE", nargs: 2, Summary: "show the ledger of a SKU at a store, newest first",
		Example: "tally stock history SKU-1 S1 --limit 20", flags: stockHistory},
	{Path: []string{"stock", "as-of"}, Args: "SKU STORE TIME", nargs: 3, Summary: "show the on-hand of a SKU at a store at an instant (RFC 3339)",
		Example: "tally stock as-of SKU-1 S1 2026-11-27T09:00:00Z --basis occurred", flags: stockAsOf},
	{Path: []string{"sell"}, Args: "SKU STORE QUANTITY", nargs: 3, Summary: "record a sale",
		Example: "tally sell SKU-1 S1 2 --command-id till-7-0042", flags: unitCommand("sell")},
	{Path: []string{"return"}, Args: "SKU STORE QUANTITY", nargs: 3, Summary: "record a customer return",
		Example: "tally return SKU-1 S1 1 --reason 'wrong size'", flags: unitCommand("return")},
	{Path: []string{"receive"}, Args: "SKU STORE QUANTITY", nargs: 3, Summary: "record units received at a store",
		Example: "tally receive SKU-1 S1 100", flags: unitCommand("receive")},
	{Path: []string{"adjust"}, Args: "SKU STORE DELTA", nargs: 3, Summary: "correct a level by DELTA units (negative removes) with a reason code",
		Example: "tally adjust SKU-1 S1 -2 --reason-code damaged", flags: adjust},
	{Path: []string{"transfer"}, Args: "SKU FROM_STORE TO_STORE QUANTITY", nargs: 4, Summary: "move units between two stores",
		Example: "tally transfer SKU-1 S1 S2 10", flags: transfer},
	{Path: []string{"reserve"}, Args: "SKU STORE QUANTITY RESERVATION", nargs: 4, Summary: "hold units for a checkout until committed, released or expired",
		Example: "tally reserve SKU-1 S1 2 cart-42 --ttl 15m", flags: reserve},
	{Path: []string{"commit"}, Args: "SKU RESERVATION", nargs: 2, Summary: "turn a reservation into a sale",
		Example: "tally commit SKU-1 cart-42", flags: reservation("commit")},
	{Path: []string{"release"}, Args: "SKU RESERVATION", nargs: 2, Summary: "give a reservation's units back",
		Example: "tally release SKU-1 cart-42", flags: reservation("release")},
	{Path: []string{"policy", "set"}, Args: "SKU STORE", nargs: 2, Summary: "set when a SKU counts as low stock at a store and the level to reorder to",
		Example: "tally policy set SKU-1 S1 --reorder-point 20 --target 80", flags: policySet},
	{Path: []string{"watch"}, Args: "", nargs: 0, Summary: "follow low stock live: the items at or below their reorder point, then every crossing",
		Example: "tally watch --stores S1,S2 --prefix SKU-", flags: watch},
	{Path: []string{"status"}, Args: "", nargs: 0, Summary: "show how far the read model trails the log, its visibility and dead letters",
		Example: "tally status --json", flags: projectionStatus},
	{Path: []string{"dlq", "list"}, Args: "", nargs: 0, Summary: "list the newest records the projection skipped (dead letters)",
		Example: "tally dlq list", flags: dlqList},
	// Not an RPC: it reads the log and writes the read model itself, like
	// tally replay; the binary runs it (External).
	{Path: []string{"dlq", "replay"}, Summary: "retry the dead-lettered events once their cause is fixed (reads Kafka and PostgreSQL itself)",
		Example: "tally dlq replay --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally", External: true},
}

func stockGet(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var min int64
	config.Int64(fs, &min, "min-version", 0, "wait (up to 2 s) until the read model has this SKU version: the sku_version a command returned")
	return func(ctx context.Context, c *call, a []string) error {
		r, err := c.qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: a[0], StoreId: a[1], MinVersion: min})
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(r)
		}
		return c.levels([]*inventoryv1.StockLevel{r.GetLevel()})
	}
}

func (c *call) levels(ls []*inventoryv1.StockLevel) error {
	rows := make([][]string, 0, len(ls))
	for _, l := range ls {
		rows = append(rows, []string{l.GetSkuId(), l.GetStoreId(), itoa(l.GetOnHand()), itoa(l.GetReserved()), itoa(l.GetAvailable()), itoa(l.GetSkuVersion()), stamp(l.GetUpdatedAt())})
	}
	return c.table([]string{"SKU", "STORE", "ON HAND", "RESERVED", "AVAILABLE", "VERSION", "UPDATED"}, rows)
}

func stamp(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(stampLayout)
}

// stampLayout is RFC 3339 with microseconds, always as wide.
const stampLayout = "2006-01-02T15:04:05.000000Z07:00"

func stockList(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var store, sku, prefix string
	var below, limit int64
	config.String(fs, &store, "store", "", "list this store's SKUs (or --sku)")
	config.String(fs, &sku, "sku", "", "list this SKU's stores (or --store)")
	config.String(fs, &prefix, "prefix", "", "with --store: only SKUs starting with this")
	config.Int64(fs, &below, "below", -1, "only levels whose available quantity is below this (-1: all)")
	config.Int64(fs, &limit, "limit", 1000, "at most this many levels (pages are followed)")
	return func(ctx context.Context, c *call, _ []string) error {
		req := &inventoryv1.ListStockRequest{StoreId: store, SkuId: sku, SkuPrefix: prefix, PageSize: int32(min(limit, 1000))}
		if below >= 0 {
			req.Below = &below
		}
		var all []*inventoryv1.StockLevel
		for {
			r, err := c.qry.ListStock(ctx, req)
			if err != nil {
				return err
			}
			if c.json {
				if err := c.printJSON(r); err != nil {
					return err
				}
			}
			all = append(all, r.GetLevels()...)
			if r.GetNextPageToken() == "" || int64(len(all)) >= limit {
				break
			}
			req.PageToken = r.GetNextPageToken()
		}
		if c.json {
			return nil
		}
		return c.levels(all[:min(int64(len(all)), limit)])
	}
}

func stockHistory(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var limit int
	config.Int(fs, &limit, "limit", 20, "newest events to show (1 to 1000)")
	return func(ctx context.Context, c *call, a []string) error {
		r, err := c.qry.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: a[0], StoreId: a[1], PageSize: int32(limit)})
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(r)
		}
		var rows [][]string
		for _, e := range r.GetEvents() {
			rows = append(rows, []string{itoa(e.GetSkuVersion()), eventName(e.GetEventType()), signed(e.GetQuantityDelta()), itoa(e.GetOnHandAfter()), itoa(e.GetReservedAfter()), stamp(e.GetRecordedAt()), e.GetCommandId()})
		}
		return c.table([]string{"VERSION", "EVENT", "CHANGE", "ON HAND", "RESERVED", "RECORDED", "COMMAND"}, rows)
	}
}

func eventName(t inventoryv1.EventType) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_")), "_", " ")
}

func signed(n int64) string {
	if n > 0 {
		return "+" + itoa(n)
	}
	return itoa(n)
}

func stockAsOf(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var basis string
	config.String(fs, &basis, "basis", "recorded", "recorded (what Tally knew then) or occurred (what was on the shelf, late events included)")
	return func(ctx context.Context, c *call, a []string) error {
		at, err := time.Parse(time.RFC3339Nano, a[2])
		if err != nil {
			return fmt.Errorf("TIME must be RFC 3339, such as 2026-11-27T09:00:00Z: %w", err)
		}
		b, ok := inventoryv1.TimeBasis_value["TIME_BASIS_"+strings.ToUpper(basis)]
		if !ok {
			return fmt.Errorf("--basis must be recorded or occurred, got %q", basis)
		}
		r, err := c.qry.GetStockAsOf(ctx, &inventoryv1.GetStockAsOfRequest{SkuId: a[0], StoreId: a[1], AsOf: timestamppb.New(at), Basis: inventoryv1.TimeBasis(b)})
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(r)
		}
		return c.table([]string{"SKU", "STORE", "AS OF", "ON HAND", "VERSION"}, [][]string{{a[0], a[1], at.UTC().Format(stampLayout), itoa(r.GetOnHand()), itoa(r.GetSkuVersion())}})
	}
}

// writeFlags are the flags every command that writes takes.
type writeFlags struct {
	id, reason, user string
	expected         int64
}

func (w *writeFlags) register(fs *flag.FlagSet) {
	config.String(fs, &w.id, "command-id", "", "the command's id: the same id again is a safe retry, answered with the first result (default: a new one)")
	config.Int64(fs, &w.expected, "expected-version", -1, "refuse unless the SKU is at this version (optimistic concurrency; -1: any)")
	config.String(fs, &w.reason, "reason", "", "free-text reason, kept with the event")
	config.String(fs, &w.user, "user", "", "who did it (user_id), kept with the event")
}

func (w *writeFlags) expectedVersion() *int64 {
	if w.expected < 0 {
		return nil
	}
	return &w.expected
}

func unitCommand(kind string) func(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *call, []string) error {
		var w writeFlags
		w.register(fs)
		return func(ctx context.Context, c *call, a []string) error {
			q, err := parseInt("QUANTITY", a[2])
			if err != nil {
				return err
			}
			id := commandID(w.id)
			var r resulter
			switch kind {
			case "sell":
				r, err = c.cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: a[0], StoreId: a[1], Quantity: q, ExpectedVersion: w.expectedVersion(), Reason: w.reason, UserId: w.user})
			case "return":
				r, err = c.cmds.RecordReturn(ctx, &inventoryv1.RecordReturnRequest{CommandId: id, SkuId: a[0], StoreId: a[1], Quantity: q, ExpectedVersion: w.expectedVersion(), Reason: w.reason, UserId: w.user})
			default:
				r, err = c.cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: a[0], StoreId: a[1], Quantity: q, ExpectedVersion: w.expectedVersion(), Reason: w.reason, UserId: w.user})
			}
			if err != nil {
				return retryHint(err, id, w.id == "")
			}
			return c.answer(r)
		}
	}
}

// resulter is a command's response.
type resulter interface {
	protoMessage
	GetResult() *inventoryv1.CommandResult
}

func (c *call) answer(r resulter) error {
	if c.json {
		return c.printJSON(r)
	}
	res := r.GetResult()
	var rows [][]string
	for _, s := range res.GetStores() {
		note := ""
		if res.GetReplayed() {
			note = "replayed"
		}
		rows = append(rows, []string{res.GetSkuId(), s.GetStoreId(), itoa(res.GetSkuVersion()), itoa(s.GetOnHand()), itoa(s.GetReserved()), itoa(s.GetAvailable()), note})
	}
	return c.table([]string{"SKU", "STORE", "VERSION", "ON HAND", "RESERVED", "AVAILABLE", ""}, rows)
}

func adjust(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var w writeFlags
	var code string
	w.register(fs)
	config.String(fs, &code, "reason-code", "", "why: count_correction, damaged, shrinkage or expired (required)")
	return func(ctx context.Context, c *call, a []string) error {
		d, err := parseInt("DELTA", a[2])
		if err != nil {
			return err
		}
		rc, ok := inventoryv1.AdjustmentReason_value["ADJUSTMENT_REASON_"+strings.ToUpper(code)]
		if !ok || rc == 0 {
			return fmt.Errorf("--reason-code must be count_correction, damaged, shrinkage or expired, got %q", code)
		}
		id := commandID(w.id)
		r, err := c.cmds.AdjustStock(ctx, &inventoryv1.AdjustStockRequest{CommandId: id, SkuId: a[0], StoreId: a[1], QuantityDelta: d,
			AdjustmentReason: inventoryv1.AdjustmentReason(rc), ExpectedVersion: w.expectedVersion(), Reason: w.reason, UserId: w.user})
		if err != nil {
			return retryHint(err, id, w.id == "")
		}
		return c.answer(r)
	}
}

func transfer(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var w writeFlags
	w.register(fs)
	return func(ctx context.Context, c *call, a []string) error {
		q, err := parseInt("QUANTITY", a[3])
		if err != nil {
			return err
		}
		id := commandID(w.id)
		r, err := c.cmds.TransferStock(ctx, &inventoryv1.TransferStockRequest{CommandId: id, SkuId: a[0], FromStoreId: a[1], ToStoreId: a[2], Quantity: q,
			ExpectedVersion: w.expectedVersion(), Reason: w.reason, UserId: w.user})
		if err != nil {
			return retryHint(err, id, w.id == "")
		}
		return c.answer(r)
	}
}

func reserve(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var w writeFlags
	var ttl time.Duration
	w.register(fs)
	config.Duration(fs, &ttl, "ttl", 0, "release the units by itself after this long (0: the server's default)")
	return func(ctx context.Context, c *call, a []string) error {
		q, err := parseInt("QUANTITY", a[2])
		if err != nil {
			return err
		}
		id := commandID(w.id)
		req := &inventoryv1.ReserveRequest{CommandId: id, SkuId: a[0], StoreId: a[1], Quantity: q, ReservationId: a[3], ExpectedVersion: w.expectedVersion(), UserId: w.user}
		if ttl > 0 {
			req.Ttl = durationpb.New(ttl)
		}
		r, err := c.cmds.Reserve(ctx, req)
		if err != nil {
			return retryHint(err, id, w.id == "")
		}
		return c.answer(r)
	}
}

func reservation(kind string) func(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *call, []string) error {
		var id, user string
		config.String(fs, &id, "command-id", "", "the command's id: the same id again is a safe retry, answered with the first result (default: a new one)")
		config.String(fs, &user, "user", "", "who did it (user_id), kept with the event")
		return func(ctx context.Context, c *call, a []string) error {
			var r resulter
			var err error
			cid := commandID(id)
			if kind == "commit" {
				r, err = c.cmds.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{CommandId: cid, SkuId: a[0], ReservationId: a[1], UserId: user})
			} else {
				r, err = c.cmds.ReleaseReservation(ctx, &inventoryv1.ReleaseReservationRequest{CommandId: cid, SkuId: a[0], ReservationId: a[1], UserId: user})
			}
			if err != nil {
				return retryHint(err, cid, id == "")
			}
			return c.answer(r)
		}
	}
}

func policySet(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var id, user string
	var point, target, expected int64
	config.String(fs, &id, "command-id", "", "the command's id: the same id again is a safe retry, answered with the first result (default: a new one)")
	config.String(fs, &user, "user", "", "who did it (user_id), kept with the event")
	config.Int64(fs, &point, "reorder-point", -1, "low stock is available at or below this (required)")
	config.Int64(fs, &target, "target", -1, "the level a reorder should bring it back to (required, above --reorder-point)")
	config.Int64(fs, &expected, "expected-version", -1, "refuse unless the SKU is at this version (-1: any)")
	return func(ctx context.Context, c *call, a []string) error {
		if point < 0 || target < 0 {
			return fmt.Errorf("--reorder-point and --target are required")
		}
		cid := commandID(id)
		req := &inventoryv1.SetReorderPolicyRequest{CommandId: cid, SkuId: a[0], StoreId: a[1], ReorderPoint: point, TargetLevel: target, UserId: user}
		if expected >= 0 {
			req.ExpectedVersion = &expected
		}
		r, err := c.cmds.SetReorderPolicy(ctx, req)
		if err != nil {
			return retryHint(err, cid, id == "")
		}
		return c.answer(r)
	}
}

func watch(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	var stores, prefix string
	config.String(fs, &stores, "stores", "", "comma-separated stores to watch (empty: all the token may read)")
	config.String(fs, &prefix, "prefix", "", "only SKUs starting with this")
	return func(ctx context.Context, c *call, _ []string) error {
		req := &inventoryv1.WatchLowStockRequest{StoreIds: config.List(stores), SkuPrefix: prefix}
		st, err := c.qry.WatchLowStock(ctx, req)
		if err != nil {
			return err
		}
		if !c.json {
			fmt.Fprintf(c.out, "%-8s %-13s %-20s %-8s %9s %7s %9s\n", "WHEN", "STATE", "SKU", "STORE", "AVAILABLE", "REORDER", "RECOMMEND")
		}
		for {
			m, err := st.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil // interrupted
				}
				return err
			}
			if c.json {
				if err := c.printJSON(m); err != nil {
					return err
				}
				continue
			}
			if m.GetCaughtUp() {
				fmt.Fprintln(c.out, "-- live from here --")
				continue
			}
			it := m.GetItem()
			when := time.Now().Format("15:04:05")
			if m.GetInitial() {
				when = "initial"
			}
			state := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(it.GetState().String(), "LOW_STOCK_STATE_")), "_", " ")
			fmt.Fprintf(c.out, "%-8s %-13s %-20s %-8s %9d %7d %9d\n", when, state, it.GetSkuId(), it.GetStoreId(), it.GetAvailable(), it.GetReorderPoint(), it.GetRecommendedReorderQuantity())
		}
	}
}

func projectionStatus(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	return func(ctx context.Context, c *call, _ []string) error {
		s, err := c.qry.GetProjectionStatus(ctx, &inventoryv1.GetProjectionStatusRequest{})
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(s)
		}
		vis := "no projector transaction yet"
		if v := s.GetVisibility(); v != nil {
			vis = fmt.Sprintf("p50 %d ms, p99 %d ms (transaction at %s)", v.GetP50Ms(), v.GetP99Ms(), stamp(v.GetCommittedAt()))
		}
		fmt.Fprintf(c.out, "lag: %d records\nvisibility: %s\ndead letters: %d\n", s.GetTotalLag(), vis, s.GetDeadLetterCount())
		if len(s.GetBigqueryPartitions()) > 0 {
			fmt.Fprintf(c.out, "bigquery lag: %d records (as of its last flush)\n", s.GetBigqueryTotalLag())
		}
		fmt.Fprintln(c.out)
		var rows [][]string
		for _, p := range s.GetPartitions() {
			rows = append(rows, []string{itoa(int64(p.GetPartition())), itoa(p.GetNextOffset()), itoa(p.GetEndOffset()), itoa(p.GetLag()), stamp(p.GetNewestRecordedAt())})
		}
		return c.table([]string{"PARTITION", "NEXT", "END", "LAG", "NEWEST EVENT"}, rows)
	}
}

func dlqList(fs *flag.FlagSet) func(context.Context, *call, []string) error {
	return func(ctx context.Context, c *call, _ []string) error {
		s, err := c.qry.GetProjectionStatus(ctx, &inventoryv1.GetProjectionStatusRequest{})
		if err != nil {
			return err
		}
		if c.json {
			for _, d := range s.GetRecentDeadLetters() {
				if err := c.printJSON(d); err != nil {
					return err
				}
			}
			return nil
		}
		fmt.Fprintf(c.out, "%d dead letters in all; the newest:\n", s.GetDeadLetterCount())
		var rows [][]string
		for _, d := range s.GetRecentDeadLetters() {
			rows = append(rows, []string{fmt.Sprintf("%d/%d", d.GetPartition(), d.GetOffset()), d.GetSkuId(), itoa(d.GetSkuVersion()), d.GetSqlstate(), stamp(d.GetDeadLetteredAt()), d.GetError()})
		}
		return c.table([]string{"AT", "SKU", "VERSION", "SQLSTATE", "WHEN", "ERROR"}, rows)
	}
}
