// Package query is Tally's read side: QueryService answers lookups, history
// and as-of reads from the PostgreSQL read model. It never imports command/
// or projector/; it meets them in gen/ and in the database.
package query

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/apierr"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/readmodel"
)

// Limits of the read API.
const (
	MaxWait         = 2 * time.Second
	MaxBatchKeys    = 1000
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// RecentDeadLetters is how many of the newest dead letters
	// GetProjectionStatus lists.
	RecentDeadLetters = 10
)

// Config configures the query service.
type Config struct {
	Pool *pgxpool.Pool
	// Admin, when set, lets GetProjectionStatus read the log's end offsets.
	Admin *kadm.Client
	// Topic is the events topic. Default kafka.EventsTopic.
	Topic string
	// Consumer is the projection whose offsets GetProjectionStatus reports.
	// Default "postgres".
	Consumer string
	// BigQueryConsumer is the BigQuery projection's name in the offsets
	// it records in the read model. Default "bigquery".
	BigQueryConsumer string
	// PollInterval is how often a min_version read re-checks when no
	// projector commit wakes it first (the hub is not listening, or the
	// notification was lost). Default 50ms.
	PollInterval time.Duration
	// WatchBuffer is each low-stock watch's queue length. Default 1024.
	WatchBuffer int
	// HeartbeatInterval is how often the listener's connection is proved
	// alive by a notification sent to itself; 5 missed in a row end it
	// (and turn the level cache off until it listens again). Default 2s.
	HeartbeatInterval time.Duration
	// CacheLevels is how many levels the cache of hot levels holds:
	// 0 is DefaultCacheLevels, negative turns the cache off.
	CacheLevels int
	// Registerer, when set, gets the service's metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Service implements QueryService.
type Service struct {
	cfg     Config
	log     *slog.Logger
	hub     *Hub
	cache   *levelCache
	logRate logRate
}

// logRate is the log's growth between status reads.
type logRate struct {
	mu   sync.Mutex
	at   time.Time
	sum  int64
	rate float64
}

// sample returns records/s between the previous sample at least a second
// old and ends (the partitions' end offsets) at now.
func (r *logRate) sample(now time.Time, ends map[int32]int64) float64 {
	var sum int64
	for _, e := range ends {
		sum += e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() {
		r.at, r.sum = now, sum
		return 0
	}
	if d := now.Sub(r.at); d >= time.Second {
		r.rate = max(0, float64(sum-r.sum)/d.Seconds())
		r.at, r.sum = now, sum
	}
	return r.rate
}

var _ inventoryv1connect.QueryServiceHandler = (*Service)(nil)

// New returns the query service.
func New(cfg Config) *Service {
	if cfg.Topic == "" {
		cfg.Topic = kafka.EventsTopic
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "postgres"
	}
	if cfg.BigQueryConsumer == "" {
		cfg.BigQueryConsumer = "bigquery"
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = 1024
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.CacheLevels == 0 {
		cfg.CacheLevels = DefaultCacheLevels
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "query"), cache: newLevelCache(cfg.CacheLevels, cfg.Registerer)}
	s.hub = &Hub{svc: s, buffer: cfg.WatchBuffer, subs: map[*subscription]struct{}{}, ready: make(chan struct{}), advanced: make(chan struct{})}
	return s
}

const levelColumns = "s.sku_id, s.store_id, s.on_hand, s.reserved, s.sku_version, s.updated_at"

// scanLevel scans levelColumns, then extra columns into extra.
func scanLevel(row pgx.Row, extra ...any) (*inventoryv1.StockLevel, error) {
	l := &inventoryv1.StockLevel{}
	var at time.Time
	if err := row.Scan(append([]any{&l.SkuId, &l.StoreId, &l.OnHand, &l.Reserved, &l.SkuVersion, &at}, extra...)...); err != nil {
		return nil, err
	}
	l.Available = l.OnHand - l.Reserved
	l.UpdatedAt = timestamppb.New(at)
	return l, nil
}

// GetStock implements QueryService.
func (s *Service) GetStock(ctx context.Context, req *connect.Request[inventoryv1.GetStockRequest]) (*connect.Response[inventoryv1.GetStockResponse], error) {
	m := req.Msg
	v := &violations{}
	v.id("sku_id", m.GetSkuId())
	v.id("store_id", m.GetStoreId())
	if m.GetMinVersion() < 0 {
		v.add("min_version", "must be >= 0")
	}
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	if l, projected, ok := s.cache.get("GetStock", m.GetSkuId(), m.GetStoreId(), m.GetMinVersion()); ok {
		return connect.NewResponse(&inventoryv1.GetStockResponse{Level: l, ProjectedSkuVersion: projected}), nil
	}
	if m.GetMinVersion() > 0 {
		if err := s.waitForVersion(ctx, m.GetSkuId(), m.GetMinVersion()); err != nil {
			return nil, s.connectError(err)
		}
	}
	// The level and the SKU's newest projected version in one round trip.
	var projected int64
	gen := s.cache.begin(m.GetSkuId())
	l, err := scanLevel(s.cfg.Pool.QueryRow(ctx, `SELECT `+levelColumns+`, (SELECT max(sku_version) FROM `+readmodel.Levels+` WHERE sku_id = $1)
		FROM `+readmodel.Levels+` s WHERE s.sku_id = $1 AND s.store_id = $2`, m.GetSkuId(), m.GetStoreId()), &projected)
	if err != nil {
		return nil, s.connectError(notFound(err, m.GetSkuId(), m.GetStoreId()))
	}
	s.cache.fill(gen, l, projected)
	return connect.NewResponse(&inventoryv1.GetStockResponse{Level: l, ProjectedSkuVersion: projected}), nil
}

// waitForVersion waits until the SKU's projected version reaches min, up
// to MaxWait or the call's deadline.
func (s *Service) waitForVersion(ctx context.Context, sku string, min int64) error {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var projected int64
	for {
		// Take the wake-up channel before reading, so a commit between the
		// read and the wait is not missed.
		advanced := s.hub.advance()
		var v int64
		err := s.cfg.Pool.QueryRow(ctx, "SELECT COALESCE(max(sku_version), 0) FROM "+readmodel.Levels+" WHERE sku_id = $1", sku).Scan(&v)
		switch {
		case err == nil:
			projected = v
		case errors.Is(err, pgx.ErrNoRows):
		case ctx.Err() != nil:
			return &BehindError{SKU: sku, MinVersion: min, Projected: projected, cause: ctx.Err()}
		default:
			return err
		}
		if projected >= min {
			return nil
		}
		select {
		case <-advanced:
		case <-tick.C:
		case <-ctx.Done():
			return &BehindError{SKU: sku, MinVersion: min, Projected: projected, cause: ctx.Err()}
		}
	}
}

// BatchGetStock implements QueryService.
func (s *Service) BatchGetStock(ctx context.Context, req *connect.Request[inventoryv1.BatchGetStockRequest]) (*connect.Response[inventoryv1.BatchGetStockResponse], error) {
	keys := req.Msg.GetKeys()
	v := &violations{}
	if len(keys) == 0 || len(keys) > MaxBatchKeys {
		v.add("keys", fmt.Sprintf("1 to %d keys, got %d", MaxBatchKeys, len(keys)))
	}
	skus, stores := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		v.id(fmt.Sprintf("keys[%d].sku_id", i), k.GetSkuId())
		v.id(fmt.Sprintf("keys[%d].store_id", i), k.GetStoreId())
		skus[i], stores[i] = k.GetSkuId(), k.GetStoreId()
	}
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	// Held levels from the cache, the rest from PostgreSQL in one query.
	levels := make([]*inventoryv1.StockLevel, len(keys))
	var idx []int
	var gens []generation
	for i, k := range keys {
		if l, ok := s.cache.level(k.GetSkuId(), k.GetStoreId()); ok {
			levels[i] = l
			continue
		}
		idx = append(idx, i)
		gens = append(gens, s.cache.begin(k.GetSkuId()))
	}
	if s.cache.enabled() {
		s.cache.count("BatchGetStock", "hit", len(keys)-len(idx))
		s.cache.count("BatchGetStock", "miss", len(idx))
	} else {
		s.cache.count("BatchGetStock", "off", len(keys))
	}
	if len(idx) > 0 {
		skus, stores := make([]string, len(idx)), make([]string, len(idx))
		for j, i := range idx {
			skus[j], stores[j] = keys[i].GetSkuId(), keys[i].GetStoreId()
		}
		rows, err := s.cfg.Pool.Query(ctx, `SELECT `+levelColumns+`, k.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(sku_id, store_id, n)
			JOIN `+readmodel.Levels+` s ON s.sku_id = k.sku_id AND s.store_id = k.store_id ORDER BY k.n`, skus, stores)
		if err != nil {
			return nil, s.connectError(err)
		}
		for rows.Next() {
			var n int64
			l, err := scanLevel(rows, &n)
			if err != nil {
				return nil, s.connectError(err)
			}
			levels[idx[n-1]] = l
			s.cache.fill(gens[n-1], l, 0)
		}
		if err := rows.Err(); err != nil {
			return nil, s.connectError(err)
		}
	}
	resp := &inventoryv1.BatchGetStockResponse{}
	for i, l := range levels {
		if l != nil {
			resp.Levels = append(resp.Levels, l)
		} else {
			resp.Missing = append(resp.Missing, keys[i])
		}
	}
	return connect.NewResponse(resp), nil
}

// pageToken is the keyset cursor of a list: the last key returned and the
// filter it belongs to, so a token cannot be replayed with other filters.
type pageToken struct {
	Filter string `json:"f"`
	A      string `json:"a,omitempty"`
	B      string `json:"b,omitempty"`
	V      int64  `json:"v,omitempty"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s, filter string, v *violations) pageToken {
	var t pageToken
	if s == "" {
		return t
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	// A and B are ids the keyset compares in SQL: a forged one with a NUL
	// would be PostgreSQL's error (INTERNAL), not the client's.
	if err != nil || t.Filter != filter || apierr.StoredIDProblem(t.A, false) != "" || apierr.StoredIDProblem(t.B, false) != "" {
		v.add("page_token", "not a page token of this request (tokens are only valid with the same filters)")
	}
	return t
}

func pageSize(n int32, v *violations) int {
	switch {
	case n == 0:
		return DefaultPageSize
	case n < 0 || n > MaxPageSize:
		v.add("page_size", fmt.Sprintf("1 to %d, got %d", MaxPageSize, n))
	}
	return int(n)
}

// ListStock implements QueryService.
func (s *Service) ListStock(ctx context.Context, req *connect.Request[inventoryv1.ListStockRequest]) (*connect.Response[inventoryv1.ListStockResponse], error) {
	m := req.Msg
	v := &violations{}
	byStore := m.GetStoreId() != ""
	switch {
	case byStore == (m.GetSkuId() != ""):
		v.add("store_id", "exactly one of store_id and sku_id is required")
	case byStore:
		v.id("store_id", m.GetStoreId())
	default:
		v.id("sku_id", m.GetSkuId())
	}
	if m.GetSkuPrefix() != "" {
		if !byStore {
			v.add("sku_prefix", "goes with store_id (it narrows a store's SKUs)")
		} else if p := apierr.StoredIDProblem(m.GetSkuPrefix(), false); p != "" {
			v.add("sku_prefix", p)
		}
	}
	size := pageSize(m.GetPageSize(), v)
	filter := fmt.Sprintf("list|%s|%s|%t|%d|%s", m.GetStoreId(), m.GetSkuId(), m.Below != nil, m.GetBelow(), m.GetSkuPrefix())
	tok := decodeToken(m.GetPageToken(), filter, v)
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	below := int64(1 << 62)
	if m.Below != nil {
		below = m.GetBelow()
	}
	var q string
	if byStore {
		// Every id starting with the prefix sorts at or after it (ids
		// are COLLATE "C").
		q = `SELECT ` + levelColumns + ` FROM ` + readmodel.Levels + ` s WHERE s.store_id = $1 AND s.sku_id > $2
			AND s.on_hand - s.reserved < $3 AND s.sku_id >= $5 AND starts_with(s.sku_id, $5) ORDER BY s.sku_id LIMIT $4`
	} else {
		q = `SELECT ` + levelColumns + ` FROM ` + readmodel.Levels + ` s WHERE s.sku_id = $1 AND s.store_id > $2
			AND s.on_hand - s.reserved < $3 AND $5 = '' ORDER BY s.store_id LIMIT $4`
	}
	rows, err := s.cfg.Pool.Query(ctx, q, m.GetStoreId()+m.GetSkuId(), tok.A, below, size+1, m.GetSkuPrefix())
	if err != nil {
		return nil, s.connectError(err)
	}
	resp := &inventoryv1.ListStockResponse{}
	for rows.Next() {
		l, err := scanLevel(rows)
		if err != nil {
			return nil, s.connectError(err)
		}
		resp.Levels = append(resp.Levels, l)
	}
	if err := rows.Err(); err != nil {
		return nil, s.connectError(err)
	}
	if len(resp.Levels) > size {
		resp.Levels = resp.Levels[:size]
		last := resp.Levels[size-1]
		next := pageToken{Filter: filter, A: last.SkuId}
		if !byStore {
			next.A = last.StoreId
		}
		resp.NextPageToken = encodeToken(next)
	}
	return connect.NewResponse(resp), nil
}

// GetStockHistory implements QueryService.
func (s *Service) GetStockHistory(ctx context.Context, req *connect.Request[inventoryv1.GetStockHistoryRequest]) (*connect.Response[inventoryv1.GetStockHistoryResponse], error) {
	m := req.Msg
	v := &violations{}
	v.id("sku_id", m.GetSkuId())
	v.id("store_id", m.GetStoreId())
	size := pageSize(m.GetPageSize(), v)
	filter := "history|" + m.GetSkuId() + "|" + m.GetStoreId()
	tok := decodeToken(m.GetPageToken(), filter, v)
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	before := int64(1 << 62)
	if m.GetPageToken() != "" {
		before = tok.V
	}
	// The page is the newest size+1 events before the token's version. If
	// the rows (the months not compacted, which hold the newest events)
	// have size+1 of them, no event older than the oldest of those is on
	// the page: only the chunks reaching above it are unpacked (a hot
	// pair's month is a chunk of thousands of events).
	rows, err := s.cfg.Pool.Query(ctx, `SELECT `+readmodel.LedgerSelect+` FROM `+readmodel.Events+`
		WHERE sku_id = $1 AND store_id = $2 AND sku_version < $3 AND span_first_version < $3
		  AND sku_version >= `+historyFloor+` AND span_last_version >= `+historyFloor+`
		ORDER BY sku_version DESC LIMIT $4`,
		m.GetSkuId(), m.GetStoreId(), before, size+1)
	if err != nil {
		return nil, s.connectError(err)
	}
	resp := &inventoryv1.GetStockHistoryResponse{}
	for rows.Next() {
		e, err := readmodel.ScanEvent(rows)
		if err != nil {
			return nil, s.connectError(err)
		}
		resp.Events = append(resp.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.connectError(err)
	}
	if len(resp.Events) > size {
		resp.Events = resp.Events[:size]
		resp.NextPageToken = encodeToken(pageToken{Filter: filter, V: resp.Events[size-1].GetSkuVersion()})
		return connect.NewResponse(resp), nil
	}
	// The end of the ledger: of the pair's history, or of what retention
	// left of it.
	more, err := s.historyEnd(ctx, m, resp.Events)
	if err != nil {
		return nil, s.connectError(err)
	}
	if more {
		resp.NextPageToken = encodeToken(pageToken{Filter: filter, V: resp.Events[len(resp.Events)-1].GetSkuVersion()})
	}
	return connect.NewResponse(resp), nil
}

// historyFloor is, in a history query (pair $1, $2, versions below $3,
// page of $4), the oldest version the page can hold: that of the $4-th
// newest row, or 0 when the rows have fewer.
const historyFloor = `COALESCE((SELECT sku_version FROM ` + readmodel.Ledger + `
	WHERE sku_id = $1 AND store_id = $2 AND sku_version < $3 ORDER BY sku_version DESC OFFSET $4 - 1 LIMIT 1), 0)`

// historyEnd finishes a history page that reached the end of the ledger's
// rows of the pair. With nothing ever dropped that is the pair's whole
// history: no next page, and no rows at all is NOT_FOUND. Once retention
// has dropped months, older events may have been dropped, and which pairs
// had any is not kept: a page that ends with events other than the SKU's
// first gets a next page token, and the page after the last retained
// event (or a first page of a pair the levels know but the ledger no
// longer holds) answers OUT_OF_RANGE, saying how far back the read model
// goes. more says the page, which holds events, gets a next page token.
func (s *Service) historyEnd(ctx context.Context, m *inventoryv1.GetStockHistoryRequest, events []*inventoryv1.InventoryEvent) (more bool, err error) {
	retained, err := readmodel.RetainedFrom(ctx, s.cfg.Pool)
	switch {
	case err != nil:
		return false, err
	case len(events) > 0:
		return !retained.IsZero() && events[len(events)-1].GetSkuVersion() > 1, nil
	case retained.IsZero() && m.GetPageToken() != "":
		return false, nil
	case retained.IsZero():
		return false, &NotFoundError{SKU: m.GetSkuId(), Store: m.GetStoreId()}
	case m.GetPageToken() == "":
		var exists bool
		if err := s.cfg.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+readmodel.Levels+" WHERE sku_id = $1 AND store_id = $2)",
			m.GetSkuId(), m.GetStoreId()).Scan(&exists); err != nil {
			return false, err
		}
		if !exists {
			return false, &NotFoundError{SKU: m.GetSkuId(), Store: m.GetStoreId()}
		}
	}
	return false, &NotRetainedError{RetainedFrom: retained}
}

// GetStockAsOf implements QueryService.
func (s *Service) GetStockAsOf(ctx context.Context, req *connect.Request[inventoryv1.GetStockAsOfRequest]) (*connect.Response[inventoryv1.GetStockAsOfResponse], error) {
	m := req.Msg
	v := &violations{}
	v.id("sku_id", m.GetSkuId())
	v.id("store_id", m.GetStoreId())
	if m.GetAsOf() == nil || m.GetAsOf().CheckValid() != nil {
		v.add("as_of", "a valid timestamp is required")
	}
	basis := m.GetBasis()
	if basis == inventoryv1.TimeBasis_TIME_BASIS_UNSPECIFIED {
		basis = inventoryv1.TimeBasis_TIME_BASIS_RECORDED
	}
	if _, ok := inventoryv1.TimeBasis_name[int32(basis)]; !ok {
		v.add("basis", "RECORDED or OCCURRED")
	}
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	at := m.GetAsOf().AsTime()
	var (
		exists   bool
		retained *time.Time
	)
	if err := s.cfg.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+readmodel.Levels+" WHERE sku_id = $1 AND store_id = $2), (SELECT retained_from FROM ledger_retention)",
		m.GetSkuId(), m.GetStoreId()).Scan(&exists, &retained); err != nil {
		return nil, s.connectError(err)
	}
	if !exists {
		return nil, s.connectError(&NotFoundError{SKU: m.GetSkuId(), Store: m.GetStoreId()})
	}
	if retained != nil && at.Before(*retained) {
		return nil, s.connectError(&NotRetainedError{RetainedFrom: *retained})
	}
	resp := &inventoryv1.GetStockAsOfResponse{Basis: basis}
	var err error
	switch {
	case basis == inventoryv1.TimeBasis_TIME_BASIS_RECORDED:
		// The newest event recorded by then: not older than the newest
		// such row, so only the chunks reaching above it are unpacked.
		err = s.cfg.Pool.QueryRow(ctx, `SELECT on_hand_after, sku_version FROM `+readmodel.Events+`
			WHERE sku_id = $1 AND store_id = $2 AND recorded_at <= $3 AND span_first_recorded <= $3
			  AND sku_version >= `+asOfFloor+` AND span_last_version >= `+asOfFloor+`
			ORDER BY sku_version DESC LIMIT 1`,
			m.GetSkuId(), m.GetStoreId(), at).Scan(&resp.OnHand, &resp.SkuVersion)
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil // nothing had happened yet: 0
			if retained != nil {
				// Or it had, in a month retention dropped.
				resp.OnHand, resp.SkuVersion, err = s.beforeRetained(ctx, m.GetSkuId(), m.GetStoreId())
			}
		}
	case retained == nil:
		err = s.cfg.Pool.QueryRow(ctx, `SELECT COALESCE(sum(quantity_delta), 0) FROM `+readmodel.Events+`
			WHERE sku_id = $1 AND store_id = $2 AND occurred_at <= $3 AND span_first_occurred <= $3`, m.GetSkuId(), m.GetStoreId(), at).Scan(&resp.OnHand)
	default:
		// The dropped events' deltas are not in the ledger but are in the
		// level, and each of them occurred before at: it was recorded
		// before the retained range, and an event occurs before it is
		// recorded. So: the level less what occurred after at.
		err = s.cfg.Pool.QueryRow(ctx, `SELECT l.on_hand - COALESCE((SELECT sum(quantity_delta) FROM `+readmodel.Events+`
			WHERE sku_id = $1 AND store_id = $2 AND occurred_at > $3 AND span_last_occurred > $3), 0)
			FROM `+readmodel.Levels+` l WHERE l.sku_id = $1 AND l.store_id = $2`, m.GetSkuId(), m.GetStoreId(), at).Scan(&resp.OnHand)
	}
	if err != nil {
		return nil, s.connectError(err)
	}
	return connect.NewResponse(resp), nil
}

// asOfFloor is, in an as-of query (pair $1, $2, recorded by $3), the
// version of the newest row recorded by then, or 0.
const asOfFloor = `COALESCE((SELECT sku_version FROM ` + readmodel.Ledger + `
	WHERE sku_id = $1 AND store_id = $2 AND recorded_at <= $3 ORDER BY sku_version DESC LIMIT 1), 0)`

// beforeRetained is a pair's on_hand just before its oldest event in the
// ledger, when retention dropped the events before it: that event's
// on_hand less its delta (the version that set it is not known: 0); with
// no event left, the level and its version.
func (s *Service) beforeRetained(ctx context.Context, sku, store string) (onHand, version int64, err error) {
	err = s.cfg.Pool.QueryRow(ctx, `SELECT on_hand_after - quantity_delta, 0::bigint FROM `+readmodel.Events+`
		WHERE sku_id = $1 AND store_id = $2 ORDER BY sku_version LIMIT 1`, sku, store).Scan(&onHand, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.cfg.Pool.QueryRow(ctx, `SELECT on_hand, sku_version FROM `+readmodel.Levels+`
			WHERE sku_id = $1 AND store_id = $2`, sku, store).Scan(&onHand, &version)
	}
	return onHand, version, err
}

// GetProjectionStatus implements QueryService.
func (s *Service) GetProjectionStatus(ctx context.Context, _ *connect.Request[inventoryv1.GetProjectionStatusRequest]) (*connect.Response[inventoryv1.GetProjectionStatusResponse], error) {
	type part struct {
		next   int64
		newest *time.Time
	}
	parts, bq := map[int32]part{}, map[int32]part{}
	rows, err := s.cfg.Pool.Query(ctx, "SELECT consumer, log_partition, next_offset, newest_recorded_at, visibility_p50_ms, visibility_p99_ms, updated_at FROM "+readmodel.Offsets+" WHERE consumer IN ($1, $2)",
		s.cfg.Consumer, s.cfg.BigQueryConsumer)
	if err != nil {
		return nil, s.connectError(err)
	}
	var (
		consumer   string
		p          int32
		next       int64
		newest     *time.Time
		p50, p99   *int64
		updated    time.Time
		visibility *inventoryv1.Visibility
	)
	if _, err := pgx.ForEachRow(rows, []any{&consumer, &p, &next, &newest, &p50, &p99, &updated}, func() error {
		if consumer != s.cfg.Consumer {
			bq[p] = part{next, newest}
			return nil
		}
		parts[p] = part{next, newest}
		// The newest transaction's, over all partitions.
		if p50 != nil && p99 != nil && (visibility == nil || updated.After(visibility.CommittedAt.AsTime())) {
			visibility = &inventoryv1.Visibility{P50Ms: *p50, P99Ms: *p99, CommittedAt: timestamppb.New(updated)}
		}
		return nil
	}); err != nil {
		return nil, s.connectError(err)
	}
	ends := map[int32]int64{}
	if s.cfg.Admin != nil {
		lo, err := s.cfg.Admin.ListCommittedOffsets(ctx, s.cfg.Topic)
		if err != nil {
			return nil, s.connectError(fmt.Errorf("%w: list end offsets: %w", errLogUnavailable, err))
		}
		lo.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				ends[o.Partition] = o.Offset
				if _, ok := parts[o.Partition]; !ok {
					parts[o.Partition] = part{}
				}
			}
		})
	}
	resp := &inventoryv1.GetProjectionStatusResponse{Visibility: visibility}
	now := time.Now()
	if s.cfg.Admin != nil {
		resp.LogRecordsPerSecond = s.logRate.sample(now, ends)
	}
	statuses := func(parts map[int32]part) (out []*inventoryv1.PartitionStatus, total int64) {
		for _, p := range slices.Sorted(maps.Keys(parts)) {
			pt := parts[p]
			ps := &inventoryv1.PartitionStatus{Partition: p, NextOffset: pt.next, EndOffset: ends[p]}
			if ps.EndOffset > ps.NextOffset {
				ps.Lag = ps.EndOffset - ps.NextOffset
			}
			if pt.newest != nil {
				ps.NewestRecordedAt = timestamppb.New(*pt.newest)
				ps.NewestAgeMs = now.Sub(*pt.newest).Milliseconds()
			}
			total += ps.Lag
			out = append(out, ps)
		}
		return out, total
	}
	resp.Partitions, resp.TotalLag = statuses(parts)
	if len(bq) > 0 {
		for p := range ends {
			if _, ok := bq[p]; !ok {
				bq[p] = part{}
			}
		}
		resp.BigqueryPartitions, resp.BigqueryTotalLag = statuses(bq)
	}
	if err := s.deadLetters(ctx, resp); err != nil {
		return nil, s.connectError(err)
	}
	return connect.NewResponse(resp), nil
}

// deadLetters adds the count and the newest of the records the projection
// skipped (projection_dead_letters, written by the projector) to resp.
func (s *Service) deadLetters(ctx context.Context, resp *inventoryv1.GetProjectionStatusResponse) error {
	if err := s.cfg.Pool.QueryRow(ctx, "SELECT count(*) FROM "+readmodel.DeadLetters+" WHERE consumer = $1", s.cfg.Consumer).Scan(&resp.DeadLetterCount); err != nil {
		return err
	}
	if resp.DeadLetterCount == 0 {
		return nil
	}
	rows, err := s.cfg.Pool.Query(ctx, `SELECT log_partition, log_offset, COALESCE(event_id::text, ''), COALESCE(sku_id, ''),
		COALESCE(sku_version, 0), error, COALESCE(sqlstate, ''), dead_lettered_at
		FROM `+readmodel.DeadLetters+` WHERE consumer = $1
		ORDER BY dead_lettered_at DESC, log_partition DESC, log_offset DESC LIMIT $2`, s.cfg.Consumer, RecentDeadLetters)
	if err != nil {
		return err
	}
	resp.RecentDeadLetters, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*inventoryv1.DeadLetter, error) {
		d := &inventoryv1.DeadLetter{}
		var at time.Time
		err := row.Scan(&d.Partition, &d.Offset, &d.EventId, &d.SkuId, &d.SkuVersion, &d.Error, &d.Sqlstate, &at)
		d.DeadLetteredAt = timestamppb.New(at)
		return d, err
	})
	return err
}

// violations collects every problem with a request's fields.
type violations struct{ list []apierr.Violation }

func (v *violations) add(field, desc string) {
	v.list = append(v.list, apierr.Violation{Field: field, Description: desc})
}

// id checks an id a read names: by the rule of every id ever written
// (apierr.StoredIDProblem), so ids accepted before the command side refused
// invisible characters can still be read.
func (v *violations) id(field, s string) {
	if p := apierr.StoredIDProblem(s, true); p != "" {
		v.add(field, p)
	}
}

func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	return &InvalidError{What: "request", Violations: v.list}
}
