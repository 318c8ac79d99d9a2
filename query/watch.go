package query

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/apierr"
	"github.com/tally-oss/tally/internal/backoff"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/stocknotify"
)

const (
	// CoverDays is how many days of sales a recommended reorder covers.
	CoverDays = 14
	// resumeMargin covers projector transactions that committed out of
	// order: a resume looks back this much further than its token.
	resumeMargin = 5 * time.Second
)

// Hub LISTENs for the projector's announcements on one connection and fans
// them out to every watch of this instance.
type Hub struct {
	svc *Service
	// Buffer is each watch's queue; a watch whose queue is full is ended
	// with ResourceExhausted.
	buffer int

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	ready  chan struct{}
	closed bool
	// advanced is closed (and replaced) whenever a projector transaction
	// commits: min_version readers wait on it.
	advanced chan struct{}
}

// projected wakes every reader waiting for the projection to advance.
func (h *Hub) projected() {
	h.mu.Lock()
	close(h.advanced)
	h.advanced = make(chan struct{})
	h.mu.Unlock()
}

// advance returns a channel closed at the next projector commit.
func (h *Hub) advance() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.advanced
}

type subscription struct {
	// match picks the changes this watch wants, so others' bursts never
	// take room in its queue.
	match    func(stocknotify.Change) bool
	ch       chan stocknotify.Change
	overflow chan struct{}
	lost     chan struct{}
	once     sync.Once
}

// RunHub listens until ctx ends, reconnecting after failures. Watches that
// may have missed announcements during an outage are ended with
// Unavailable so their clients resume.
func (s *Service) RunHub(ctx context.Context) error {
	h := s.hub
	b := backoff.Backoff{Min: 500 * time.Millisecond}
	for {
		listening, err := h.listen(ctx)
		h.dropAll()
		if ctx.Err() != nil {
			return nil
		}
		if listening {
			b.Reset() // a new outage: retry quickly again
		}
		s.log.Warn("low-stock listener lost its connection; reconnecting", "error", err)
		if !b.Wait(ctx) {
			return nil
		}
	}
}

// listen LISTENs until its connection fails; listening says whether it
// got as far as listening.
func (h *Hub) listen(ctx context.Context) (listening bool, err error) {
	conn, err := h.svc.cfg.Pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	// The connection ends up in LISTEN state: never give it back.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+stocknotify.Channel+"; LISTEN "+stocknotify.ProjectedChannel+"; LISTEN "+heartbeatChannel); err != nil {
		return false, err
	}
	// A connection can die without an error reaching this one (a
	// half-open TCP connection, a failover that left it on the old
	// primary): heartbeats sent through the pool must come back through it,
	// or it is given up, and the cache with it.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	beat := &heartbeat{}
	beat.received.Store(time.Now().UnixNano())
	go h.beat(ctx, cancel, beat)
	h.svc.cache.start()
	h.mu.Lock()
	close(h.ready)
	h.mu.Unlock()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errNoHeartbeat) {
				err = cause
			}
			return true, err
		}
		// Anything delivered proves the connection delivers (under load
		// the projector's notifications do, when a heartbeat waits for
		// the pool).
		beat.received.Store(time.Now().UnixNano())
		if n.Channel == heartbeatChannel {
			continue
		}
		if n.Channel == stocknotify.ProjectedChannel {
			// Drop what changed before waking min_version readers.
			h.svc.cache.projected(stocknotify.DecodeProjected(n.Payload))
			h.projected()
			continue
		}
		changes, err := stocknotify.Decode(n.Payload)
		if err != nil {
			h.svc.log.Error("undecodable low-stock announcement", "error", err)
			continue
		}
		h.mu.Lock()
		for sub := range h.subs {
			for _, c := range changes {
				if !sub.match(c) {
					continue
				}
				select {
				case sub.ch <- c:
					continue
				default:
				}
				// A full queue: this watch is cut off (it ends with
				// ResourceExhausted once its handler is free) and gets
				// nothing more, so it cannot slow anyone down.
				sub.once.Do(func() { close(sub.overflow) })
				delete(h.subs, sub)
				break
			}
		}
		h.mu.Unlock()
	}
}

// heartbeatChannel carries the query instances' heartbeats: sent through
// the pool, received on the listening connection.
const heartbeatChannel = "tally_query_heartbeat"

var errNoHeartbeat = errors.New("no heartbeat came back through the listening connection")

type heartbeat struct {
	received atomic.Int64 // unix nanoseconds of the last notification delivered
}

// beat sends a heartbeat through the pool every HeartbeatInterval and ends
// the listener (cancel) when none came back for 5 intervals.
func (h *Hub) beat(ctx context.Context, cancel context.CancelCauseFunc, b *heartbeat) {
	every := h.svc.cfg.HeartbeatInterval
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if since := time.Since(time.Unix(0, b.received.Load())); since > 5*every {
			h.svc.log.Warn("the low-stock listener's connection stopped delivering; reconnecting (the level cache is off meanwhile)", "silent_for", since.Round(time.Millisecond))
			cancel(errNoHeartbeat)
			return
		}
		sctx, scancel := context.WithTimeout(ctx, every)
		_, _ = h.svc.cfg.Pool.Exec(sctx, "SELECT pg_notify($1, '')", heartbeatChannel)
		scancel()
	}
}

