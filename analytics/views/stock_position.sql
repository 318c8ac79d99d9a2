-- Every (SKU, store) with its stock, reorder policy, last 7 days of sales
-- and the recommended reorder quantity, by the same formula as the
-- WatchLowStock API:
--   max(0, max(target_level, ceil(units_sold_7d / 7 * 14)) - available)
-- where target_level is the store's REORDER_POLICY_SET for the SKU, or 30.
WITH policy AS (
  SELECT sku_id, store_id, reorder_point, target_level
  FROM `{{dataset}}.inventory_events`
  WHERE event_type = 'REORDER_POLICY_SET'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY sku_id, store_id ORDER BY sku_version DESC) = 1
),
sales AS (
  SELECT sku_id, store_id, SUM(0 - quantity_delta) AS units_sold_7d
  FROM `{{dataset}}.inventory_events`
  WHERE event_type IN ({{sale_types}})
    AND occurred_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)
  GROUP BY sku_id, store_id
)
SELECT
  c.sku_id,
  c.store_id,
  c.on_hand,
  c.reserved,
  c.on_hand - c.reserved AS available,
  p.reorder_point,
  COALESCE(p.target_level, 30) AS target_level,
  COALESCE(s.units_sold_7d, 0) AS units_sold_7d,
  GREATEST(0, GREATEST(COALESCE(p.target_level, 30), CAST(CEIL(COALESCE(s.units_sold_7d, 0) / 7 * 14) AS INT64)) - (c.on_hand - c.reserved)) AS recommended_reorder_quantity,
  c.updated_at
FROM `{{dataset}}.current_inventory` AS c
LEFT JOIN policy AS p ON p.sku_id = c.sku_id AND p.store_id = c.store_id
LEFT JOIN sales AS s ON s.sku_id = c.sku_id AND s.store_id = c.store_id
