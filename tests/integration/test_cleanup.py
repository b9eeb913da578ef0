"""The cleanup job against a real PostgreSQL: the right rows go, the others stay, in short batches.

Each test builds its own tables in a fresh database and runs the job the way Lambda does
(`runner.execute` with a counting-down context, or the real handler on an `events/` file), then
checks what a user would: which rows are left, the report, the run history, the emitted metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgkeeper import runner
from pgkeeper.budget import Budget
from pgkeeper.cleanup.job import JOB
from pgkeeper.db import locks
from pgkeeper.errors import EventError, JobFailedError
from pgkeeper.events import JobEvent
from pgkeeper.handler import handle

ROOT = Path(__file__).resolve().parents[2]

TOKENS = """
CREATE TABLE tokens (
    id         bigint PRIMARY KEY,
    kind       text NOT NULL,
    expires_at timestamptz,
    used_at    timestamptz
);
-- ids 1-40 expired an hour ago, 41-80 expire tomorrow, 81-90 have no expiry at all;
-- 41-45 are live but used; 1-5 are expired 'api' tokens.
INSERT INTO tokens (id, kind, expires_at, used_at)
SELECT g,
       CASE WHEN g <= 5 THEN 'api' ELSE 'reset' END,
       CASE WHEN g <= 40 THEN now() - interval '1 hour' WHEN g <= 80 THEN now() + interval '1 day' END,
       CASE WHEN g BETWEEN 41 AND 45 THEN now() - interval '1 minute' END