func (h *Hub) dropAll() {
	h.svc.cache.stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		close(sub.lost)
		delete(h.subs, sub)
	}
	h.ready = make(chan struct{})
}

// subscribe registers a watch once the listener is up.
func (h *Hub) subscribe(ctx context.Context, match func(stocknotify.Change) bool) (*subscription, error) {
	h.mu.Lock()
	ready := h.ready
	h.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
		return nil, errors.New("low-stock listener not connected")
	}
	sub := &subscription{match: match, ch: make(chan stocknotify.Change, h.buffer), overflow: make(chan struct{}), lost: make(chan struct{})}
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	return sub, nil
}

func (h *Hub) unsubscribe(sub *subscription) {
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
}

// watchFilter is a validated WatchLowStockRequest.
type watchFilter struct {
	stores    map[string]bool
	storeList []string
	prefix    string
	threshold *int64
}

func (f *watchFilter) matches(sku, store string) bool {
	return strings.HasPrefix(sku, f.prefix) && (len(f.stores) == 0 || f.stores[store])
}

func (f *watchFilter) point(reorderPoint int64) int64 {
	if f.threshold != nil {
		return *f.threshold
	}
	return reorderPoint
}

func stateOf(available, point int64) inventoryv1.LowStockState {
	switch {
	case available <= 0:
		return inventoryv1.LowStockState_LOW_STOCK_STATE_OUT_OF_STOCK
	case available <= point:
		return inventoryv1.LowStockState_LOW_STOCK_STATE_LOW
	}
	return inventoryv1.LowStockState_LOW_STOCK_STATE_RECOVERED
}

// RecommendedReorder is the documented formula:
// max(0, max(target, ceil(sales7/7 × CoverDays)) − available).
func RecommendedReorder(available, target, sales7 int64) int64 {
	cover := int64(math.Ceil(float64(sales7) / 7 * CoverDays))
	return max(0, max(target, cover)-available)
}

func encodeResume(t time.Time) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10)))
}

func decodeResume(s string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, false
	}
	us, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || us <= 0 {
		return time.Time{}, false
	}
	return time.UnixMicro(us), true
}

// WatchLowStock implements QueryService.
func (s *Service) WatchLowStock(ctx context.Context, req *connect.Request[inventoryv1.WatchLowStockRequest], stream *connect.ServerStream[inventoryv1.WatchLowStockResponse]) error {
	m := req.Msg
	stores, err := watchStores(ctx, m.GetStoreIds())
	if err != nil {
		return err
	}
	v := &violations{}
	f := &watchFilter{stores: map[string]bool{}, prefix: m.GetSkuPrefix(), threshold: m.Threshold}
	for i, st := range stores {
		v.id(fmt.Sprintf("store_ids[%d]", i), st)
		f.stores[st] = true
		f.storeList = append(f.storeList, st)
	}
	// A prefix of an id: what PostgreSQL's LIKE gets must be text it takes.
	if p := apierr.StoredIDProblem(m.GetSkuPrefix(), false); p != "" {
		v.add("sku_prefix", p)
	}
	if m.Threshold != nil && (m.GetThreshold() < 0 || m.GetThreshold() > stocknotify.WatchCeiling) {
		v.add("threshold", fmt.Sprintf("0 to %d, got %d", stocknotify.WatchCeiling, m.GetThreshold()))
	}
	var since time.Time
	if m.GetResumeToken() != "" {
		t, ok := decodeResume(m.GetResumeToken())
		if !ok {
			v.add("resume_token", "not a resume token of WatchLowStock")
		}
		since = t
	}
	if err := v.err(); err != nil {
		return s.connectError(err)
	}
	if s.hub == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("low-stock watching is not enabled on this instance"))
	}
	// Subscribe before reading the snapshot, so nothing committed in
	// between is missed; the per-item version check drops what the
	// snapshot already covered.
	sub, err := s.hub.subscribe(ctx, func(c stocknotify.Change) bool {
		return f.matches(c.SKU, c.Store) && stateOf(c.AvailableBefore, f.point(c.ReorderBefore)) != stateOf(c.Available, f.point(c.ReorderPoint))
	})
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer s.hub.unsubscribe(sub)

	seen := map[[2]string]int64{}
	// Resume tokens come from the database clock (projected_at is set by
	// it), never from ours, so every instance reads them the same way.
	initial, dbNow, err := s.lowStockSnapshot(ctx, f, since)
	if err != nil {
		return s.connectError(err)
	}
	token := encodeResume(dbNow)
	for _, it := range initial {
		seen[[2]string{it.GetSkuId(), it.GetStoreId()}] = it.GetSkuVersion()
		if err := stream.Send(&inventoryv1.WatchLowStockResponse{Item: it, Initial: true, ResumeToken: token}); err != nil {
			return err
		}
	}
	if err := stream.Send(&inventoryv1.WatchLowStockResponse{CaughtUp: true, ResumeToken: token}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.overflow:
			return connect.NewError(connect.CodeResourceExhausted, errors.New("this watch fell too far behind; reconnect with the last resume_token"))
		case <-sub.lost:
			return connect.NewError(connect.CodeUnavailable, errors.New("announcements were interrupted; reconnect with the last resume_token"))
		case c := <-sub.ch:
			key := [2]string{c.SKU, c.Store}
			if c.Version <= seen[key] {
				continue // the snapshot already showed this or a newer state
			}
			after := stateOf(c.Available, f.point(c.ReorderPoint))
			seen[key] = c.Version
			sales, now, err := s.sales7(ctx, c.SKU, c.Store)
			if err != nil {
				return s.connectError(err)
			}
			it := &inventoryv1.LowStockItem{
				SkuId: c.SKU, StoreId: c.Store, OnHand: c.OnHand, Reserved: c.Reserved, Available: c.Available,
				ReorderPoint: f.point(c.ReorderPoint), TargetLevel: c.TargetLevel, SalesLast_7Days: sales,
				RecommendedReorderQuantity: RecommendedReorder(c.Available, c.TargetLevel, sales),
				SkuVersion:                 c.Version, State: after,
			}
			// A live message's token is the database time it was sent at:
			// the change it reports was committed before that.
			if err := stream.Send(&inventoryv1.WatchLowStockResponse{Item: it, ResumeToken: encodeResume(now)}); err != nil {
				return err
			}
		}
	}
}

