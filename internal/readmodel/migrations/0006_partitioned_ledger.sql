-- The ledger, partitioned by month of recorded_at (UTC), so that history
-- older than --history-retention is dropped a month at a time (DROP TABLE of
-- a partition: no DELETE, no vacuum, no bloat) and BigQuery keeps the rest.
-- See DESIGN.md, "Ledger partitions and retention".
--
-- The existing ledger is copied into the partitioned one in this
-- transaction: minutes per ten million rows, with the projector stopped
-- (tally migrate runs before the roles start). For a very large ledger,
-- `tally replay` into a fresh database is the alternative.

DROP VIEW stock_count_variances;
ALTER TABLE inventory_ledger RENAME TO inventory_ledger_unpartitioned;
DROP INDEX inventory_ledger_store_version;
ALTER TABLE inventory_ledger_unpartitioned DROP CONSTRAINT inventory_ledger_pkey;

-- Columns ordered to waste no alignment padding: 8-byte values first, then
-- the uuid, the 4-, 2- and 1-byte values, then the variable-length ones
-- (short text needs no alignment). Measured: 232 -> 200 bytes per row of a
-- typical sale against the order the columns were added in (DESIGN.md).
CREATE TABLE inventory_ledger (
    sku_version            bigint      NOT NULL,
    quantity_delta         bigint      NOT NULL,
    on_hand_after          bigint      NOT NULL,
    reserved_after         bigint      NOT NULL,
    reserved_delta         bigint      NOT NULL DEFAULT 0,
    reorder_point          bigint      NOT NULL DEFAULT 0,
    target_level           bigint      NOT NULL DEFAULT 0,
    variance_threshold     bigint      NOT NULL DEFAULT 0,
    log_offset             bigint      NOT NULL,
    occurred_at            timestamptz NOT NULL,
    recorded_at            timestamptz NOT NULL,
    reservation_expires_at timestamptz,
    event_id               uuid        NOT NULL,
    log_partition          integer     NOT NULL,
    event_type             smallint    NOT NULL,
    adjustment_reason      smallint    NOT NULL DEFAULT 0,
    allow_negative         boolean     NOT NULL DEFAULT false,
    variance_flagged       boolean     NOT NULL DEFAULT false,
    sku_id                 text        COLLATE "C" NOT NULL,
    store_id               text        COLLATE "C" NOT NULL,
    command_id             text        NOT NULL,
    user_id                text        NOT NULL DEFAULT '',
    reason                 text        NOT NULL DEFAULT '',
    counterpart_store_id   text        NOT NULL DEFAULT '',
    reservation_id         text        NOT NULL DEFAULT '',
    metadata               jsonb
) PARTITION BY RANGE (recorded_at);

-- inventory_ledger_add_month creates the partition of the UTC month holding
-- at, unless it exists, and reports whether it did. The projector calls it
-- for the months ahead and for any event whose month has no partition yet
-- (readmodel.EnsureLedgerMonths); partitions are named
-- inventory_ledger_YYYY_MM, which readmodel.MaintainLedger relies on.
CREATE FUNCTION inventory_ledger_add_month(at timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    name text      := 'inventory_ledger_' || to_char(lo, 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF inventory_ledger FOR VALUES FROM (%L) TO (%L)',
                   name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
    RETURN true;
END
$$;

-- Every month from the oldest event to two months from now.
SELECT inventory_ledger_add_month(m AT TIME ZONE 'UTC')
FROM generate_series(
        date_trunc('month', least(now(), (SELECT min(recorded_at) FROM inventory_ledger_unpartitioned)) AT TIME ZONE 'UTC'),
        date_trunc('month', greatest(now(), (SELECT max(recorded_at) FROM inventory_ledger_unpartitioned)) AT TIME ZONE 'UTC') + interval '2 months',
        interval '1 month') AS m;

INSERT INTO inventory_ledger (sku_version, quantity_delta, on_hand_after, reserved_after, reserved_delta, reorder_point,
                              target_level, variance_threshold, log_offset, occurred_at, recorded_at, reservation_expires_at,
                              event_id, log_partition, event_type, adjustment_reason, allow_negative, variance_flagged,
                              sku_id, store_id, command_id, user_id, reason, counterpart_store_id, reservation_id, metadata)
SELECT sku_version, quantity_delta, on_hand_after, reserved_after, reserved_delta, reorder_point,
       target_level, variance_threshold, log_offset, occurred_at, recorded_at, reservation_expires_at,
       event_id, log_partition, event_type, adjustment_reason, allow_negative, variance_flagged,
       sku_id, store_id, command_id, user_id, reason, counterpart_store_id, reservation_id, metadata
FROM inventory_ledger_unpartitioned;
DROP TABLE inventory_ledger_unpartitioned;

-- One index, built after the copy: it is the idempotence key (a replayed
-- event has the same four values, so COPY meets it and the projector's
-- staged insert skips it; a primary key of a partitioned table must hold
-- the partition key) and, scanned backwards, serves history and both as-of
-- reads, which the former (sku_id, store_id, sku_version DESC) index did.
-- A second index costs every event (DESIGN.md).
ALTER TABLE inventory_ledger ADD PRIMARY KEY (sku_id, store_id, sku_version, recorded_at);

-- How far back the ledger goes once retention has dropped a month: reads of
-- history before retained_from answer OUT_OF_RANGE. No row: nothing was
-- ever dropped.
CREATE TABLE ledger_retention (
    one           boolean     PRIMARY KEY DEFAULT true CHECK (one),
    retained_from timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

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
