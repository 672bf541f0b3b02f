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

-- A bare-metal server registered with its BMC has a guest link with no
-- address until its agent enrols: an empty address is no link, and many
-- servers may await their agents at once. (One BMC, one server, is the
-- unique power link of 0006.)
DROP INDEX instances_guest_link;
CREATE UNIQUE INDEX instances_guest_link ON instances(guest_driver, guest_host, guest_address) WHERE guest_address <> '';

-- +goose Down
DROP INDEX instances_guest_link;
CREATE UNIQUE INDEX instances_guest_link ON instances(guest_driver, guest_host, guest_address);
DROP TABLE bmcs;
