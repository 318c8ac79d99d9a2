-- Stuck inventory: a store has units on hand that have not moved for 24
-- hours while the same SKU sold at other stores in those 24 hours (stock in
-- the wrong place, or on record but not on the shelf).
WITH last_change AS (
  SELECT sku_id, store_id, MAX(occurred_at) AS last_change_at
  FROM `{{dataset}}.inventory_events`
  WHERE quantity_delta != 0
  GROUP BY sku_id, store_id
),
recent_sales AS (
  SELECT sku_id, store_id, SUM(0 - quantity_delta) AS units
  FROM `{{dataset}}.inventory_events`
  WHERE event_type IN ({{sale_types}})
    AND occurred_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR)
  GROUP BY sku_id, store_id
)
SELECT
  c.sku_id,
  c.store_id,
  c.on_hand,
  l.last_change_at,
  SUM(r.units) AS units_sold_elsewhere_24h,
  COUNT(DISTINCT r.store_id) AS stores_selling_24h
FROM `{{dataset}}.current_inventory` AS c
JOIN last_change AS l ON l.sku_id = c.sku_id AND l.store_id = c.store_id
JOIN recent_sales AS r ON r.sku_id = c.sku_id AND r.store_id != c.store_id
WHERE c.on_hand > 0
  AND l.last_change_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR)
GROUP BY c.sku_id, c.store_id, c.on_hand, l.last_change_at
