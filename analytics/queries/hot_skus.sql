-- Top @top_n SKUs by units sold between @window_start and @window_end.
SELECT sku_id, SUM(0 - quantity_delta) AS units_sold, COUNT(DISTINCT store_id) AS stores
FROM `{{dataset}}.inventory_events`
WHERE event_type IN ({{sale_types}})
  AND occurred_at >= @window_start AND occurred_at < @window_end
GROUP BY sku_id
ORDER BY units_sold DESC, sku_id
LIMIT @top_n
