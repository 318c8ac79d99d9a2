-- Demand forecast per SKU and store with BigQuery ML ARIMA_PLUS, trained on
-- the daily_sales view (two years of history; days without sales are
-- filled with 0 so the series is regular). Run it on BigQuery (the
-- emulator has no BigQuery ML), e.g. nightly as a scheduled query.
CREATE OR REPLACE MODEL `{{dataset}}.demand_forecast`
OPTIONS (
  model_type = 'ARIMA_PLUS',
  time_series_timestamp_col = 'day',
  time_series_data_col = 'units_sold',
  time_series_id_col = ['sku_id', 'store_id'],
  data_frequency = 'DAILY',
  horizon = 28,
  auto_arima = TRUE,
  holiday_region = 'US'
) AS
WITH series AS (
  SELECT sku_id, store_id, MIN(day) AS first_day
  FROM `{{dataset}}.daily_sales`
  WHERE day >= DATE_SUB(CURRENT_DATE(), INTERVAL 730 DAY)
  GROUP BY sku_id, store_id
)
SELECT
  TIMESTAMP(d) AS day,
  s.sku_id,
  s.store_id,
  COALESCE(ds.units_sold, 0) AS units_sold
FROM series AS s
CROSS JOIN UNNEST(GENERATE_DATE_ARRAY(s.first_day, DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY))) AS d
LEFT JOIN `{{dataset}}.daily_sales` AS ds
  ON ds.sku_id = s.sku_id AND ds.store_id = s.store_id AND ds.day = d;

-- The next 28 days per SKU and store, with a 90% interval.
SELECT sku_id, store_id, forecast_timestamp, forecast_value,
       prediction_interval_lower_bound, prediction_interval_upper_bound
FROM ML.FORECAST(MODEL `{{dataset}}.demand_forecast`, STRUCT(28 AS horizon, 0.9 AS confidence_level))
ORDER BY sku_id, store_id, forecast_timestamp;
