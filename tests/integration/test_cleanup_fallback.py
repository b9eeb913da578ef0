"""The keyset fallback (primary-key ranges), what servers older than PostgreSQL 14 get.

This server is newer, so the fallback is forced with the `method` option; it must delete exactly
what the TID-range walk deletes, with any primary key shape, and resume after a deadline.
"""

from __future__ import annotations

import pytest
from test_cleanup import CountdownBudget

from pgkeeper import runner
from pgkeeper.budget import Budget
from pgkeeper.cleanup.job import JOB
from pgkeeper.cleanup.tables import choose_method
from pgkeeper.errors import JobFailedError
from pgkeeper.events import JobEvent


def cleanup(lambda_context, budget: Budget | None = None, **options) -> dict:
    return runner.execute(JOB, JobEvent(job="cleanup", options=options), lambda_context(timeout_s=60),
                          budget=budget)


def plan(table: str, column: str = "expires_at", **target) -> dict:
    return {"version": 1, "cleanup": {"targets": [
        {"table": table, "expiry_column": column, "allow_large": True, **target}]}}


def test_servers_before_14_get_the_keyset_walk():
    assert choose_method("auto", 130012) == "keyset"
    assert choose_method("auto", 140000) == "tid_range"
    assert choose_method("keyset", 160000) == "keyset"


SCATTERED = """
CREATE TABLE sessions (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL, pad text NOT NULL);
INSERT INTO sessions SELECT g, now() + CASE WHEN abs(hashint4(g)) % 3 = 0 THEN interval '-1 hour'
                                            ELSE interval '1 hour' END, repeat('p', 100)
FROM generate_series(1, 30000) g;
"""


def expired(pg, table: str = "sessions", column: str = "expires_at") -> int:
    return pg.execute(f"SELECT count(*) FROM {table} WHERE {column} < now()").fetchone()[0]


def test_keyset_walk_deletes_exactly_the_expired_rows(use_db, pg, write_plan, lambda_context):
    pg.execute(SCATTERED)
    want = pg.execute("SELECT array_agg(id ORDER BY id) FROM sessions WHERE expires_at > now()").fetchone()[0]
    write_plan(plan("sessions"))

    result = cleanup(lambda_context, method="keyset")

    [target] = result["report"]["targets"]
    assert target["method"] == "keyset" and target["outcome"] == "done"
    assert target["transactions"] > 1  # really batched
    assert pg.execute("SELECT array_agg(id ORDER BY id) FROM sessions").fetchone()[0] == want
    assert target["rows_deleted"] == 30000 - len(want)


def test_keyset_walk_handles_text_and_composite_primary_keys(use_db, pg, write_plan, lambda_context):
    pg.execute("""
        CREATE TABLE "VerificationToken" (identifier text, token text, expires timestamp(3) NOT NULL,
                                          PRIMARY KEY (identifier, token));
        INSERT INTO "VerificationToken"
        SELECT 'user' || (g % 37) || '@x.io', md5(g::text),
               (now() AT TIME ZONE 'UTC') + CASE WHEN g % 4 = 0 THEN interval '-1 day' ELSE interval '1 day' END
        FROM generate_series(1, 5000) g;
    """)
    write_plan(plan('"VerificationToken"', "expires"))

    result = cleanup(lambda_context, method="keyset")

    assert result["report"]["targets"][0]["rows_deleted"] == 1250
    assert pg.execute('SELECT count(*) FROM "VerificationToken"').fetchone()[0] == 3750
    assert pg.execute("""SELECT count(*) FROM "VerificationToken" WHERE expires < now() AT TIME ZONE 'UTC'"""
                      ).fetchone()[0] == 0


def test_keyset_walk_stops_at_the_deadline_and_resumes(use_db, pg, write_plan, lambda_context):
    pg.execute(SCATTERED)
    total = expired(pg)
    write_plan(plan("sessions"))

    first = cleanup(lambda_context, budget=CountdownBudget(checks=4), method="keyset")

    [target] = first["report"]["targets"]
    assert first["status"] == "partial" and 0 < target["rows_deleted"] < total
    assert expired(pg) == total - target["rows_deleted"] and target["remaining"] > 0

    cleanup(lambda_context, method="keyset")
    assert expired(pg) == 0 and pg.execute("SELECT count(*) FROM sessions").fetchone()[0] == 30000 - total


def test_keyset_walk_needs_a_primary_key_and_says_so(use_db, pg, write_plan, lambda_context):
    pg.execute("CREATE TABLE audit (at timestamptz NOT NULL); INSERT INTO audit VALUES (now() - interval '1 day')")
    write_plan(plan("audit", "at"))

    with pytest.raises(JobFailedError) as failed:
        cleanup(lambda_context, method="keyset")

    assert failed.value.report["errors"] == [
        "audit: public.audit has no primary key: the keyset batches used on PostgreSQL < 14 need one"]
    assert pg.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
    # The default walk needs no key at all.
    assert cleanup(lambda_context)["report"]["rows_deleted"] == 1
