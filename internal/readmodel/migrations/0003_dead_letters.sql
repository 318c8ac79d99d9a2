-- Records a projection skipped instead of stopping: records that do not
-- decode as an InventoryEvent, and events Postgres refused for their own data
-- (SQLSTATE class 22 or 23, or 54000; see projector.refusedData). Written in
-- the transaction that moves the consumer's offset past them, so each is here
-- exactly once; each is also in tally.inventory.dlq (at least once).
-- The event's columns are NULL when the record did not decode.
CREATE TABLE projection_dead_letters (
    consumer         text        NOT NULL,
    log_partition    integer     NOT NULL,
    log_offset       bigint      NOT NULL,
    event_id         uuid,
    sku_id           text        COLLATE "C",
    sku_version      bigint,
    error            text        NOT NULL,
    sqlstate         text,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, log_partition, log_offset)
);
-- GetProjectionStatus's newest few.
CREATE INDEX projection_dead_letters_recent ON projection_dead_letters (consumer, dead_lettered_at DESC);
