-- +goose Up
-- The BMC of a bare-metal instance whose power link is a BMC driver (ipmi;
-- later redfish). See the SQLite migration of the same number.
CREATE TABLE bmcs (
    instance_id      TEXT PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    user_name        TEXT NOT NULL,
    password_sealed  BYTEA NOT NULL,
    cipher_suite     BIGINT NOT NULL,
    accepts_suite0   BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    checked_at       BIGINT,
    updated_at       BIGINT NOT NULL
);

CREATE UNIQUE INDEX instances_bmc_address ON instances(power_driver, power_address) WHERE power_driver IN ('ipmi', 'redfish');

-- +goose Down
DROP INDEX instances_bmc_address;
DROP TABLE bmcs;
