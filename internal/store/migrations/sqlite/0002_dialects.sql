-- +goose Up
-- The bare-metal API names tasks with integers: each number points at the
-- operation it stands for. AUTOINCREMENT never reuses a number, even after
-- the newest row is deleted, so a client's old task id cannot come to mean
-- someone else's operation.
CREATE TABLE dialect_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id  TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);

-- Signatures already used (action API and bare-metal API), kept until their
-- timestamp can no longer pass the clock-skew check. Shared by every
-- replica, so a request replayed to another replica is refused too.
CREATE TABLE replay_keys (
    key         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX replay_keys_expires ON replay_keys(expires_at);

-- +goose Down
DROP TABLE replay_keys;
DROP TABLE dialect_tasks;
