-- Who did it: the subject of the bearer token a command came with
-- (InventoryEvent.actor), shown in history. Empty for events written while
-- the API was open, and for those before this migration.
ALTER TABLE inventory_ledger ADD COLUMN actor text NOT NULL DEFAULT '';
