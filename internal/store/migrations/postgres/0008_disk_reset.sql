-- +goose Up
-- How an item's password reaches its instance: '' (power items), auto
-- (resolved when the item starts), guest or disk.
ALTER TABLE items ADD COLUMN method TEXT NOT NULL DEFAULT '';
-- Set when a reset found its machine on: a reset that fails once the
-- machine is off starts it again. INTEGER like the other flags of items.
ALTER TABLE items ADD COLUMN was_running INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE items DROP COLUMN was_running;
ALTER TABLE items DROP COLUMN method;
