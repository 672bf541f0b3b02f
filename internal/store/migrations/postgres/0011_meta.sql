-- +goose Up
-- Facts about the installation as a whole, by name. key_check: a MAC under
-- the sealing key of a fixed text, recorded by the first server to start,
-- so a server given another key (servers sharing one PostgreSQL database
-- keep the key outside their data directories) refuses to start instead
-- of failing every sealed secret it meets later. It reveals nothing of the
-- key.
CREATE TABLE fleetpass_meta (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);

-- +goose Down
DROP TABLE fleetpass_meta;
