"""The cleanup section of the plan: bad targets are named clearly and nothing is deleted because of them.

Structure problems (unknown operator, negative interval, a table target without an expiry column)
fail when the plan loads; problems only the database can see (missing table or column, a value
that does not fit its column, a function that does not exist) fail `pgkeeper plan check` and the
run before any row of any target is deleted. The safety rail refuses a target matching too much.
"""

from __future__ import annotations

import pytest

from pgkeeper import runner
from pgkeeper.cleanup.job import JOB, check
from pgkeeper.errors import JobFailedError, PlanError
from pgkeeper.events import JobEvent
from pgkeeper.plan import load_plan

TABLES = """
CREATE TABLE sessions (id int PRIMARY KEY, user_id int, kind text, expires_at timestamptz NOT NULL);
INSERT INTO sessions
SELECT g, g % 5, 'web', now() + CASE WHEN g <= 40 THEN interval '-1 hour' ELSE interval '1 hour' END
FROM generate_series(1, 100) g;
CREATE TABLE refresh_tokens (id int PRIMARY KEY, expires_at timestamptz NOT NULL, revoked boolean NOT NULL);
INSERT INTO refresh_tokens SELECT g, now() - interval '1 hour', false FROM generate_series(1, 10) g;
INSERT INTO refresh_tokens SELECT g, now() + interval '1 hour', false FROM generate_series(11, 100) g;
"""


def cleanup(lambda_context, **options) -> dict:
    return runner.execute(JOB, JobEvent(job="cleanup", options=options), lambda_context(timeout_s=60))


def failing(lambda_context, **options) -> dict:
    with pytest.raises(JobFailedError) as failed:
        cleanup(lambda_context, **options)
    return failed.value.report


def count(pg, table: str) -> int:
    return pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def plan(*targets: dict, **settings) -> dict:
    return {"version": 1, "cleanup": {"targets": list(targets), **settings}}


GOOD = {"table": "sessions", "expiry_column": "expires_at"}


@pytest.mark.parametrize(("target", "expected"), [
    ({"table": "sessions"}, "needs `expiry_column`"),
    ({"table": "sessions", "function": "f", "expiry_column": "x"}, "exactly one of `table`"),
    ({"table": "sessions", "expiry_column": "expires_at", "grace": "-1 day"}, "not an interval"),
    ({"table": "sessions", "expiry_column": "expires_at", "grace": "1 day; DROP TABLE x"}, "not an interval"),
    ({"table": "sessions", "expiry_column": "expires_at", "only_if": [{"column": "kind", "op": "like", "value": "%"}]},
     "only_if[0].op"),
    ({"table": "sessions", "expiry_column": "expires_at", "only_if": [{"column": "kind", "op": "eq"}]},
     "needs one value"),
    ({"table": "sessions", "expiry_column": "expires_at", "only_if": [{"column": "kind", "op": "in", "value": []}]},
     "non-empty list"),
    ({"table": "sessions", "expiry_column": "expires_at", "or_if": [{"column": "1=1 OR x", "op": "is_null"}]},
     "not a valid SQL name"),
    ({"table": "sessions", "expiry_column": "expires_at", "where": "expires_at < now()"}, "unknown key"),
    ({"function": "cleanup_x", "max_rows": 5}, "only for table targets"),
])
def test_malformed_targets_fail_when_the_plan_loads(write_plan, target, expected):
    path = write_plan(plan(target))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert any(expected in p for p in err.value.problems), err.value.problems
    assert all(p.startswith("cleanup.") for p in err.value.problems)


def test_duplicate_target_names_fail_when_the_plan_loads(write_plan):
    path = write_plan(plan(GOOD, GOOD))
    with pytest.raises(PlanError, match="two targets are called 'sessions'"):
        load_plan(path)


