-- +goose Up
-- Signed requests of the action API (ZC2 signs neither the path nor the
-- action), kept until their timestamp can no longer pass the clock-skew
-- check. One row per signature: the path and action it was first used
-- with (scope), and for a mutating request its first answer, which an
-- identical request in the window gets again instead of running twice.
-- In the database, so every replica answers a repeat alike.
CREATE TABLE signed_requests (
    key         TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    mutating    INTEGER NOT NULL,
    -- 0 while the first request runs, 1 once answered.
    answered    INTEGER NOT NULL DEFAULT 0,
    status      INTEGER NOT NULL DEFAULT 0,
    request_id  TEXT NOT NULL DEFAULT '',
    answer      BLOB,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX signed_requests_expires ON signed_requests(expires_at);

-- The bare-metal API's task ids: per tenant, numbering only the
-- operations created through that API (its document's promise). The
-- counter is never lowered, so a number is never reused even when rows go.
CREATE TABLE baremetal_tasks (
    tenant_id     TEXT NOT NULL,
    task_id       INTEGER NOT NULL,
    operation_id  TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);
CREATE TABLE baremetal_task_counters (
    tenant_id  TEXT PRIMARY KEY,
    last_id    INTEGER NOT NULL
);
-- Numbers handed out before this migration stay valid for their tenant:
-- a client polling an old task id still finds it.
INSERT INTO baremetal_tasks (tenant_id, task_id, operation_id, created_at)
    SELECT o.tenant_id, t.id, t.operation_id, t.created_at
    FROM dialect_tasks t JOIN operations o ON o.id = t.operation_id;
INSERT INTO baremetal_task_counters (tenant_id, last_id)
    SELECT tenant_id, max(task_id) FROM baremetal_tasks GROUP BY tenant_id;
DROP TABLE dialect_tasks;

-- 1: the item shuts its machine down (an offline reset of a machine that
-- was on when the operation was accepted): what the console says of it.
ALTER TABLE items ADD COLUMN shutdown INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE items DROP COLUMN shutdown;
CREATE TABLE dialect_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id  TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);
DROP TABLE baremetal_task_counters;
DROP TABLE baremetal_tasks;
DROP TABLE signed_requests;
