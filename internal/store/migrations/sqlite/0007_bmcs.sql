-- +goose Up
-- The BMC of a bare-metal instance whose power link is a BMC driver (ipmi;
-- later redfish). The instance's power_address is the BMC's host:port; the
-- credentials live here, the password sealed under the data-dir key with
-- the instance id as associated data, so a row copied to another instance
-- does not open.
CREATE TABLE bmcs (
    instance_id      TEXT PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    user_name        TEXT NOT NULL,
    password_sealed  BLOB NOT NULL,
    cipher_suite     INTEGER NOT NULL,
    -- 1: the BMC accepted a session with cipher suite 0 (no password check)
    -- when last checked; fleetpass never uses it, the operator should
    -- disable it.
    accepts_suite0   INTEGER NOT NULL DEFAULT 0,
    -- The last fault the BMC gave (unreachable, credentials refused, ...),
    -- empty when it answered.
    last_error       TEXT NOT NULL DEFAULT '',
    checked_at       INTEGER,
    updated_at       INTEGER NOT NULL
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
