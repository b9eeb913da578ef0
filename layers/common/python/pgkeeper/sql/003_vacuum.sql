-- Vacuum carry-over: tables a run selected but did not finish (deadline, lock, timeout, killed run).
-- The next run starts with them. Idempotent; safe to re-run.
CREATE SCHEMA IF NOT EXISTS pgkeeper;

CREATE TABLE IF NOT EXISTS pgkeeper.vacuum_backlog (
    schema_name  text        NOT NULL,
    table_name   text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('analyze', 'vacuum', 'freeze')),
    reason       text        NOT NULL,
    run_id       uuid,
    queued_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    attempts     integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (schema_name, table_name)
);
