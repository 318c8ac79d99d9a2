-- SKUs ranked by units sold over all stores in the last 24 hours and the
-- last 7 days. Top N: WHERE rank_24h <= N. Any other window:
-- queries/hot_skus.sql.
SELECT
  sku_id,
  units_sold_24h,
  units_sold_7d,
  stores_selling_7d,
  RANK() OVER (ORDER BY units_sold_24h DESC) AS rank_24h,
  RANK() OVER (ORDER BY units_sold_7d DESC) AS rank_7d
FROM (
  SELECT
    sku_id,
    SUM(IF(occurred_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR), 0 - quantity_delta, 0)) AS units_sold_24h,
    SUM(0 - quantity_delta) AS units_sold_7d,
    COUNT(DISTINCT store_id) AS stores_selling_7d
  FROM `{{dataset}}.inventory_events`
  WHERE event_type IN ({{sale_types}})
    AND occurred_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)
  GROUP BY sku_id
)
