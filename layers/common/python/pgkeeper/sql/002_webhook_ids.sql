-- Replay protection for signed function URL requests: each webhook-id is accepted once.
-- A row lives for longer than twice the timestamp tolerance (a request stamped up to 300 s in the
-- future stays verifiable for 600 s), then it may be reused or purged. Idempotent; safe to re-run.
-- Deliberately a logged table: an UNLOGGED one is emptied by crash recovery and skipped by
-- replicas, which would reopen the replay window after a crash or a failover.
CREATE SCHEMA IF NOT EXISTS pgkeeper;

CREATE TABLE IF NOT EXISTS pgkeeper.webhook_ids (
    webhook_id   text        PRIMARY KEY,
    accepted_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS webhook_ids_expires_idx ON pgkeeper.webhook_ids (expires_at);
