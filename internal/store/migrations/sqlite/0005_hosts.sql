-- +goose Up
-- Hypervisor hosts (libvirt connections) whose domains become instances.
CREATE TABLE hosts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    driver           TEXT NOT NULL,
    uri              TEXT NOT NULL UNIQUE,
    max_concurrency  INTEGER NOT NULL,
    default_os_type  TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);

-- The inventory sync finds a domain's instance by host and UUID.
CREATE INDEX instances_power_link ON instances(power_driver, power_host, power_address);

-- +goose Down
DROP INDEX instances_power_link;
DROP TABLE hosts;