FROM generate_series(1, 90) g;
"""


def cleanup(lambda_context, timeout_s: float = 60, budget: Budget | None = None, **options) -> dict:
    return runner.execute(JOB, JobEvent(job="cleanup", options=options), lambda_context(timeout_s=timeout_s),
                          budget=budget)


def cleanup_failing(lambda_context, **options) -> dict:
    """A failed run: the runner records it and raises; the report comes with the exception."""
    with pytest.raises(JobFailedError) as failed:
        cleanup(lambda_context, **options)
    return failed.value.report


def ids(pg, table: str = "tokens") -> set[int]:
    return {r[0] for r in pg.execute(f"SELECT id FROM {table}").fetchall()}


def plan(*targets: dict, **settings) -> dict:
    return {"version": 1, "cleanup": {"targets": list(targets), **settings}}


def test_cleanup_deletes_expired_rows_and_keeps_live_and_unexpiring_ones(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context)

    assert result["status"] == "succeeded"
    assert ids(pg) == set(range(41, 91))  # live and NULL-expiry rows stay
    [target] = result["report"]["targets"]
    assert target["outcome"] == "done"
    assert target["rows_deleted"] == 40 == result["report"]["rows_deleted"]
    assert target["transactions"] >= 1 and target["longest_transaction_ms"] > 0
    assert target["remaining"] == 0 and target["skipped_locked"] == 0
    assert target["method"] == "tid_range"


def test_or_if_and_only_if_clauses_select_exactly_the_rows_they_name(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at",
                     "or_if": [{"column": "used_at", "op": "is_not_null"}],
                     "only_if": [{"column": "kind", "op": "in", "value": ["reset", "verify"]}]}))

    result = cleanup(lambda_context)

    # Expired or used, but only 'reset' tokens: 6-40 (expired) and 41-45 (used) go; api 1-5 stay.
    assert ids(pg) == set(range(1, 6)) | set(range(46, 91))
    assert result["report"]["targets"][0]["rows_deleted"] == 40
    assert "used_at IS NOT NULL" in result["report"]["targets"][0]["condition"]


def test_grace_keeps_rows_that_expired_only_recently(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    pg.execute("UPDATE tokens SET expires_at = now() - interval '3 days' WHERE id <= 10")
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at", "grace": "1 day"}))

    cleanup(lambda_context)

    assert ids(pg) == set(range(11, 91))


def test_dry_run_counts_what_would_go_and_deletes_nothing(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context, dry_run=True)

    assert result["status"] == "succeeded"
    assert ids(pg) == set(range(1, 91))
    [target] = result["report"]["targets"]
    assert target["outcome"] == "dry_run" and target["rows_deleted"] == 0
    assert target["would_delete"] == 40 == result["report"]["would_delete"]
    assert target["estimate"] == {"table_rows": 90, "matching": 40, "exact": True}


def test_dry_run_event_file_runs_through_the_handler(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))
    event = json.loads((ROOT / "events" / "cleanup-dry-run.json").read_text())

    result = handle(JOB, event, lambda_context(timeout_s=60))

    assert result["status"] == "succeeded" and result["report"]["dry_run"] is True
    assert result["report"]["would_delete"] == 40
    assert len(ids(pg)) == 90


def test_prisma_quoted_identifiers(use_db, pg, write_plan, lambda_context):
    pg.execute("""
        CREATE TABLE "Session" (
            id             text PRIMARY KEY,
            "sessionToken" text NOT NULL UNIQUE,
            "userId"       text NOT NULL,
            "expiresAt"    timestamp(3) NOT NULL
        );
        INSERT INTO "Session"
        SELECT 'c' || g, md5(g::text), CASE WHEN g % 10 = 0 THEN 'system' ELSE 'u' || g END,
               (now() AT TIME ZONE 'UTC') + CASE WHEN g <= 30 THEN interval '-2 hours' ELSE interval '2 hours' END
        FROM generate_series(1, 60) g;
    """)
    write_plan(plan({"name": "sessions", "table": '"Session"', "expiry_column": '"expiresAt"',
                     "only_if": [{"column": '"userId"', "op": "ne", "value": "system"}]}))

    result = cleanup(lambda_context, targets=["sessions"])

    left = {r[0] for r in pg.execute('SELECT id FROM "Session"').fetchall()}
    # Expired (1-30) but not the system user's (10, 20, 30) are gone.
    assert left == {f"c{g}" for g in range(31, 61)} | {"c10", "c20", "c30"}
    assert result["report"]["targets"][0]["table"] == 'public."Session"'


def test_timestamp_without_time_zone_is_read_as_utc_whatever_the_server_zone(use_db, pg, write_plan,
                                                                           lambda_context):
    # Prisma writes UTC into timestamp(3). A server in UTC-10 must not see rows expiring in 1h as expired.
    pg.execute("""
        CREATE TABLE s (id int PRIMARY KEY, expires timestamp NOT NULL);
        INSERT INTO s VALUES (1, (now() AT TIME ZONE 'UTC') - interval '1 hour'),
                             (2, (now() AT TIME ZONE 'UTC') + interval '1 hour');
    """)
    pg.execute("ALTER DATABASE " + pg.info.dbname + " SET timezone = 'Pacific/Honolulu'")
    write_plan(plan({"table": "s", "expiry_column": "expires"}))

    cleanup(lambda_context)

    assert ids(pg, "s") == {2}


def test_db_side_function_target_reports_its_counts(use_db, pg, write_plan, lambda_context):
    pg.execute("""
        CREATE TABLE password_reset_tokens (id int PRIMARY KEY, expires_at timestamptz, used_at timestamptz);
        CREATE TABLE refresh_tokens (id int PRIMARY KEY, expires_at timestamptz);
        INSERT INTO password_reset_tokens
        SELECT g, now() + (g - 6.5) * interval '1 hour', NULL FROM generate_series(1, 10) g;
        INSERT INTO refresh_tokens SELECT g, now() + (g - 3.5) * interval '1 hour' FROM generate_series(1, 10) g;
        CREATE FUNCTION cleanup_all_expired_tokens()
        RETURNS TABLE (password_reset_cleaned bigint, refresh_tokens_cleaned bigint, total_cleaned bigint)
        LANGUAGE plpgsql AS $$
        DECLARE a bigint; b bigint;
        BEGIN
          DELETE FROM password_reset_tokens WHERE expires_at < now() OR used_at IS NOT NULL;
          GET DIAGNOSTICS a = ROW_COUNT;
          DELETE FROM refresh_tokens WHERE expires_at < now();
          GET DIAGNOSTICS b = ROW_COUNT;
          RETURN QUERY SELECT a, b, a + b;
        END $$;
        CREATE TABLE sessions (id int PRIMARY KEY, expires_at timestamptz);
        INSERT INTO sessions SELECT g, now() + (g - 2.5) * interval '1 hour' FROM generate_series(1, 5) g;
        CREATE FUNCTION cleanup_expired_sessions() RETURNS integer LANGUAGE sql AS $$
          WITH d AS (DELETE FROM sessions WHERE expires_at < now() RETURNING 1) SELECT count(*)::int FROM d $$;
    """)
    write_plan(plan({"name": "tokens", "function": "cleanup_all_expired_tokens"},
                    {"function": "public.cleanup_expired_sessions"}))

    dry = cleanup(lambda_context, dry_run=True)
    assert [t["would_delete"] for t in dry["report"]["targets"]] == [9, 2]
    assert pg.execute("SELECT count(*) FROM password_reset_tokens").fetchone()[0] == 10  # rolled back

    result = cleanup(lambda_context)

    tokens, sessions = result["report"]["targets"]
    assert tokens["counts"] == {"password_reset_cleaned": 6, "refresh_tokens_cleaned": 3, "total_cleaned": 9}
    assert tokens["rows_deleted"] == 9 and tokens["outcome"] == "done"
    assert sessions["counts"] == {"cleanup_expired_sessions": 2} and sessions["rows_deleted"] == 2
    assert result["report"]["rows_deleted"] == 11
    assert pg.execute("SELECT count(*) FROM password_reset_tokens").fetchone()[0] == 4


class CountdownBudget(Budget):
    """A deadline that arrives after a fixed number of budget checks: the stop point is an input, not a race."""

    def __init__(self, checks: int) -> None:
        super().__init__(3600, reserve_s=0)
        self.checks = checks

    def remaining(self) -> float:
        self.checks -= 1
        return 3600.0 if self.checks >= 0 else 0.0


WIDE = """
CREATE TABLE sessions (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL, data text NOT NULL);
INSERT INTO sessions
SELECT g, now() + CASE WHEN g % 2 = 0 THEN interval '-1 hour' ELSE interval '1 hour' END, repeat('x', 200)
FROM generate_series(1, 20000) g;
"""


def test_cleanup_stops_before_deadline_and_reports_remaining_then_resumes_to_completion(
        use_db, pg, write_plan, lambda_context):
    pg.execute(WIDE)  # ~700 blocks: far more than a few ramp-up batches cover
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at"}))

    first = cleanup(lambda_context, budget=CountdownBudget(checks=4))

    assert first["status"] == "partial"
    [target] = first["report"]["targets"]
    assert target["outcome"] == "partial"
    left = pg.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0]
    assert 0 < target["rows_deleted"] < 10000 and left == 10000 - target["rows_deleted"]
    assert target["remaining"] > 0 and target["stopped_at"]["blocks_walked"] < target["stopped_at"]["blocks"]
    assert pg.execute("SELECT count(*) FROM sessions WHERE expires_at > now()").fetchone()[0] == 10000

    second = cleanup(lambda_context)

    assert second["status"] == "succeeded"
    assert pg.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0] == 0
    assert pg.execute("SELECT count(*) FROM sessions").fetchone()[0] == 10000
    runs = pg.execute("SELECT status FROM pgkeeper.runs WHERE job = 'cleanup' ORDER BY started_at").fetchall()
    assert [r[0] for r in runs] == ["partial", "succeeded"]


def test_a_target_left_for_lack_of_time_is_reported_not_started(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context, budget=CountdownBudget(checks=0))

    assert result["status"] == "partial"
    assert result["report"]["targets"] == [{"target": "tokens", "outcome": "not_started", "rows_deleted": 0}]
    assert len(ids(pg)) == 90


def test_batches_that_would_pass_the_cap_are_cancelled_and_retried_smaller(use_db, pg, write_plan,
                                                                         lambda_context):
    # A slow ON DELETE trigger (2 ms a row, ~7 rows a block): the first batch (8 blocks) would take
    # over 110 ms, past the cap's statement_timeout (96 ms); one block takes ~15 ms.
    pg.execute("""
        CREATE TABLE sessions (id int PRIMARY KEY, expires_at timestamptz NOT NULL, data text NOT NULL);
        INSERT INTO sessions SELECT g, now() - interval '1 hour', repeat('x', 1000) FROM generate_series(1, 120) g;
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN PERFORM pg_sleep(0.002); RETURN OLD; END $$;
        CREATE TRIGGER slow BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION slow();
    """)
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at", "allow_large": True},
                    target_transaction_ms=40, max_transaction_ms=120))

    result = cleanup(lambda_context)

    [target] = result["report"]["targets"]
    assert result["status"] == "succeeded" and target["outcome"] == "done"
    assert target["retried"]["cancelled_at_cap"] >= 1
    assert ids(pg, "sessions") == set()


def test_a_block_that_cannot_fit_the_cap_fails_the_target_with_a_clear_error(use_db, pg, write_plan,
                                                                            lambda_context):
    pg.execute("""
        CREATE TABLE sessions (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
        INSERT INTO sessions SELECT g, now() - interval '1 hour' FROM generate_series(1, 50) g;
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN PERFORM pg_sleep(0.01); RETURN OLD; END $$;
        CREATE TRIGGER slow BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION slow();
    """)
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at", "allow_large": True},
                    target_transaction_ms=20, max_transaction_ms=40))

    report = cleanup_failing(lambda_context)

    [target] = report["targets"]
    assert target["outcome"] == "failed"
    assert "still takes longer than max_transaction_ms" in target["error"]
    assert len(ids(pg, "sessions")) == 50


def test_a_target_failing_midway_reports_the_rows_its_committed_batches_deleted(use_db, pg, write_plan,
                                                                                lambda_context):
    # A row the app still references (no ON DELETE action) near the end of the table: the batches
    # before it commit, the one that reaches it fails.
    pg.execute(WIDE)
    pg.execute("CREATE TABLE devices (id int PRIMARY KEY, session_id bigint REFERENCES sessions(id));"
               "INSERT INTO devices VALUES (1, 19998)")
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at", "allow_large": True}))

    report = cleanup_failing(lambda_context)

    [target] = report["targets"]
    assert target["outcome"] == "failed" and target["error"].startswith("ForeignKeyViolation: ")
    assert "19998" not in target["error"]  # the server's DETAIL quotes the key: data stays out of reports
    left = pg.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0]
    assert 0 < target["rows_deleted"] == 10000 - left == report["rows_deleted"]
    assert 19998 in ids(pg, "sessions")


def test_large_deletes_analyze_the_table(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    pg.execute("ANALYZE tokens")
    before = pg.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'tokens'").fetchone()[0]
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context)

    assert result["report"]["targets"][0]["analyze"] == "done"
    # The statistics now know the table lost 40 of its 90 rows.
    assert pg.execute("SELECT reltuples FROM pg_class WHERE relname = 'tokens'").fetchone()[0] == 50
    after = pg.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'tokens'").fetchone()[0]
    assert after == before + 1


def test_partitioned_table_is_cleaned_partition_by_partition(use_db, pg, write_plan, lambda_context):
    pg.execute("""
        CREATE TABLE events (id bigint, at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
                             PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE events_old PARTITION OF events FOR VALUES FROM ('2000-01-01') TO ('2025-01-01');
        CREATE TABLE events_new PARTITION OF events FOR VALUES FROM ('2025-01-01') TO (MAXVALUE);
        INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN timestamptz '2024-06-01' ELSE now() END,
                                  now() + CASE WHEN g % 3 = 0 THEN interval '-1 day' ELSE interval '1 day' END
        FROM generate_series(1, 60) g;
    """)
    write_plan(plan({"table": "events", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context)

    assert ids(pg, "events") == {g for g in range(1, 61) if g % 3}
    assert result["report"]["targets"][0]["rows_deleted"] == 20


def test_rows_deleted_metric_is_emitted_per_target(use_db, pg, write_plan, lambda_context, capsys):
    pg.execute(TOKENS)
    write_plan(plan({"name": "reset-tokens", "table": "tokens", "expiry_column": "expires_at"}))

    cleanup(lambda_context)

    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    [mine] = [b for b in blobs if b.get("target") == "reset-tokens"]
    assert mine["RowsDeleted"] in (40, [40.0], 40.0)
    assert ["job", "target", "service"] in mine["_aws"]["CloudWatchMetrics"][0]["Dimensions"] or \
        mine["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][:2] == ["job", "target"]


def test_second_concurrent_run_is_skipped_and_deletes_nothing(use_db, pg, write_plan, lambda_context):
    import psycopg

    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))
    with psycopg.connect(use_db, autocommit=True) as other_run:
        assert locks.try_lock(other_run, "cleanup")
        result = cleanup(lambda_context)
    assert result["status"] == "skipped"
    assert len(ids(pg)) == 90


def test_unknown_target_in_options_is_a_bad_request(use_db, pg, write_plan, lambda_context):
    pg.execute(TOKENS)
    write_plan(plan({"table": "tokens", "expiry_column": "expires_at"}))
    with pytest.raises(EventError, match="unknown cleanup target"):
        cleanup(lambda_context, targets=["tokenz"])
    assert len(ids(pg)) == 90


def test_no_targets_is_a_quiet_success(use_db, write_plan, lambda_context):
    write_plan({"version": 1})
    result = cleanup(lambda_context)
    assert result["status"] == "succeeded" and result["report"]["targets"] == []


STEADY = """
CREATE TABLE sessions (id bigint PRIMARY KEY, user_id int NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
-- An hourly run's usual view: 50 of 20,000 sessions expired since the last run.
INSERT INTO sessions SELECT g, g % 100, now() + CASE WHEN g % 400 = 0 THEN interval '-10 minutes'
                                                 ELSE (g % 1000 + 1) * interval '1 hour' END
FROM generate_series(1, 20000) g;
ANALYZE sessions;
"""


def test_a_few_expired_rows_are_deleted_through_the_expiry_index_in_one_transaction(use_db, pg, write_plan,
                                                                                   lambda_context):
    pg.execute(STEADY)
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at"}))

    result = cleanup(lambda_context)

    [target] = result["report"]["targets"]
    assert target["method"] == "index" and target["transactions"] == 1
    assert target["rows_deleted"] == 50 and target["outcome"] == "done"
    assert pg.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0] == 0
    assert pg.execute("SELECT count(*) FROM sessions").fetchone()[0] == 19950


def test_a_locked_row_sends_the_index_path_back_to_the_walk_which_skips_it(use_db, pg, write_plan,
                                                                          lambda_context):
    import psycopg

    pg.execute(STEADY)
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at"}))
    with psycopg.connect(use_db) as app:
        app.execute("SELECT 1 FROM sessions WHERE id = 400 FOR UPDATE")

        result = cleanup(lambda_context)

        app.rollback()
    [target] = result["report"]["targets"]
    assert target["method"] == "tid_range" and target["skipped_locked"] == 1
    assert target["rows_deleted"] == 49
    assert pg.execute("SELECT array_agg(id) FROM sessions WHERE expires_at < now()").fetchone()[0] == [400]


def test_walk_stops_once_every_counted_row_is_gone_when_expired_rows_lead_the_table(use_db, pg, write_plan,
                                                                                   lambda_context):
    # Sessions inserted in time order: the expired half fills the first blocks, the expiry index
    # knows how many there are, and the live half need not be read.
    pg.execute("""
        CREATE TABLE sessions (id bigint PRIMARY KEY, token text NOT NULL, expires_at timestamptz NOT NULL);
        CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
        INSERT INTO sessions SELECT g, md5(g::text), now() + (g - 30000.5) * interval '1 minute'
        FROM generate_series(1, 60000) g;
    """)
    pg.execute("VACUUM ANALYZE sessions")
    # Small batches, so that the table is many batches long and the stop is visible; a cap far above
    # them, so that the count through the index (bounded by the cap) finishes on a loaded machine too.
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at", "allow_large": True},
                    target_transaction_ms=5, max_transaction_ms=2000))

    result = cleanup(lambda_context)

    [target] = result["report"]["targets"]
    assert target["outcome"] == "done" and target["rows_deleted"] == 30000
    [early] = target["stopped_early"]
    assert early["matching_at_start"] == 30000 and early["blocks_walked"] < early["blocks"]
    assert pg.execute("SELECT min(id), count(*) FROM sessions").fetchone() == (30001, 30000)


def test_statistics_after_cleanups_analyze_count_the_live_rows_on_a_never_vacuumed_table(use_db, pg, write_plan,
                                                                                         lambda_context):
    """The deletes' own counters must reach the statistics before the ANALYZE that follows them, or
    they are subtracted from its fresh live count (100,001 live read as 2) and the next vacuum
    analyzes again for nothing."""
    if pg.info.server_version < 150000:
        pytest.skip("pg_stat_force_next_flush() is PostgreSQL 15+")
    pg.execute("CREATE TABLE s (id int PRIMARY KEY, expires_at timestamptz NOT NULL) "
               "WITH (autovacuum_enabled = false)")
    pg.execute("INSERT INTO s SELECT g, now() + CASE WHEN g <= 9999 THEN interval '-1 day' ELSE interval '1 day' END "
               "FROM generate_series(1, 20000) g")
    pg.execute("SELECT pg_stat_force_next_flush()")  # the app's inserts are long counted in production
    write_plan(plan({"table": "s", "expiry_column": "expires_at", "allow_large": True}))

    result = cleanup(lambda_context)

    assert result["report"]["targets"][0]["analyze"] == "done"
    pg.execute("SELECT pg_stat_force_next_flush()")
    live, mods = pg.execute("SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables "
                            "WHERE relname = 's'").fetchone()
    assert live == 10001 and mods == 0
