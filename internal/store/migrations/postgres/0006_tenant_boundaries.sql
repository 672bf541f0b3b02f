-- +goose Up
-- One machine has one record: a power link and a guest link each belong to
-- at most one instance across all tenants. A database that already holds
-- two records of one link cannot be made unique here; the server refuses
-- to start and names them (see store.duplicateLinks), because deleting one
-- of them blindly could delete the rightful owner's.
DROP INDEX instances_power_link;
CREATE UNIQUE INDEX instances_power_link ON instances(power_driver, power_host, power_address);
CREATE UNIQUE INDEX instances_guest_link ON instances(guest_driver, guest_host, guest_address);

-- Enrolment tokens can be revoked before they are used.
ALTER TABLE agent_tokens ADD COLUMN revoked_at BIGINT;
CREATE INDEX agent_tokens_tenant ON agent_tokens(tenant_id, created_at);

-- What a driver said when an item failed (identifiers of other systems:
-- socket paths, host URIs, agent ids), shown to the operator only; message
-- stays what the instance's tenant may read.
ALTER TABLE items ADD COLUMN detail TEXT NOT NULL DEFAULT '';

-- Sign-in failures are counted per user and address ("pair:"), per
-- address ("addr:") and per user ("user:"); the per-user count only slows
-- sign-ins down, with a delay that grows from the last failure.
ALTER TABLE console_signin_failures ADD COLUMN last_failure_at BIGINT NOT NULL DEFAULT 0;
-- A random mark of the last counted attempt: an attempt reads it back to
-- know whether it was counted or refused (its subject was locked).
ALTER TABLE console_signin_failures ADD COLUMN last_attempt TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE console_signin_failures DROP COLUMN last_attempt;
ALTER TABLE console_signin_failures DROP COLUMN last_failure_at;
ALTER TABLE items DROP COLUMN detail;
DROP INDEX agent_tokens_tenant;
ALTER TABLE agent_tokens DROP COLUMN revoked_at;
DROP INDEX instances_guest_link;
DROP INDEX instances_power_link;
CREATE INDEX instances_power_link ON instances(power_driver, power_host, power_address);
