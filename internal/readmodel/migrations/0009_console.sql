-- The console (issue #18).
-- Sales of the last hour (GetSalesHeatmap) read the ledger by recorded_at.
-- recorded_at follows insert order, so a BRIN index (a few bytes per 128
-- pages, next to nothing per event) lets such a read skip every page range
-- older than the window; the newest, not yet summarized ranges are always
-- read, and they are the window.
CREATE INDEX inventory_ledger_recorded_at_brin ON inventory_ledger USING brin (recorded_at) WITH (autosummarize = on);

-- The write->query visibility of each partition's newest projector
-- transaction, for GetProjectionStatus.
ALTER TABLE projector_offsets
    ADD COLUMN visibility_p50_ms bigint,
    ADD COLUMN visibility_p99_ms bigint;
