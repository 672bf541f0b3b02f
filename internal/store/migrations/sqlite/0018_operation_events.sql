-- +goose Up
-- A stream following one operation starts at that operation's first event
-- (its acceptance), which only this finds without reading the whole log.
-- Only operation events are indexed: two an operation, against the many
-- item and instance events every reset writes.
CREATE INDEX events_operation_ref ON events(ref, id) WHERE type = 'operation';

-- +goose Down
DROP INDEX events_operation_ref;
