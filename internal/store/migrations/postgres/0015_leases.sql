-- +goose Up
-- Leases: a duty that one replica at a time may do (follow a libvirt host,
-- ...), held by name until expires_at (unix ms, on the database's clock).
-- epoch grows each time the lease starts a new term (another holder, or
-- the same one after it lapsed), so work stamped with an older epoch can
-- be refused: a fencing token. Rows are never deleted while their name is
-- in use: a released lease only expires, so its epoch never goes back.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX leases_holder ON leases(holder);

-- What the owner of a libvirt host last saw of its connection, so that
-- every replica answers the same.
CREATE TABLE host_status (
    host_id          TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    epoch            BIGINT NOT NULL,
    connected        BIGINT NOT NULL,
    error            TEXT NOT NULL,
    libvirt_version  TEXT NOT NULL,
    since            BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- +goose Down
DROP TABLE host_status;
DROP TABLE leases;
