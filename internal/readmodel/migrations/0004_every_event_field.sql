-- The ledger keeps every field of the event (readmodel.EventColumns), so
-- GetStockHistory answers with whole events: the reservation and reorder
-- policy fields join it. Events projected before this migration keep the
-- defaults here; `tally replay` rebuilds a read model with them from the log.
ALTER TABLE inventory_ledger
    ADD COLUMN reserved_delta         bigint      NOT NULL DEFAULT 0,
    ADD COLUMN reservation_id         text        NOT NULL DEFAULT '',
    ADD COLUMN reservation_expires_at timestamptz,
    ADD COLUMN reorder_point          bigint      NOT NULL DEFAULT 0,
    ADD COLUMN target_level           bigint      NOT NULL DEFAULT 0;
