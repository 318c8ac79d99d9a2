-- Units sold and returned per SKU, store and day (occurred_at date, UTC).
-- A sale is a SALE or a RESERVATION_COMMITTED event. The demand forecast
-- (forecast/demand_arima_plus.sql) trains on this view.
SELECT
  sku_id,
  store_id,
  DATE(occurred_at) AS day,
  SUM(IF(event_type IN ({{sale_types}}), 0 - quantity_delta, 0)) AS units_sold,
  SUM(IF(event_type = 'RETURN', quantity_delta, 0)) AS units_returned,
  COUNTIF(event_type IN ({{sale_types}})) AS sales
FROM `{{dataset}}.inventory_events`
WHERE event_type IN ({{sale_types}}, 'RETURN')
GROUP BY sku_id, store_id, day
