-- +goose Up
-- Console users sign in to the web console with a name and a password.
-- password_hash is an argon2id string ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
CREATE TABLE console_users (
    name                TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    admin               BIGINT NOT NULL DEFAULT 0,
    password_hash       TEXT NOT NULL,
    must_change         BIGINT NOT NULL DEFAULT 1,
    created_at          BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);
CREATE INDEX console_users_tenant ON console_users(tenant_id, name);

-- Sessions are rows, not process memory, so any replica can serve any
-- request. token_hash is SHA-256 of the cookie's random token: a copy of
-- the database does not give anyone a session.
CREATE TABLE console_sessions (
    token_hash   BYTEA PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES console_users(name) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions(user_name);

-- Failed sign-ins per subject ("user:NAME" or "addr:IP") in the current
-- window; shared by every replica so the limit cannot be dodged by load
-- balancing.
CREATE TABLE console_signin_failures (
    subject      TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE console_signin_failures;
DROP TABLE console_sessions;
DROP TABLE console_users;
