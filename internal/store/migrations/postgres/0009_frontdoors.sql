-- +goose Up
-- See the SQLite migration of the same number for the why of each table.
CREATE TABLE signed_requests (
    key         TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    mutating    BOOLEAN NOT NULL,
    answered    BOOLEAN NOT NULL DEFAULT FALSE,
    status      INTEGER NOT NULL DEFAULT 0,
    request_id  TEXT NOT NULL DEFAULT '',
    answer      BYTEA,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX signed_requests_expires ON signed_requests(expires_at);

CREATE TABLE baremetal_tasks (
    tenant_id     TEXT NOT NULL,
    task_id       BIGINT NOT NULL,
    operation_id  TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);
CREATE TABLE baremetal_task_counters (
    tenant_id  TEXT PRIMARY KEY,
    last_id    BIGINT NOT NULL
);
INSERT INTO baremetal_tasks (tenant_id, task_id, operation_id, created_at)
    SELECT o.tenant_id, t.id, t.operation_id, t.created_at
    FROM dialect_tasks t JOIN operations o ON o.id = t.operation_id;
INSERT INTO baremetal_task_counters (tenant_id, last_id)
    SELECT tenant_id, max(task_id) FROM baremetal_tasks GROUP BY tenant_id;
DROP TABLE dialect_tasks;

-- +goose Down
CREATE TABLE dialect_tasks (
    id            BIGSERIAL PRIMARY KEY,
    operation_id  TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL
);
DROP TABLE baremetal_task_counters;
DROP TABLE baremetal_tasks;
DROP TABLE signed_requests;