def test_missing_table_column_or_function_fails_before_anything_is_deleted(use_db, pg, write_plan,
                                                                          lambda_context):
    pg.execute(TABLES)
    write_plan(plan(
        GOOD,  # valid, listed first: still not run
        {"table": "refresh_tokens", "expiry_column": "expires_on"},
        {"table": "sessions", "name": "by-kind", "expiry_column": "expires_at",
         "only_if": [{"column": "knd", "op": "eq", "value": "web"}]},
        {"table": "sesions", "expiry_column": "expires_at"},
        {"function": "cleanup_everything"},
    ))

    report = failing(lambda_context)

    assert count(pg, "sessions") == 100 and count(pg, "refresh_tokens") == 100
    errors = "\n".join(report["errors"])
    assert "refresh_tokens: expiry_column expires_on does not exist in public.refresh_tokens" in errors
    assert "(its columns: id, expires_at, revoked)" in errors
    assert "by-kind: only_if[0].column knd does not exist in public.sessions" in errors
    assert "sesions: table public.sesions does not exist" in errors
    assert "cleanup_everything: function public.cleanup_everything() does not exist" in errors
    assert [t["outcome"] for t in report["targets"]] == ["not_run"] * 5


def test_a_value_that_does_not_fit_its_column_is_a_clear_error(use_db, pg, write_plan, lambda_context):
    pg.execute(TABLES)
    write_plan(plan({"table": "sessions", "expiry_column": "expires_at",
                     "only_if": [{"column": "user_id", "op": "eq", "value": "1; DELETE FROM sessions"}]}))

    report = failing(lambda_context)

    assert count(pg, "sessions") == 100
    [error] = report["errors"]
    assert "the condition does not fit public.sessions: invalid input syntax for type integer" in error


def test_wrong_column_types_and_non_tables_are_refused(use_db, pg, write_plan, lambda_context):
    pg.execute(TABLES)
    pg.execute("CREATE VIEW live_sessions AS SELECT * FROM sessions")
    write_plan(plan({"table": "sessions", "expiry_column": "kind"},
                    {"table": "live_sessions", "expiry_column": "expires_at"},
                    {"table": "sessions", "name": "old", "expiry_column": "expires_at",
                     "only_if": [{"column": "user_id", "op": "older_than", "value": "1 day"}]}))

    report = failing(lambda_context)

    errors = "\n".join(report["errors"])
    assert "expiry_column kind of public.sessions is text; it must be a timestamp or a date" in errors
    assert "public.live_sessions is a view, not a table" in errors
    assert "older_than needs a timestamp or date column; user_id is integer" in errors
    assert count(pg, "sessions") == 100


def test_plan_check_lists_every_problem_against_the_live_database(use_db, pg, write_plan):
    pg.execute(TABLES)
    path = write_plan(plan(GOOD, {"table": "refresh_tokens", "expiry_column": "expires_on"},
                           {"function": "nope"}))
    with pg.transaction():
        problems = check(load_plan(path), pg)
    assert problems == [
        "cleanup.targets[1] (refresh_tokens): expiry_column expires_on does not exist in public.refresh_tokens "
        "(its columns: id, expires_at, revoked)",
        "cleanup.targets[2] (nope): function public.nope() does not exist",
    ]
    assert check(load_plan(write_plan(plan(GOOD))), pg) == []


def test_safety_rail_refuses_a_target_matching_too_much_and_deletes_nothing(use_db, pg, write_plan,
                                                                          lambda_context):
    pg.execute(TABLES)
    # 40% of sessions are expired: more than a 25% rail allows. refresh_tokens (10%) is fine.
    write_plan(plan(GOOD, {"table": "refresh_tokens", "expiry_column": "expires_at"}, max_fraction=0.25))

    report = failing(lambda_context)

    assert count(pg, "sessions") == 100
    sessions, tokens = report["targets"]
    assert sessions["outcome"] == "refused" and sessions["rows_deleted"] == 0
    assert "matches 40 of 100 rows (40%, counted)" in sessions["error"]
    assert "Nothing was deleted" in sessions["error"] and "allow_large: true" in sessions["error"]
    assert tokens["outcome"] == "done" and tokens["rows_deleted"] == 10
    # The run's own words count what it did as a whole: one target's "nothing was deleted" is not the run's.
    assert report["summary"] == "deleted 10 rows; 2 targets: 1 refused by the safety rail, 1 done"

    dry = cleanup(lambda_context, dry_run=True)
    assert dry["report"]["targets"][0]["safety_rail"].startswith("would refuse: safety rail")

    write_plan(plan({**GOOD, "allow_large": True}, max_fraction=0.25))
    assert cleanup(lambda_context)["report"]["rows_deleted"] == 40


