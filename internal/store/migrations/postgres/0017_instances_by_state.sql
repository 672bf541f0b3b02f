-- +goose Up
-- Listing instances by state in name order (the API's state filter, and
-- every replica's once-a-second look for PENDING instances to sync) read
-- the whole table through the name index to find a few rows, or none.
CREATE INDEX instances_state_name ON instances(state, name, id);

-- +goose Down
DROP INDEX instances_state_name;
