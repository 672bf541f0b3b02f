-- +goose Up
-- Times are unix milliseconds: portable between SQLite and PostgreSQL and
-- cheap to compare.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    -- SHA-256 of the secret: enough for a 256-bit random secret, and what
    -- bearer/basic authentication checks.
    secret_hash   BLOB NOT NULL,
    -- The secret sealed under the data-dir key: HMAC-signed dialects need
    -- the secret itself to recompute signatures.
    secret_sealed BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, id);

CREATE TABLE instances (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    name                TEXT NOT NULL,
    os_type             TEXT NOT NULL,
    admin_user          TEXT NOT NULL,
    state               TEXT NOT NULL,
    power_driver        TEXT NOT NULL,
    power_host          TEXT NOT NULL DEFAULT '',
    power_address       TEXT NOT NULL,
    guest_driver        TEXT NOT NULL,
    guest_host          TEXT NOT NULL DEFAULT '',
    guest_address       TEXT NOT NULL,
    guest_alive         INTEGER NOT NULL DEFAULT 0,
    guest_seen_at       INTEGER,
    -- The per-instance lock: set in the transaction that accepts an
    -- operation, cleared when the instance's item ends.
    active_operation_id TEXT,
    latest_op_id        TEXT,
    latest_op_kind      TEXT,
    latest_op_state     TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX instances_name ON instances(name, id);
CREATE INDEX instances_tenant_name ON instances(tenant_id, name, id);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    requester_kind  TEXT NOT NULL,
    requester_id    TEXT NOT NULL,
    requester_addr  TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    total           INTEGER NOT NULL,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX operations_tenant_created ON operations(tenant_id, created_at, id);
CREATE INDEX operations_created ON operations(created_at, id);

CREATE TABLE items (
    operation_id      TEXT NOT NULL REFERENCES operations(id),
    instance_id       TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    instance_name     TEXT NOT NULL,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL,
    step              TEXT NOT NULL,
    mode              TEXT NOT NULL DEFAULT '',
    user_name         TEXT NOT NULL DEFAULT '',
    force_stop        INTEGER NOT NULL DEFAULT 0,
    stop_mode         TEXT NOT NULL DEFAULT '',
    deadline          INTEGER,
    error_code        TEXT NOT NULL DEFAULT '',
    message           TEXT NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    -- The new password, sealed (AES-256-GCM); NULL once the item ended.
    sealed_secret     BLOB,
    started_at        INTEGER,
    finished_at       INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (operation_id, instance_id)
);
CREATE INDEX items_instance ON items(instance_id, operation_id);

CREATE TABLE idempotency_keys (
    principal     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    operation_id  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    tenant_id     TEXT NOT NULL,
    actor_kind    TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    actor_addr    TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL DEFAULT '',
    operation_id  TEXT NOT NULL DEFAULT '',
    request_id    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_tenant ON audit_log(tenant_id, id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE events;
DROP TABLE idempotency_keys;
DROP TABLE items;
DROP TABLE operations;
DROP TABLE instances;
DROP TABLE api_keys;
DROP TABLE tenants;
