-- +goose Up
-- The items of an operation still to end: an operation ends when its last
-- item does, which the engine finds with one lookup here after each item's
-- end, however large the operation.
CREATE INDEX items_unfinished ON items(operation_id) WHERE state NOT IN ('succeeded', 'failed');

-- +goose Down
DROP INDEX items_unfinished;
