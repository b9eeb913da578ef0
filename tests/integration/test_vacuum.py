"""The vacuum job against a real PostgreSQL: selection by need, SKIP_LOCKED, the deadline, carry-over,
proactive freeze, hot-table ANALYZE and the rebuild of invalid indexes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgkeeper.errors import EventError
from pgkeeper.handler import handle
from pgkeeper.local.context import LocalContext
from pgkeeper.vacuum.job import JOB

ROOT = Path(__file__).resolve().parents[2]

# Autovacuum is switched off per table so it cannot clean (or count) behind the test's back.
TABLE = "CREATE TABLE {name} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false{extra})"


def make_table(pg: psycopg.Connection, name: str, rows: int = 5000, extra: str = "") -> None:
    pg.execute(TABLE.format(name=name, extra=extra))
    pg.execute(f"INSERT INTO {name} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")
    pg.execute(f"VACUUM ANALYZE {name}")


def dirty(url: str, name: str, every: int = 1) -> int:
    """Update every `every`-th row from another session; returns the dead tuples the table then has."""
    with psycopg.connect(url, autocommit=True) as c:
        n = c.execute(f"UPDATE {name} SET v = v || 'x' WHERE id % {every} = 0").rowcount
        c.execute("SELECT pg_stat_force_next_flush()")  # flushed at the end of this statement's transaction
    return n


def stats(pg: psycopg.Connection, name: str) -> dict:
    row = pg.execute(
        "SELECT n_dead_tup, last_vacuum, vacuum_count, last_analyze, analyze_count, "
        "age(c.relfrozenxid) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = %s",
        [name],
    ).fetchone()
    keys = ["n_dead_tup", "last_vacuum", "vacuum_count", "last_analyze", "analyze_count", "xid_age"]
    return dict(zip(keys, row, strict=True))


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll with a bounded deadline: statistics reach shared memory asynchronously."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_dead(pg: psycopg.Connection, name: str, at_least: int) -> None:
    wait_for(lambda: stats(pg, name)["n_dead_tup"] >= at_least, what=f"{name} to show {at_least} dead tuples")


XIDS = pytest.mark.xdist_group("cluster-xids")
"""Tests that burn transaction ids and read ages off the cluster-wide xid counter: under pytest-xdist
they run on one worker, so no other test burns ids between a VACUUM and the age read after it."""


def burn_xids(pg: psycopg.Connection, n: int) -> None:
    """Consume `n` transaction ids in separate transactions (a procedure commits in its loop)."""
    pg.execute("CREATE OR REPLACE PROCEDURE pg_temp.burn(n int) LANGUAGE plpgsql AS "
               "$$ BEGIN FOR i IN 1..n LOOP PERFORM pg_catalog.txid_current(); COMMIT; END LOOP; END $$")
    pg.execute("SET synchronous_commit = off")
    pg.execute("CALL pg_temp.burn(%s)", [n])
    pg.execute("RESET synchronous_commit")


def current_xid(pg: psycopg.Connection) -> int:
    return int(pg.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])


def pin_with_young_snapshot(url: str, table: str, after_xid: int, timeout_s: float = 30.0) -> psycopg.Connection:
    """A session keeping `table`'s first page pinned (an open cursor), whose snapshot is younger than `after_xid`.

    An aggressive VACUUM waits for such a pin only if the page holds rows to freeze: rows older than the
    database's xmin horizon, which this session's snapshot sets. A snapshot's xmin is the oldest
    transaction still running anywhere in the cluster, so a long transaction in another database (another
    test run, a CREATE DATABASE) would leave nothing freezable and the VACUUM would not wait at all: wait
    (bounded) until every transaction from before `after_xid` has ended.
    """
    pin = psycopg.connect(url)
    pin.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # the cursor reads with the snapshot checked

    def young() -> bool:
        pin.rollback()
        row = pin.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
        return int(row[0]) > after_xid

    try:
        wait_for(young, timeout_s, what=f"transactions older than {table}'s rows to end (xmin horizon)")
        pin.execute(sql.SQL("DECLARE c CURSOR FOR SELECT * FROM {}").format(sql.Identifier(table)))
        pin.execute("FETCH 1 FROM c")
    except BaseException:
        pin.close()
        raise
    return pin


def run(options: dict | None = None, timeout_s: float = 120.0) -> dict:
    return handle(JOB, {"job": "vacuum", "options": options or {}}, LocalContext(timeout_s))


def by_table(result: dict) -> dict[str, dict]:
    return {t["table"]: t for t in result["report"]["tables"]}


@pytest.fixture()
def plan(use_db, write_plan):
    def write(vacuum: dict | None = None) -> None:
        write_plan({"version": 1, "vacuum": vacuum or {}})

    write()
    return write


def test_dirty_table_is_vacuumed_and_clean_one_skipped(pg, db_url, plan):
    make_table(pg, "dirty")
    make_table(pg, "clean")
    clean_before = stats(pg, "clean")
    dead = dirty(db_url, "dirty", every=2)
    wait_dead(pg, "dirty", dead)

    result = run()

    assert result["status"] == "succeeded"
    tables = by_table(result)
    assert set(tables) == {"public.dirty"}
    item = tables["public.dirty"]
    assert item["outcome"] == "vacuumed"
    assert item["dead_tuples_before"] >= dead
    assert item["dead_tuples_after"] == 0
    after = stats(pg, "dirty")
    assert after["n_dead_tup"] == 0 and after["last_vacuum"] is not None
    clean_after = stats(pg, "clean")
    assert clean_after["vacuum_count"] == clean_before["vacuum_count"]
    assert clean_after["analyze_count"] == clean_before["analyze_count"]
    assert result["report"]["considered"] == 2


def test_dry_run_reports_selection_and_changes_nothing(pg, db_url, plan):
    make_table(pg, "dirty")
    dead = dirty(db_url, "dirty")
    wait_dead(pg, "dirty", dead)
    before = stats(pg, "dirty")

    result = run({"dry_run": True})

    assert [(t["table"], t["outcome"]) for t in result["report"]["tables"]] == [("public.dirty", "planned")]
    assert stats(pg, "dirty")["vacuum_count"] == before["vacuum_count"]
    assert pg.execute("SELECT count(*) FROM pgkeeper.vacuum_backlog").fetchone()[0] == 0


def test_table_under_access_exclusive_lock_is_skipped_reported_and_done_next_run(pg, db_url, plan):
    make_table(pg, "locked")
    make_table(pg, "free")
    for name in ("locked", "free"):
        wait_dead(pg, name, dirty(db_url, name))
    holder = psycopg.connect(db_url)
    try:
        holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid

        result = run()

        # The run came back while the lock was still held: it never waited for it.
        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert result["status"] == "partial"
        tables = by_table(result)
        assert tables["public.free"]["outcome"] == "vacuumed"
        skipped = tables["public.locked"]
        assert skipped["outcome"] == "skipped"
        assert f"pid {holder_pid}" in skipped["why"] and "AccessExclusiveLock" in skipped["why"]
        assert result["report"]["unfinished"] == [
            {"table": "public.locked", "outcome": "skipped", "why": skipped["why"]}
        ]
    finally:
        holder.close()
    assert stats(pg, "locked")["n_dead_tup"] > 0

    again = run()

    assert again["status"] == "succeeded"
    first = again["report"]["tables"][0]
    assert (first["table"], first["outcome"], first["carried_over"]) == ("public.locked", "vacuumed", True)
    assert first["earlier_attempts"] == 1
    assert stats(pg, "locked")["n_dead_tup"] == 0


@XIDS
def test_deadline_stops_the_run_and_next_run_resumes_with_what_was_left(pg, db_url, plan):
    plan({"thresholds": {"dead_tuples": 10, "dead_ratio": 0.01}, "min_seconds_per_table": 1})
    # `old` is past its (per-table) freeze max age, so it goes first and is vacuumed with FREEZE, which
    # must wait for the cleanup lock on a page another session keeps pinned with an open cursor.
    make_table(pg, "old", rows=100, extra=", autovacuum_freeze_max_age = 100000")
    written = current_xid(pg)
    make_table(pg, "d1")
    make_table(pg, "d2")
    for name in ("d1", "d2"):
        wait_dead(pg, name, dirty(db_url, name, every=10))
    burn_xids(pg, 110_000)
    pin = pin_with_young_snapshot(db_url, "old", after_xid=written)
    try:
        result = run(timeout_s=4)

        assert pin.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still pinned: no waiting
    finally:
        pin.close()
    report = result["report"]
    assert result["status"] == "partial"
    assert [(t["table"], t["action"], t["outcome"]) for t in report["tables"]] == [
        ("public.old", "freeze", "left"), ("public.d1", "vacuum", "left"), ("public.d2", "vacuum", "left"),
    ]
    assert "statement_timeout" in report["tables"][0]["why"]
    assert all(t["why"].startswith("deadline") for t in report["tables"][1:])
    assert report["stopped"].startswith("deadline")
    backlog = pg.execute("SELECT table_name, action FROM pgkeeper.vacuum_backlog ORDER BY 1").fetchall()
    assert backlog == [("d1", "vacuum"), ("d2", "vacuum"), ("old", "freeze")]

    again = run()

    assert again["status"] == "succeeded"
    tables = again["report"]["tables"]
    assert [(t["table"], t["outcome"], t["carried_over"]) for t in tables] == [
        ("public.old", "frozen", True), ("public.d1", "vacuumed", True), ("public.d2", "vacuumed", True),
    ]
    assert tables[0]["xid_age_after"] < 1000 < tables[0]["xid_age_before"]
    assert pg.execute("SELECT count(*) FROM pgkeeper.vacuum_backlog").fetchone()[0] == 0


@XIDS
def test_freeze_selection_respects_per_table_freeze_max_age(pg, plan):
    make_table(pg, "young_limit", rows=1000, extra=", autovacuum_freeze_max_age = 100000")
    make_table(pg, "default_limit", rows=1000)
    burn_xids(pg, 60_000)  # 60% of the reloption's 100000, a rounding error of the global 200 million

    result = run()

    tables = by_table(result)
    assert set(tables) == {"public.young_limit"}
    item = tables["public.young_limit"]
    assert (item["action"], item["outcome"]) == ("freeze", "frozen")
    assert "autovacuum_freeze_max_age 100,000" in item["reasons"][0]
    assert item["xid_age_before"] >= 60_000 and item["xid_age_after"] < 1000
    assert stats(pg, "young_limit")["xid_age"] < 1000
    assert stats(pg, "default_limit")["xid_age"] >= 60_000


def test_analyze_mode_analyzes_changed_hot_tables_only(pg, db_url, plan):
    plan({"analyze": ["hot", "quiet"]})
    for name in ("hot", "quiet", "other"):
        make_table(pg, name)
    for name in ("hot", "other"):
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f"UPDATE {name} SET v = 'x' WHERE id <= 10")
            c.execute("SELECT pg_stat_force_next_flush()")
    wait_for(lambda: pg.execute("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'hot'")
             .fetchone()[0] >= 10, what="hot's changes")
    before = {n: stats(pg, n)["analyze_count"] for n in ("hot", "quiet", "other")}
    event = json.loads((ROOT / "events" / "vacuum-analyze.json").read_text())

    result = handle(JOB, event, LocalContext(60))

    assert result["status"] == "succeeded"
    assert [(t["table"], t["action"], t["outcome"]) for t in result["report"]["tables"]] == [
        ("public.hot", "analyze", "analyzed")
    ]
    after = {n: stats(pg, n)["analyze_count"] for n in ("hot", "quiet", "other")}
    assert after == {"hot": before["hot"] + 1, "quiet": before["quiet"], "other": before["other"]}
    assert stats(pg, "other")["vacuum_count"] == 1  # only the setup's VACUUM: analyze mode never vacuums


def test_explicit_tables_option_processes_exactly_those_and_rejects_unknown(pg, plan):
    make_table(pg, "a")
    make_table(pg, "b")

    result = run({"tables": ["a"]})

    assert [(t["table"], t["outcome"], t["reasons"]) for t in result["report"]["tables"]] == [
        ("public.a", "vacuumed", ["requested"])
    ]
    with pytest.raises(EventError, match="tables not found: public.nope"):
        run({"tables": ["a", "nope"]})


def test_invalid_index_rebuild_is_reported_and_leaves_no_leftovers(pg, plan):
    plan({"reindex_invalid": True})
    pg.execute("CREATE TABLE accounts (id int, email text) WITH (autovacuum_enabled = false)")
    pg.execute("INSERT INTO accounts VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_email_key ON accounts (email)")

    failed = run()

    [item] = failed["report"]["invalid_indexes"]
    assert (item["index"], item["outcome"]) == ("public.accounts_email_key", "failed")
    assert item["why"].startswith("23505")
    assert len(item["dropped_leftovers"]) == 1 and "ccnew" in item["dropped_leftovers"][0]
    assert failed["status"] == "partial"
    names = [r[0] for r in pg.execute("SELECT indexrelid::regclass::text FROM pg_index "
                                      "WHERE indrelid = 'accounts'::regclass").fetchall()]
    assert names == ["accounts_email_key"]

    pg.execute("DELETE FROM accounts WHERE id = 2")
    rebuilt = run()

    assert [(i["index"], i["outcome"]) for i in rebuilt["report"]["invalid_indexes"]] == [
        ("public.accounts_email_key", "rebuilt")
    ]
    assert pg.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_email_key'::regclass"
                      ).fetchone()[0] is True


def test_plan_check_names_missing_vacuum_tables_and_columns(pg, plan, use_db):
    from pgkeeper.config import get_plan

    make_table(pg, "present")
    plan({"analyze": ["present", "absent"],
          "expected_indexes": [{"table": "present", "columns": ["v", "nope"]}]})

    problems = JOB.check(get_plan(), pg)

    assert problems == [
        "vacuum.analyze[1]: table public.absent not found",
        "vacuum.expected_indexes[0].columns[1]: column nope not found in public.present",
    ]


def test_bad_vacuum_plan_lists_every_problem(tmp_path):
    from pgkeeper.errors import PlanError
    from pgkeeper.plan import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text("vacuum:\n  thresholds: {dead_ratio: 2, freez_age_fraction: 0.5}\n"
                    "  expected_indexes: [{table: x, columns: []}]\n  schemas: ['a.b']\n")
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    text = str(exc.value)
    for where in ("vacuum.thresholds.dead_ratio", "vacuum.thresholds.freez_age_fraction",
                  "vacuum.expected_indexes[0].columns", "vacuum.schemas[0]"):
        assert where in text


@XIDS
def test_toast_freeze_max_age_counts_in_the_selection_and_the_health_report_alike(pg, plan):
    from pgkeeper.config import get_plan
    from pgkeeper.health import build_report

    make_table(pg, "toast_limit", rows=1000, extra=", toast.autovacuum_freeze_max_age = 100000")
    make_table(pg, "default_limit", rows=1000)
    burn_xids(pg, 60_000)

    health = build_report(pg, get_plan()).model_dump(mode="json")
    result = run()

    assert [(t["table"], t["action"], t["outcome"]) for t in result["report"]["tables"]] == [
        ("public.toast_limit", "freeze", "frozen")
    ]
    [chk] = [c for c in health["checks"] if c["check"] == "wraparound_tables"]
    oldest = chk["items"][0]
    assert (oldest["object"], oldest["freeze_max_age"], oldest["severity"]) == ("public.toast_limit", 100_000, "info")
    assert oldest["freeze_fraction"] >= 0.6


def test_the_main_session_killed_during_a_long_vacuum_still_ends_succeeded(pg, db_url, plan):
    """A pooler's idle timeout or an operator can end the job's idle main session while a VACUUM runs:
    the finished vacuum is recorded done (not failed, not carried over) and the run succeeded."""
    import threading

    make_table(pg, "slow")
    dead = dirty(db_url, "slow")
    wait_dead(pg, "slow", dead)
    # A cost-based delay on every new session of this database makes the VACUUM itself take a while.
    dbname = pg.info.dbname
    pg.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_delay = '2ms'").format(sql.Identifier(dbname)))
    pg.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_limit = 1").format(sql.Identifier(dbname)))
    killed: list[int] = []

    def kill_main_once_vacuum_runs() -> None:
        with psycopg.connect(db_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed:
                row = watcher.execute(
                    "SELECT (SELECT pid FROM pg_stat_activity WHERE application_name = 'pgkeeper/vacuum' "
                    "AND datname = current_database()) FROM pg_stat_activity WHERE query LIKE 'VACUUM%%slow%%' "
                    "AND state = 'active' AND datname = current_database()").fetchone()
                if row and row[0]:
                    watcher.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                    killed.append(row[0])
                time.sleep(0.005)

    watcher = threading.Thread(target=kill_main_once_vacuum_runs)
    watcher.start()
    try:
        result = run({"tables": ["slow"]})
    finally:
        watcher.join()
    assert killed, "the main session was never seen idle during the VACUUM"
    assert result["status"] == "succeeded", result
    assert by_table(result)["public.slow"]["outcome"] == "vacuumed"
    assert stats(pg, "slow")["n_dead_tup"] == 0
    assert pg.execute("SELECT status FROM pgkeeper.runs").fetchall() == [("succeeded",)]
    assert pg.execute("SELECT count(*) FROM pgkeeper.vacuum_backlog").fetchone()[0] == 0
