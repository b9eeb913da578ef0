"""Cleanup next to a live application: rows it holds are skipped, rows it extends are never deleted.

The application is another real session. Each race is made deterministic: the app's transaction is
held open while the cleanup runs, or committed exactly while the cleanup's DELETE is seen waiting
for it in pg_stat_activity.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pgkeeper import runner
from pgkeeper.cleanup.job import JOB
from pgkeeper.events import JobEvent

SESSIONS = """
CREATE TABLE sessions (id int PRIMARY KEY, user_id int NOT NULL, expires_at timestamptz NOT NULL);
-- 1-100 expired, 101-200 live; the table spans a few blocks.
INSERT INTO sessions SELECT g, g % 7, now() + CASE WHEN g <= 100 THEN interval '-1 hour' ELSE interval '1 hour' END
FROM generate_series(1, 200) g;
CREATE TABLE devices (id int PRIMARY KEY, session_id int REFERENCES sessions(id));
"""


def cleanup(lambda_context, **options) -> dict:
    return runner.execute(JOB, JobEvent(job="cleanup", options=options), lambda_context(timeout_s=60))


def plan(**settings) -> dict:
    return {"version": 1, "cleanup": {
        "targets": [{"table": "sessions", "expiry_column": "expires_at", "allow_large": True}], **settings}}


def left(pg) -> set[int]:
    return {r[0] for r in pg.execute("SELECT id FROM sessions").fetchall()}


def wait_for(predicate, what: str, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)  # polling interval of a bounded wait
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.parametrize("method", ["tid_range", "keyset"])
def test_rows_locked_by_the_app_are_skipped_and_the_run_still_finishes(use_db, pg, write_plan, lambda_context,
                                                                      method):
    pg.execute(SESSIONS)
    write_plan(plan())
    with psycopg.connect(use_db) as app:
        app.execute("SELECT 1 FROM sessions WHERE id = 10 FOR UPDATE")
        # A foreign-key check's lock (an app inserting a device for session 20) also blocks a DELETE.
        app.execute("INSERT INTO devices VALUES (1, 20)")

        result = cleanup(lambda_context, method=method)

        assert result["status"] == "succeeded"
        [target] = result["report"]["targets"]
        assert target["outcome"] == "done"
        assert target["rows_deleted"] == 98
        assert target["skipped_locked"] == 2 and target["remaining"] == 2
        assert target["retried"]["lock_timeouts"] >= 1
        assert left(pg) == {10, 20} | set(range(101, 201))
        app.rollback()

    again = cleanup(lambda_context, method=method)
    assert again["report"]["targets"][0]["rows_deleted"] == 2
    assert left(pg) == set(range(101, 201))


def test_a_row_whose_expiry_is_extended_in_an_open_transaction_survives(use_db, pg, write_plan, lambda_context):
    pg.execute(SESSIONS)
    write_plan(plan())
    with psycopg.connect(use_db) as app:
        app.execute("UPDATE sessions SET expires_at = now() + interval '30 days' WHERE id = 42")

        result = cleanup(lambda_context)

        assert result["report"]["targets"][0]["skipped_locked"] == 1
        app.commit()
    assert left(pg) == {42} | set(range(101, 201))
    # Once committed the row is simply live: the next run leaves it alone too.
    assert cleanup(lambda_context)["report"]["targets"][0]["rows_deleted"] == 0
    assert 42 in left(pg)


@pytest.mark.parametrize("method", ["tid_range", "keyset"])
def test_a_row_extended_while_the_delete_waits_for_it_is_rechecked_and_kept(use_db, pg, write_plan,
                                                                           lambda_context, method):
    pg.execute(SESSIONS)
    # Long enough to wait for the app here: the DELETE must see the committed new version.
    write_plan(plan(lock_timeout_ms=15000, max_transaction_ms=20000))
    with psycopg.connect(use_db) as app:
        app.execute("UPDATE sessions SET expires_at = now() + interval '30 days' WHERE id = 42")
        outcome: dict = {}
        worker = threading.Thread(target=lambda: outcome.update(cleanup(lambda_context, method=method)))
        worker.start()
        try:
            wait_for(lambda: pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkeeper/cleanup/delete' "
                "AND wait_event_type = 'Lock' AND datname = current_database()").fetchone()[0] == 1,
                "the cleanup's DELETE to wait for the app's row")
            app.commit()
        finally:
            worker.join(30)
    target = outcome["report"]["targets"][0]
    assert target["outcome"] == "done" and target["skipped_locked"] == 0
    assert target["rows_deleted"] == 99
    assert left(pg) == {42} | set(range(101, 201))
    assert pg.execute("SELECT expires_at > now() + interval '29 days' FROM sessions WHERE id = 42").fetchone()[0]


def test_a_table_lock_held_by_a_migration_stops_the_target_as_partial(use_db, pg, write_plan, lambda_context):
    pg.execute(SESSIONS)
    write_plan(plan())
    with psycopg.connect(use_db) as migration:
        migration.execute("LOCK TABLE sessions IN SHARE MODE")

        result = cleanup(lambda_context)

        migration.rollback()
    assert result["status"] == "partial"
    [target] = result["report"]["targets"]
    assert target["outcome"] == "blocked" and "locked by another session" in target["error"]
    assert target["rows_deleted"] == 0 and target["remaining"] == 100
    assert len(left(pg)) == 200