// lowStockSnapshot returns the items to send first: every item now at or
// below its point, or with a resume time, every item projected since
// (minus resumeMargin) in whatever state it is now. It also returns the
// database time the snapshot was read at.
func (s *Service) lowStockSnapshot(ctx context.Context, f *watchFilter, since time.Time) ([]*inventoryv1.LowStockItem, time.Time, error) {
	var stores any
	if len(f.storeList) > 0 {
		stores = f.storeList
	}
	var threshold any
	if f.threshold != nil {
		threshold = *f.threshold
	}
	var sinceArg any
	if !since.IsZero() {
		sinceArg = since.Add(-resumeMargin)
	}
	rows, err := s.cfg.Pool.Query(ctx, `
		SELECT s.sku_id, s.store_id, s.on_hand, s.reserved, s.sku_version,
		       COALESCE($3, p.reorder_point, $5), COALESCE(p.target_level, $6),
		       COALESCE((SELECT sum(-l.quantity_delta) FROM `+readmodel.Events+` l
		                 WHERE l.sku_id = s.sku_id AND l.store_id = s.store_id AND l.event_type = ANY($7)
		                   AND l.occurred_at > now() - interval '7 days' AND l.span_last_occurred > now() - interval '7 days'), 0),
		       now()
		FROM `+readmodel.Levels+` s
		LEFT JOIN `+readmodel.ReorderPolicies+` p ON p.sku_id = s.sku_id AND p.store_id = s.store_id
		WHERE ($1::text[] IS NULL OR s.store_id = ANY($1))
		  AND s.sku_id LIKE $2 || '%'
		  AND (CASE WHEN $4::timestamptz IS NULL
		            THEN s.on_hand - s.reserved <= COALESCE($3, p.reorder_point, $5)
		            ELSE s.projected_at >= $4 END)
		ORDER BY s.store_id, s.sku_id`,
		stores, likeEscape(f.prefix), threshold, sinceArg, stocknotify.DefaultReorderPoint, stocknotify.DefaultTargetLevel, readmodel.SaleTypeNumbers())
	if err != nil {
		return nil, time.Time{}, err
	}
	var out []*inventoryv1.LowStockItem
	var dbNow time.Time
	for rows.Next() {
		it := &inventoryv1.LowStockItem{}
		if err := rows.Scan(&it.SkuId, &it.StoreId, &it.OnHand, &it.Reserved, &it.SkuVersion, &it.ReorderPoint, &it.TargetLevel, &it.SalesLast_7Days, &dbNow); err != nil {
			return nil, time.Time{}, err
		}
		it.Available = it.OnHand - it.Reserved
		it.State = stateOf(it.Available, it.ReorderPoint)
		it.RecommendedReorderQuantity = RecommendedReorder(it.Available, it.TargetLevel, it.SalesLast_7Days)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, err
	}
	if dbNow.IsZero() {
		if err := s.cfg.Pool.QueryRow(ctx, "SELECT now()").Scan(&dbNow); err != nil {
			return nil, time.Time{}, err
		}
	}
	return out, dbNow, nil
}

// sales7 is the units sold at a store in the 7 days before now, and the
// database's now.
func (s *Service) sales7(ctx context.Context, sku, store string) (int64, time.Time, error) {
	var n int64
	var now time.Time
	err := s.cfg.Pool.QueryRow(ctx, `SELECT COALESCE(sum(-quantity_delta), 0), now() FROM `+readmodel.Events+`
		WHERE sku_id = $1 AND store_id = $2 AND event_type = ANY($3)
		  AND occurred_at > now() - interval '7 days' AND span_last_occurred > now() - interval '7 days'`, sku, store, readmodel.SaleTypeNumbers()).Scan(&n, &now)
	return n, now, err
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
