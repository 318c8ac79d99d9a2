-- Reorder policies set through the log (EVENT_TYPE_REORDER_POLICY_SET).
-- Pairs without a row use the default policy (reorder_point 10, target 30).
CREATE TABLE reorder_policies (
    sku_id        text        COLLATE "C" NOT NULL,
    store_id      text        COLLATE "C" NOT NULL,
    reorder_point bigint      NOT NULL,
    target_level  bigint      NOT NULL,
    sku_version   bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (sku_id, store_id)
);

-- When the projector committed each level (transaction time): low-stock
-- watchers resume from it.
ALTER TABLE stock_levels ADD COLUMN projected_at timestamptz NOT NULL DEFAULT now();
