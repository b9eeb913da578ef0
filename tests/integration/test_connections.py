"""Every connection pgkeeper opens, as the server sees it: pgkeeper's application_name and the
plan's timeouts, also on databases other than the job's (the restore test's scratch database, the
target of `pgkeeper restore`); and statement_timeout capped at the time left, cancelling in time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from pgkeeper.backup import pgtools
from pgkeeper.backup.job import JOB, BackupOptions
from pgkeeper.backup.manifest import Manifest
from pgkeeper.backup.verify import verify_backup
from pgkeeper.budget import Budget
from pgkeeper.cli import main as cli
from pgkeeper.db import Database, DeadlineReached, bound
from pgkeeper.jobs import JobContext, as_dict
from pgkeeper.plan import parse_plan
from pgkeeper.plan.database import DatabaseSettings

BUCKET = "pgk-connections"
DATABASE = {"lock_timeout_ms": 1234, "statement_timeout_s": 77, "idle_in_transaction_timeout_s": 55}
"""Timeouts no default has: seen on a connection, they came from this plan."""

_SEEN = """
SELECT pg_catalog.current_database(), pg_catalog.current_setting('application_name'),
       (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'lock_timeout'),
       (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'statement_timeout'),
       (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'idle_in_transaction_session_timeout')
"""


@contextmanager
def connections_opened() -> Iterator[list[tuple]]:
    """What the server says about each connection opened in this process meanwhile, raw or not:
    (database, application_name, lock_timeout, statement_timeout, idle_in_transaction timeout)."""
    seen: list[tuple] = []
    real = psycopg.connect

    def spy(*args, **kwargs):
        conn = real(*args, **kwargs)
        seen.append(tuple(conn.execute(_SEEN).fetchone()))
        if not conn.autocommit:
            conn.rollback()
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psycopg, "connect", spy)
        yield seen


def _expected(app: str) -> tuple:
    return (app, DATABASE["lock_timeout_ms"], DATABASE["statement_timeout_s"] * 1000,
            DATABASE["idle_in_transaction_timeout_s"] * 1000)


@pytest.fixture()
def backup(db_url, pg, aws, tmp_path, monkeypatch) -> tuple[dict, Path]:
    """A verified (`list`) backup of a small database, its manifest, and the plan file it used."""
    if os.environ.get("PGKEEPER_TEST_PG_BIN_DIR"):
        monkeypatch.setenv("PGKEEPER_PG_BIN_DIR", os.path.abspath(os.environ["PGKEEPER_TEST_PG_BIN_DIR"]))
    else:
        monkeypatch.delenv("PGKEEPER_PG_BIN_DIR", raising=False)
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, note text); "
               "INSERT INTO t SELECT g, repeat('x', g % 40) FROM generate_series(1, 500) g")
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    data = {"version": 1, "database": DATABASE, "backup": {"bucket": BUCKET, "part_size_mib": 5}}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    plan = parse_plan(data, base_dir=tmp_path, source=str(path))
    ctx = JobContext(plan=plan, db=Database(db_url, plan.database, "backup"), budget=Budget(600),
                     options=BackupOptions(verify="list"), run_id="conn0001")
    try:
        report = as_dict(JOB.run(ctx))
    finally:
        ctx.db.close()
    s3 = boto3.client("s3")
    return Manifest.parse(s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read(), "m"), path


def test_the_restore_test_connects_with_the_plans_timeouts_and_pgkeepers_name(backup, db_url, admin_url):
    manifest, path = backup
    settings = parse_plan(yaml.safe_load(path.read_text()), base_dir=path.parent, source=str(path)).database
    with connections_opened() as seen:
        outcome = verify_backup(boto3.client("s3"), BUCKET, manifest, pgtools.find("pg_restore"), mode="restore",
                                server_conninfo=admin_url, run_id="conn0001", settings=settings)
    assert outcome.restore is not None and outcome.restore.rows_match is True
    server = conninfo_to_dict(admin_url)["dbname"]
    # The server's session (CREATE/DROP DATABASE) and the scratch database's (the row counts).
    assert [s[0] for s in seen][0] == server
    assert any(s[0].startswith("pgkeeper_verify_") for s in seen)
    assert all(s[1:] == _expected("pgkeeper/backup/verify") for s in seen), seen


def test_pgkeeper_restore_connects_to_its_target_with_the_plans_timeouts(backup, make_database, db_url, capsys):
    manifest, path = backup
    target = make_database()
    with connections_opened() as seen:
        rc = cli(["restore", "--latest", "--to", target, "--plan", str(path), "--bucket", BUCKET,
                  "--database", conninfo_to_dict(db_url)["dbname"]])
    assert rc == 0, capsys.readouterr().err
    target_db = conninfo_to_dict(target)["dbname"]
    assert {s[0] for s in seen} == {target_db}
    assert {s[1] for s in seen} == {"pgkeeper/restore/check", "pgkeeper/restore/count"}
    assert all(s[2:] == _expected("")[1:] for s in seen), seen
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM t").fetchone()[0] == 500


def test_without_a_plan_pgkeeper_restore_uses_the_default_timeouts(backup, make_database, db_url, capsys,
                                                                   monkeypatch):
    monkeypatch.delenv("PGKEEPER_PLAN", raising=False)
    target = make_database()
    with connections_opened() as seen:
        rc = cli(["restore", "--latest", "--to", target, "--plan", "", "--bucket", BUCKET,
                  "--database", conninfo_to_dict(db_url)["dbname"]])
    assert rc == 0, capsys.readouterr().err
    d = DatabaseSettings()
    assert seen and all(s[2:] == (d.lock_timeout_ms, d.statement_timeout_s * 1000,
                                  d.idle_in_transaction_timeout_s * 1000) for s in seen), seen


def test_a_statement_longer_than_the_time_left_is_cancelled_at_the_deadline(db_url):
    db = Database(db_url, DatabaseSettings(), "test")
    with db.connect(autocommit=True, purpose="bound") as conn:
        limit = bound(conn, Budget(1.0, reserve_s=0.0), cap_ms=60_000, local=False)
        assert limit.by_deadline and 0 < limit.statement_ms <= 1000
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 3


def test_the_bound_is_the_cap_when_time_is_plenty_and_local_to_its_transaction(db_url):
    db = Database(db_url, DatabaseSettings(statement_timeout_s=300), "test")
    with db.connect(autocommit=True, purpose="bound") as conn:
        with conn.transaction():
            limit = bound(conn, Budget(600), cap_ms=1500)
            assert not limit.by_deadline and limit.statement_ms == 1500
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1500ms"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "5min"  # the session's, again
        with pytest.raises(DeadlineReached):
            bound(conn, Budget(0.1, reserve_s=0.0), cap_ms=1500, min_left_ms=200)


def test_a_session_comes_back_after_its_backend_was_terminated(db_url, pg):
    db = Database(db_url, DatabaseSettings(), "test")
    prepared: list[int] = []
    session = db.session(purpose="work", setup=lambda c: prepared.append(c.info.backend_pid))
    try:
        first = session.conn.info.backend_pid
        pg.execute("SELECT pg_terminate_backend(%s)", [first])
        with pytest.raises(psycopg.OperationalError):
            session.conn.execute("SELECT 1")
        second = session.conn.info.backend_pid
        assert second != first and prepared == [first, second]
        app = pg.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [second]).fetchone()[0]
        assert app == "pgkeeper/test/work"
    finally:
        session.close()