def test_row_cap_refuses_too(use_db, pg, write_plan, lambda_context):
    pg.execute(TABLES)
    write_plan(plan({**GOOD, "max_rows": 39}))
    report = failing(lambda_context)
    assert "max_rows 39" in report["targets"][0]["error"]
    assert count(pg, "sessions") == 100
    write_plan(plan({**GOOD, "max_rows": 40}))
    assert cleanup(lambda_context)["report"]["rows_deleted"] == 40


def test_default_rail_is_half_the_table(use_db, pg, write_plan, lambda_context):
    pg.execute(TABLES)
    pg.execute("UPDATE sessions SET expires_at = now() - interval '1 hour' WHERE id <= 60")
    write_plan(plan(GOOD))
    report = failing(lambda_context)
    assert "max_fraction 0.5" in report["targets"][0]["error"]
    assert count(pg, "sessions") == 100


def test_rows_past_the_rail_roll_back_the_index_delete_when_the_sample_missed_them(use_db, pg, write_plan,
                                                                                  lambda_context):
    # 1,070 expired rows, all in blocks the rail's block sample does not read, and planner statistics
    # from before they expired: both estimates say ~0, so the single DELETE through the expiry index
    # is tried. It must not take the table past what max_rows allows.
    pg.execute("""
        CREATE TABLE sessions (id int PRIMARY KEY, expires_at timestamptz NOT NULL, pad text NOT NULL)
            WITH (fillfactor = 50, autovacuum_enabled = off);
        INSERT INTO sessions SELECT g, now() + interval '1 day', repeat('p', 300) FROM generate_series(1, 24000) g;
        CREATE INDEX ON sessions (expires_at);
        ANALYZE sessions;
        -- Updated in place (fillfactor leaves room), so the sample reads the same blocks as before.
        UPDATE sessions SET expires_at = now() - interval '1 hour'
        WHERE id % 12 = 0 AND (ctid::text::point)[0]::int NOT IN (
            SELECT (ctid::text::point)[0]::int FROM sessions
            TABLESAMPLE SYSTEM (100.0 * 1000 / (pg_relation_size('sessions') / 8192)) REPEATABLE (0));
    """)
    expired = count(pg, "sessions WHERE expires_at < now()")
    write_plan(plan({**GOOD, "max_rows": 100}))

    report = failing(lambda_context)

    [target] = report["targets"]
    assert target["estimate"]["matching"] < 100 < expired  # the sample really missed them
    assert target["outcome"] == "failed" and "safety rail: stopped after deleting" in target["error"]
    assert target["method"] != "index"
    assert count(pg, "sessions WHERE expires_at < now()") == expired - target["rows_deleted"]


def test_a_target_whose_table_is_locked_is_named_and_the_others_are_still_cleaned(use_db, pg, db_url, write_plan,
                                                                                  lambda_context):
    """A migration holding ACCESS EXCLUSIVE on one table: that target is `blocked` (run `partial`),
    never an unnamed LockNotAvailable failing the whole run."""
    import psycopg

    pg.execute(TABLES)
    write_plan({**plan(GOOD, {"table": "refresh_tokens", "expiry_column": "expires_at"}),
                "database": {"lock_timeout_ms": 200}})
    with psycopg.connect(db_url) as migration:
        migration.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        result = cleanup(lambda_context)
    assert result["status"] == "partial"
    sessions, tokens = sorted(result["report"]["targets"], key=lambda t: t["target"])[::-1]
    assert (sessions["target"], sessions["outcome"], sessions["rows_deleted"]) == ("sessions", "blocked", 0)
    assert "sessions is locked by another session" in sessions["error"]
    assert tokens["outcome"] == "done" and tokens["rows_deleted"] == 10
    assert count(pg, "sessions") == 100 and count(pg, "refresh_tokens") == 90
    assert result["report"]["summary"] == "deleted 10 rows; 2 targets: 1 blocked by a lock, 1 done"
