-- Phantom inventory: sales recorded when the store had no stock on record
-- (on_hand before the sale <= 0), so its records are wrong somewhere: an
-- unrecorded receipt or transfer, or a count to redo. Offline tills record
-- such sales with allow_negative.
SELECT
  sku_id,
  store_id,
  event_id,
  occurred_at,
  0 - quantity_delta AS units_sold,
  on_hand_after - quantity_delta AS on_hand_before,
  on_hand_after,
  allow_negative
FROM `{{dataset}}.inventory_events`
WHERE event_type IN ({{sale_types}})
  AND on_hand_after - quantity_delta <= 0
