-- +goose Up
-- Hypervisor hosts (libvirt connections) whose domains become instances.
CREATE TABLE hosts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    driver           TEXT NOT NULL,
    uri              TEXT NOT NULL UNIQUE,
    max_concurrency  BIGINT NOT NULL,
    default_os_type  TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);

-- What a host's inventory says of an instance's guest channel: NULL (not
-- known, or not a host's machine), 0 (the machine has no guest agent
-- channel) or 1.
ALTER TABLE instances ADD COLUMN guest_channel BIGINT;

-- The inventory sync finds a domain's instance by host and UUID.
CREATE INDEX instances_power_link ON instances(power_driver, power_host, power_address);

-- +goose Down
DROP INDEX instances_power_link;
ALTER TABLE instances DROP COLUMN guest_channel;
DROP TABLE hosts;
