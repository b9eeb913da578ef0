-- Runs as a state machine (queued -> running -> succeeded | partial | failed | skipped).
-- deadline_at: when the invocation carrying a running run ends (Lambda's deadline), so a run that
-- never recorded its end is known lost right after it, not after a fixed hour.
-- attempts: how many invocations started this run (Lambda retries a failed asynchronous one).
ALTER TABLE pgkeeper.runs ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
ALTER TABLE pgkeeper.runs ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;

-- The history bound deletes by age.
CREATE INDEX IF NOT EXISTS runs_started_idx ON pgkeeper.runs (started_at);
