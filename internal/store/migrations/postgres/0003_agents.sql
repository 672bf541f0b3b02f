-- +goose Up
-- The fleetpass agent (docs/design.md#the-agent). Everything an agent needs from any
-- replica is here: its enrolment tokens, its identity, and the commands
-- waiting for it (rows until acknowledged).
CREATE TABLE agent_tokens (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    -- The instance name the enrolled agent gets; empty: its host name.
    instance_name  TEXT NOT NULL DEFAULT '',
    -- SHA-256 of the token: it is 256 random bits, shown once.
    token_hash     BYTEA NOT NULL UNIQUE,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    agent_id       TEXT
);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    instance_id   TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL,
    -- The agent's X25519 public key: commands are sealed to it.
    public_key    BYTEA NOT NULL,
    -- SHA-256 of the secret the agent authenticates with.
    secret_hash   BYTEA NOT NULL,
    hostname      TEXT NOT NULL,
    os_type       TEXT NOT NULL,
    version       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    -- Liveness: the agent process's session, whether it reported ready,
    -- when it was last heard from, and a counter of its polls so that a
    -- poll that ends because the agent went away marks it gone only if no
    -- newer poll came meanwhile.
    session       TEXT NOT NULL DEFAULT '',
    ready         BIGINT NOT NULL DEFAULT 0,
    connected     BIGINT NOT NULL DEFAULT 0,
    poll_seq      BIGINT NOT NULL DEFAULT 0,
    last_seen_at  BIGINT
);

CREATE TABLE agent_commands (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    -- 1: staged while the machine was off, applied at the agent's start.
    staged       BIGINT NOT NULL DEFAULT 0,
    -- The password sealed to the agent's key; NULL once acknowledged.
    sealed       BYTEA,
    -- pending (not yet sent), sent, ok, user_not_found, failed, bad_command
    state        TEXT NOT NULL,
    exit_code    BIGINT NOT NULL DEFAULT 0,
    message      TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    sent_at      BIGINT,
    acked_at     BIGINT
);
CREATE INDEX agent_commands_agent ON agent_commands(agent_id, state, created_at);

-- +goose Down
DROP TABLE agent_commands;
DROP TABLE agents;
DROP TABLE agent_tokens;
