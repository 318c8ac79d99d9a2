-- Cycle counts: what was counted against what the books said, the variance
-- (counted minus on hand before), and whether it exceeded the count's
-- threshold (variance_flagged: the counts to review). Shrinkage shows as
-- negative variances.
SELECT
  sku_id,
  store_id,
  event_id,
  occurred_at,
  on_hand_after AS counted_quantity,
  on_hand_after - quantity_delta AS on_hand_before,
  quantity_delta AS variance,
  variance_threshold,
  variance_flagged,
  user_id,
  reason
FROM `{{dataset}}.inventory_events`
WHERE event_type = 'STOCK_COUNTED'
