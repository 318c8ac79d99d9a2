-- Compacted months of the ledger. A row per event costs about 290 bytes
-- with its index (DESIGN.md, "Ledger compaction"); once a month has ended
-- (and --ledger-compact-after has passed), the projector's maintenance moves
-- its rows into one row per (sku_id, store_id): a chunk holding the pair's
-- events of the month column by column, one array per ledger column in
-- sku_version order, which PostgreSQL compresses (lz4) and stores out of
-- line. ledger_events is the ledger as every reader sees it: the rows and
-- the chunks' events, with the same columns as inventory_ledger.
--
-- A column added to the event (and so to inventory_ledger) must be added
-- here too: an array column of ledger_chunks, an element of ledger_compact's
-- aggregate and of ledger_events' unnest. TestLedgerChunksHoldEveryColumn
-- fails until it is.

CREATE TABLE ledger_chunks (
    first_version          bigint        NOT NULL,
    last_version           bigint        NOT NULL,
    first_recorded         timestamptz   NOT NULL,
    last_recorded          timestamptz   NOT NULL,
    first_occurred         timestamptz   NOT NULL,
    last_occurred          timestamptz   NOT NULL,
    events                 integer       NOT NULL,
    sku_id                 text          COLLATE "C" NOT NULL,
    store_id               text          COLLATE "C" NOT NULL,
    -- One element per event, in sku_version order. A column whose every
    -- element is its default (0, '', false, NULL) is NULL instead.
    sku_version            bigint[]      NOT NULL,
    quantity_delta         bigint[]      NOT NULL,
    on_hand_after          bigint[]      NOT NULL,
    reserved_after         bigint[],
    reserved_delta         bigint[],
    reorder_point          bigint[],
    target_level           bigint[],
    variance_threshold     bigint[],
    log_offset             bigint[]      NOT NULL,
    occurred_at            timestamptz[] NOT NULL,
    recorded_at            timestamptz[] NOT NULL,
    reservation_expires_at timestamptz[],
    event_id               uuid[]        NOT NULL,
    log_partition          integer[]     NOT NULL,
    event_type             smallint[]    NOT NULL,
    adjustment_reason      smallint[],
    allow_negative         boolean[],
    variance_flagged       boolean[],
    command_id             text[]        NOT NULL,
    user_id                text[],
    reason                 text[],
    counterpart_store_id   text[],
    reservation_id         text[],
    metadata               jsonb[],
    actor                  text[]
) PARTITION BY RANGE (first_recorded);

ALTER TABLE ledger_chunks ADD PRIMARY KEY (sku_id, store_id, first_version, first_recorded);

