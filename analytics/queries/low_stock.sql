-- Low stock below any threshold (bq query --parameter=threshold:INT64:10).
SELECT *
FROM `{{dataset}}.stock_position`
WHERE available < @threshold
ORDER BY available, sku_id, store_id
