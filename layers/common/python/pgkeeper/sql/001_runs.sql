-- Run history: one row per job run, written at start and end. Idempotent; safe to re-run.
CREATE SCHEMA IF NOT EXISTS pgkeeper;

CREATE TABLE IF NOT EXISTS pgkeeper.runs (
    run_id       uuid PRIMARY KEY,
    job          text        NOT NULL,
    trigger      text        NOT NULL,
    request_id   text,
    status       text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'skipped')),
    started_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at  timestamptz,
    options      jsonb       NOT NULL DEFAULT '{}',
    report       jsonb,
    error        text
);

CREATE INDEX IF NOT EXISTS runs_job_started_idx ON pgkeeper.runs (job, started_at DESC);