-- ledger_chunks_add_month creates the chunks' partition of the UTC month
-- holding at, unless it exists. Chunks are small in number (one per pair
-- and month) and large: the TOAST target is lowered so that a chunk of a
-- few events is compressed too.
CREATE FUNCTION ledger_chunks_add_month(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    name text      := 'ledger_chunks_' || to_char(lo, 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF ledger_chunks FOR VALUES FROM (%L) TO (%L) WITH (toast_tuple_target = 128)',
                       name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
    END IF;
END
$$;

-- The ledger's months get their chunks' month with them.
CREATE OR REPLACE FUNCTION inventory_ledger_add_month(at timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    name text      := 'inventory_ledger_' || to_char(lo, 'YYYY_MM');
BEGIN
    PERFORM ledger_chunks_add_month(at);
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF inventory_ledger FOR VALUES FROM (%L) TO (%L)',
                   name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
    RETURN true;
END
$$;

SELECT ledger_chunks_add_month(to_date(substr(c.relname, length('inventory_ledger_') + 1), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC')
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'inventory_ledger'::regclass;

-- ledger_compact moves the rows recorded in [from, until) whose sku_id is in
-- [lo, hi) (hi NULL: no bound) into chunks, one per (sku_id, store_id), in
-- one statement, and returns how many rows it moved. A row whose version a
-- chunk of its pair already holds (a duplicate written by a stale
-- projector after its month was compacted) is dropped, not chunked twice.
CREATE FUNCTION ledger_compact(from_ts timestamptz, until_ts timestamptz, lo text, hi text) RETURNS bigint
LANGUAGE sql
SET default_toast_compression = 'lz4'
AS $$
WITH moved AS (
    DELETE FROM inventory_ledger l
    WHERE l.recorded_at >= from_ts AND l.recorded_at < until_ts
      AND l.sku_id >= lo COLLATE "C" AND (hi IS NULL OR l.sku_id < hi COLLATE "C")
    RETURNING l.*
), fresh AS (
    SELECT m.* FROM moved m
    WHERE NOT EXISTS (SELECT 1 FROM ledger_chunks c
                      WHERE c.sku_id = m.sku_id AND c.store_id = m.store_id
                        AND m.sku_version BETWEEN c.first_version AND c.last_version
                        AND m.sku_version = ANY (c.sku_version))
), chunked AS (
    INSERT INTO ledger_chunks
    SELECT min(sku_version), max(sku_version), min(recorded_at), max(recorded_at), min(occurred_at), max(occurred_at), count(*),
           sku_id, store_id,
           array_agg(sku_version ORDER BY sku_version),
           array_agg(quantity_delta ORDER BY sku_version),
           array_agg(on_hand_after ORDER BY sku_version),
           CASE WHEN bool_and(reserved_after = 0) THEN NULL ELSE array_agg(reserved_after ORDER BY sku_version) END,
           CASE WHEN bool_and(reserved_delta = 0) THEN NULL ELSE array_agg(reserved_delta ORDER BY sku_version) END,
           CASE WHEN bool_and(reorder_point = 0) THEN NULL ELSE array_agg(reorder_point ORDER BY sku_version) END,
           CASE WHEN bool_and(target_level = 0) THEN NULL ELSE array_agg(target_level ORDER BY sku_version) END,
           CASE WHEN bool_and(variance_threshold = 0) THEN NULL ELSE array_agg(variance_threshold ORDER BY sku_version) END,
           array_agg(log_offset ORDER BY sku_version),
           array_agg(occurred_at ORDER BY sku_version),
           array_agg(recorded_at ORDER BY sku_version),
           CASE WHEN bool_and(reservation_expires_at IS NULL) THEN NULL ELSE array_agg(reservation_expires_at ORDER BY sku_version) END,
           array_agg(event_id ORDER BY sku_version),
           array_agg(log_partition ORDER BY sku_version),
           array_agg(event_type ORDER BY sku_version),
           CASE WHEN bool_and(adjustment_reason = 0) THEN NULL ELSE array_agg(adjustment_reason ORDER BY sku_version) END,
           CASE WHEN bool_and(NOT allow_negative) THEN NULL ELSE array_agg(allow_negative ORDER BY sku_version) END,
           CASE WHEN bool_and(NOT variance_flagged) THEN NULL ELSE array_agg(variance_flagged ORDER BY sku_version) END,
           array_agg(command_id ORDER BY sku_version),
           CASE WHEN bool_and(user_id = '') THEN NULL ELSE array_agg(user_id ORDER BY sku_version) END,
           CASE WHEN bool_and(reason = '') THEN NULL ELSE array_agg(reason ORDER BY sku_version) END,
           CASE WHEN bool_and(counterpart_store_id = '') THEN NULL ELSE array_agg(counterpart_store_id ORDER BY sku_version) END,
           CASE WHEN bool_and(reservation_id = '') THEN NULL ELSE array_agg(reservation_id ORDER BY sku_version) END,
           CASE WHEN bool_and(metadata IS NULL) THEN NULL ELSE array_agg(metadata ORDER BY sku_version) END,
           CASE WHEN bool_and(actor = '') THEN NULL ELSE array_agg(actor ORDER BY sku_version) END
    FROM fresh
    GROUP BY sku_id, store_id
    RETURNING 1
)
SELECT count(*) FROM moved
$$;

-- The ledger as readers see it. Besides the ledger's columns, span_* bound
-- the events that share a row with this one (a chunk's, or the event's own
-- for a row): a query that adds a condition on them, besides the one on the
-- event's column, lets PostgreSQL skip a chunk without unpacking it (a
-- condition on span_* uses only the chunk's own columns).
CREATE VIEW ledger_events AS
SELECT sku_version, quantity_delta, on_hand_after, reserved_after, reserved_delta, reorder_point, target_level,
       variance_threshold, log_offset, occurred_at, recorded_at, reservation_expires_at, event_id, log_partition,
       event_type, adjustment_reason, allow_negative, variance_flagged, sku_id, store_id, command_id, user_id, reason,
       counterpart_store_id, reservation_id, metadata, actor,
       sku_version AS span_first_version, sku_version AS span_last_version,
       recorded_at AS span_first_recorded, recorded_at AS span_last_recorded,
       occurred_at AS span_first_occurred, occurred_at AS span_last_occurred
FROM inventory_ledger
UNION ALL
SELECT u.sku_version, u.quantity_delta, u.on_hand_after, COALESCE(u.reserved_after, 0), COALESCE(u.reserved_delta, 0),
       COALESCE(u.reorder_point, 0), COALESCE(u.target_level, 0), COALESCE(u.variance_threshold, 0), u.log_offset,
       u.occurred_at, u.recorded_at, u.reservation_expires_at, u.event_id, u.log_partition, u.event_type,
       COALESCE(u.adjustment_reason, 0::smallint), COALESCE(u.allow_negative, false), COALESCE(u.variance_flagged, false),
       c.sku_id, c.store_id, u.command_id, COALESCE(u.user_id, ''), COALESCE(u.reason, ''),
       COALESCE(u.counterpart_store_id, ''), COALESCE(u.reservation_id, ''), u.metadata, COALESCE(u.actor, ''),
       c.first_version, c.last_version, c.first_recorded, c.last_recorded, c.first_occurred, c.last_occurred
FROM ledger_chunks c
CROSS JOIN LATERAL unnest(c.sku_version, c.quantity_delta, c.on_hand_after, c.reserved_after, c.reserved_delta,
                          c.reorder_point, c.target_level, c.variance_threshold, c.log_offset, c.occurred_at,
                          c.recorded_at, c.reservation_expires_at, c.event_id, c.log_partition, c.event_type,
                          c.adjustment_reason, c.allow_negative, c.variance_flagged, c.command_id, c.user_id,
                          c.reason, c.counterpart_store_id, c.reservation_id, c.metadata, c.actor)
    AS u(sku_version, quantity_delta, on_hand_after, reserved_after, reserved_delta, reorder_point, target_level,
         variance_threshold, log_offset, occurred_at, recorded_at, reservation_expires_at, event_id, log_partition,
         event_type, adjustment_reason, allow_negative, variance_flagged, command_id, user_id, reason,
         counterpart_store_id, reservation_id, metadata, actor);

CREATE OR REPLACE VIEW stock_count_variances AS
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
FROM ledger_events
WHERE event_type = 11;
