-- Event volume per minute, by event type and store (occurred_at time).
SELECT
  TIMESTAMP_TRUNC(occurred_at, MINUTE) AS minute,
  event_type,
  store_id,
  COUNT(*) AS events,
  SUM(quantity_delta) AS units_delta
FROM `{{dataset}}.inventory_events`
GROUP BY minute, event_type, store_id
