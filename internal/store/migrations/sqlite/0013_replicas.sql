-- +goose Up
-- Every server process sharing the database is a replica: it writes its row
-- at start and renews heartbeat_at every few seconds, on the database's
-- clock (milliseconds since the epoch). A replica whose heartbeat is older
-- than the membership's time-to-live is dead: the others take over its
-- work. stopped_at is set by a graceful stop. Rows of replicas gone long
-- enough are forgotten.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);

-- The fencing token of an item's executions: each execution takes the next
-- value when it starts, and every write it makes is conditional on still
-- holding it, so an execution superseded by another replica's (after a
-- takeover) can no longer move the item or act for it.
ALTER TABLE items ADD COLUMN exec_seq INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE items DROP COLUMN exec_seq;
DROP TABLE replicas;
