-- Store x SKU stock, the source of a heatmap: one cell per (store, SKU).
SELECT
  store_id,
  sku_id,
  on_hand,
  reserved,
  on_hand - reserved AS available,
  CASE
    WHEN on_hand - reserved <= 0 THEN 'OUT'
    WHEN on_hand - reserved < 10 THEN 'LOW'
    WHEN on_hand - reserved < 50 THEN 'OK'
    ELSE 'HIGH'
  END AS band,
  updated_at
FROM `{{dataset}}.current_inventory`
