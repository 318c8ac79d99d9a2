package query

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/stocknotify"
)

// Limits of GetSalesHeatmap.
const (
	DefaultHeatmapSKUs    = 20
	MaxHeatmapSKUs        = 100
	DefaultHeatmapMinutes = 60
	MaxHeatmapMinutes     = 24 * 60
)

// GetSalesHeatmap implements QueryService: the SKUs that sold the most
// units in the window (sales and committed reservations, from the ledger
// by recorded_at, which a BRIN index narrows to the window's pages), and
// for each of them at each store its units sold and its level against the
// reorder point.
func (s *Service) GetSalesHeatmap(ctx context.Context, req *connect.Request[inventoryv1.GetSalesHeatmapRequest]) (*connect.Response[inventoryv1.GetSalesHeatmapResponse], error) {
	m := req.Msg
	v := &violations{}
	stores := m.GetStoreIds()
	for i, st := range stores {
		v.id(fmt.Sprintf("store_ids[%d]", i), st)
	}
	limit, minutes := int(m.GetSkuLimit()), int(m.GetWindowMinutes())
	switch {
	case limit == 0:
		limit = DefaultHeatmapSKUs
	case limit < 0 || limit > MaxHeatmapSKUs:
		v.add("sku_limit", fmt.Sprintf("1 to %d, got %d", MaxHeatmapSKUs, limit))
	}
	switch {
	case minutes == 0:
		minutes = DefaultHeatmapMinutes
	case minutes < 0 || minutes > MaxHeatmapMinutes:
		v.add("window_minutes", fmt.Sprintf("1 to %d, got %d", MaxHeatmapMinutes, minutes))
	}
	if err := v.err(); err != nil {
		return nil, s.connectError(err)
	}
	// A token scoped to stores sees its stores only: all of them when the
	// call names none; a scoped token without stores sees nothing.
	stores, err := scopedStores(ctx, stores, "read")
	if err != nil {
		return nil, err
	}
	if stores == nil {
		stores = []string{} // not NULL
	}
	rows, err := s.cfg.Pool.Query(ctx, `WITH sold AS (
			SELECT sku_id, store_id, sum(-quantity_delta) AS units FROM `+readmodel.Ledger+`
			WHERE recorded_at >= now() - make_interval(mins => $1) AND event_type = ANY($2)
			  AND (cardinality($3::text[]) = 0 OR store_id = ANY($3))
			GROUP BY sku_id, store_id),
		hot AS (
			SELECT sku_id, sum(units) AS units FROM sold GROUP BY sku_id ORDER BY sum(units) DESC, sku_id LIMIT $4),
		cells AS (
			SELECT h.sku_id, l.store_id, h.units AS hot_units, l.on_hand - l.reserved AS available FROM hot h
			JOIN `+readmodel.Levels+` l ON l.sku_id = h.sku_id
			WHERE cardinality($3::text[]) = 0 OR l.store_id = ANY($3))
		SELECT c.sku_id, c.store_id, COALESCE(s.units, 0), c.available, COALESCE(p.reorder_point, $5)
		FROM cells c
		LEFT JOIN sold s ON s.sku_id = c.sku_id AND s.store_id = c.store_id
		LEFT JOIN `+readmodel.ReorderPolicies+` p ON p.sku_id = c.sku_id AND p.store_id = c.store_id
		WHERE cardinality($3::text[]) > 0 OR c.store_id IN (SELECT store_id FROM sold)
		ORDER BY c.hot_units DESC, c.sku_id, c.store_id`,
		minutes, readmodel.SaleTypeNumbers(), stores, limit, stocknotify.DefaultReorderPoint)
	if err != nil {
		return nil, s.connectError(err)
	}
	defer rows.Close()
	resp := &inventoryv1.GetSalesHeatmapResponse{}
	seenStore := map[string]bool{}
	for rows.Next() {
		c := &inventoryv1.HeatmapCell{}
		if err := rows.Scan(&c.SkuId, &c.StoreId, &c.UnitsSold, &c.Available, &c.ReorderPoint); err != nil {
			return nil, s.connectError(err)
		}
		if n := len(resp.SkuIds); n == 0 || resp.SkuIds[n-1] != c.SkuId {
			resp.SkuIds = append(resp.SkuIds, c.SkuId)
		}
		if !seenStore[c.StoreId] {
			seenStore[c.StoreId] = true
			resp.StoreIds = append(resp.StoreIds, c.StoreId)
		}
		resp.Cells = append(resp.Cells, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.connectError(err)
	}
	slices.Sort(resp.StoreIds)
	return connect.NewResponse(resp), nil
}
