-- Items with fewer than 10 units available, with the recommended reorder
-- quantity. Another threshold: queries/low_stock.sql (@threshold).
SELECT *
FROM `{{dataset}}.stock_position`
WHERE available < 10
