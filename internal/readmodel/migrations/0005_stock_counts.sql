-- Cycle counts (EVENT_TYPE_STOCK_COUNTED): whether the count's variance
-- (its quantity_delta) needed review, and the threshold it was held to.
ALTER TABLE inventory_ledger
    ADD COLUMN variance_flagged   boolean NOT NULL DEFAULT false,
    ADD COLUMN variance_threshold bigint  NOT NULL DEFAULT 0;

-- Every cycle count, with what the books said before it: the counts whose
-- variance_flagged is set are the ones to review. (event_type 11 is
-- EVENT_TYPE_STOCK_COUNTED; a test checks the number.)
CREATE VIEW stock_count_variances AS
SELECT sku_id,
       store_id,
       sku_version,
       event_id,
       occurred_at,
       recorded_at,
       on_hand_after                  AS counted_quantity,
       on_hand_after - quantity_delta AS on_hand_before,
       quantity_delta                 AS variance,
       variance_threshold,
       variance_flagged,
       user_id,
       reason
FROM inventory_ledger
WHERE event_type = 11;
