-- +goose Up
-- Per-principal rate budgets shared by every replica (a GCRA): tat is the
-- key's theoretical arrival time in microseconds since the epoch.
CREATE TABLE rate_limits (
    key  TEXT PRIMARY KEY,
    tat  INTEGER NOT NULL
);

-- Per-host concurrency slots shared by every replica: one row per item
-- execution working against a libvirt host, renewed while it runs, and
-- free for others once expires_at (milliseconds) has passed.
CREATE TABLE host_slots (
    host_key    TEXT NOT NULL,
    holder      TEXT NOT NULL,
    replica     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (host_key, holder)
);

-- +goose Down
DROP TABLE host_slots;
DROP TABLE rate_limits;
