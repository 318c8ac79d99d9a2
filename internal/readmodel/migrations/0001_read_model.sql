-- The operational read model: a projection of tally.inventory.events.
-- Everything here can be dropped and rebuilt from the log (tally replay).

-- Every event, append-only. A replayed event is a no-op (primary key).
CREATE TABLE inventory_ledger (
    sku_id               text        COLLATE "C" NOT NULL,
    sku_version          bigint      NOT NULL,
    event_id             uuid        NOT NULL,
    event_type           smallint    NOT NULL,
    store_id             text        COLLATE "C" NOT NULL,
    quantity_delta       bigint      NOT NULL,
    on_hand_after        bigint      NOT NULL,
    reserved_after       bigint      NOT NULL,
    occurred_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL,
    command_id           text        NOT NULL,
    user_id              text        NOT NULL DEFAULT '',
    reason               text        NOT NULL DEFAULT '',
    metadata             jsonb,
    allow_negative       boolean     NOT NULL DEFAULT false,
    adjustment_reason    smallint    NOT NULL DEFAULT 0,
    counterpart_store_id text        NOT NULL DEFAULT '',
    log_partition        integer     NOT NULL,
    log_offset           bigint      NOT NULL,
    PRIMARY KEY (sku_id, sku_version)
);
-- History of a (sku, store), newest first, and as-of by either clock (one
-- index serves all three: each index on this table costs every event).
CREATE INDEX inventory_ledger_store_version ON inventory_ledger (sku_id, store_id, sku_version DESC);

-- Current stock per (sku, store): the newest event wins. The newest projected
-- version of a SKU (what min_version waits for) is max(sku_version) over its
-- stores, read through the primary key's sku_id prefix.
CREATE TABLE stock_levels (
    sku_id      text        COLLATE "C" NOT NULL,
    store_id    text        COLLATE "C" NOT NULL,
    on_hand     bigint      NOT NULL,
    reserved    bigint      NOT NULL,
    sku_version bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (sku_id, store_id)
) WITH (fillfactor = 70); -- room for HOT updates: most writes update a row in place
CREATE INDEX stock_levels_by_store ON stock_levels (store_id, sku_id);

-- Where each consumer is in each partition. Written in the same transaction
-- as the rows, so a restart resumes exactly where the committed data ends.
CREATE TABLE projector_offsets (
    consumer           text        NOT NULL,
    log_partition      integer     NOT NULL,
    next_offset        bigint      NOT NULL,
    newest_recorded_at timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, log_partition)
);
