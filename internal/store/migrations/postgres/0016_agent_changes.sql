-- +goose Up
-- The poll that last changed an agent's session, readiness or connection:
-- a poll's one UPDATE compares the row it replaces (SET sees the old
-- values) and stamps this, so "did this poll change anything" is answered
-- atomically, even while another replica marks the agent gone.
ALTER TABLE agents ADD COLUMN changed_seq BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE agents DROP COLUMN changed_seq;
