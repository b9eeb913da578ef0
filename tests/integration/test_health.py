"""The health report against a real PostgreSQL: it finds what was planted, stays quiet on a clean
database, never waits on a lock, and is reachable as a CLI command and as the vacuum job's mode."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgkeeper.cli import main as cli_main
from pgkeeper.handler import handle
from pgkeeper.health import build_report
from pgkeeper.local.context import LocalContext
from pgkeeper.plan import parse_plan
from pgkeeper.vacuum.job import JOB

CLEAN_SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id),
                     created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);
INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO orders (id, customer_id) SELECT g, 1 + g % 2000 FROM generate_series(1, 5000) g;
"""


def load_clean(pg: psycopg.Connection) -> None:
    pg.execute(CLEAN_SCHEMA)
    pg.execute("VACUUM ANALYZE")  # not in a multi-statement string: that would be one transaction


def plan_with(vacuum: dict, tmp_path):
    return parse_plan({"version": 1, "vacuum": vacuum}, base_dir=tmp_path, source="test")


def findings(report: dict, check: str) -> list[dict]:
    [chk] = [c for c in report["checks"] if c["check"] == check]
    return chk["items"]


def severe(report: dict, pg: psycopg.Connection) -> list[tuple[str, str, str]]:
    out = [(c["check"], i["object"], i["message"]) for c in report["checks"] for i in c["items"]
           if i["severity"] in ("warning", "critical")]
    # The test server runs with autovacuum off (so tests control vacuuming); that finding is right.
    if pg.execute("SHOW autovacuum").fetchone()[0] == "off":
        out = [f for f in out if f[:2] != ("settings", "autovacuum")]
    return out


def test_health_finds_planted_problems(pg, db_url, tmp_path):
    load_clean(pg)
    # An unindexed foreign key, an unused and a duplicate index, an invalid (failed concurrent) index.
    pg.execute("CREATE TABLE payments (id int PRIMARY KEY, order_id int REFERENCES orders (id), amount int)")
    pg.execute("INSERT INTO payments SELECT g, g, g FROM generate_series(1, 3000) g")
    pg.execute("CREATE INDEX payments_amount_idx ON payments (amount)")
    pg.execute("CREATE INDEX orders_created_idx ON orders (created_at)")
    pg.execute("CREATE INDEX orders_created_again_idx ON orders (created_at)")
    pg.execute("INSERT INTO customers VALUES (5000, 'c1@example.com') ON CONFLICT DO NOTHING")
    pg.execute("CREATE TABLE signups (email text)")
    pg.execute("INSERT INTO signups VALUES ('a'), ('a')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.execute("CREATE UNIQUE INDEX CONCURRENTLY signups_email_key ON signups (email)")
    pg.execute("ANALYZE")
    plan = plan_with({
        "expected_indexes": [
            {"table": "orders", "columns": ["customer_id", "created_at"]},
            {"table": "payments", "columns": ["order_id"], "name": "payments_order_id_idx"},
        ],
        "health": {"idle_in_transaction_s": 0},
    }, tmp_path)
    idle = psycopg.connect(db_url)
    try:
        idle.execute("SELECT 1")  # BEGIN ... and then nothing: idle in transaction
        idle_pid = idle.info.backend_pid
        with psycopg.connect(db_url, autocommit=True) as conn:
            report = build_report(conn, plan).model_dump(mode="json")
    finally:
        idle.close()

    unused = {i["object"]: i["severity"] for i in findings(report, "unused_indexes")}
    assert unused["public.payments_amount_idx"] == "info"
    [dup] = [i for i in findings(report, "duplicate_indexes") if i["severity"] == "warning"]
    assert (dup["keep"], dup["duplicates"]) == ("public.orders_created_idx", ["public.orders_created_again_idx"])
    [invalid] = findings(report, "invalid_indexes")
    assert (invalid["object"], invalid["severity"], invalid["unique"]) == ("public.signups_email_key", "warning", True)
    [idle_item] = findings(report, "idle_in_transaction")
    assert idle_item["pid"] == idle_pid and idle_item["severity"] == "warning"
    [fk] = findings(report, "unindexed_foreign_keys")
    assert (fk["table"], fk["columns"], fk["references"], fk["severity"]) == (
        "public.payments", ["order_id"], "public.orders", "warning")
    expected = {i["table"]: i for i in findings(report, "expected_indexes")}
    assert expected["public.orders"]["severity"] == "ok"
    assert expected["public.orders"]["found"] == "orders_customer_created_idx"
    assert expected["public.payments"]["severity"] == "warning"
    assert expected["public.payments"]["message"].startswith("MISSING")
    assert report["status"] == "warning"
    m = report["metrics"]
    assert (m["InvalidIndexes"], m["DuplicateIndexes"], m["UnindexedForeignKeys"], m["MissingExpectedIndexes"],
            m["IdleInTransactionSessions"]) == (1, 1, 1, 1, 1)
    assert any("signups_email_key" in line for line in report["summary"])
    json.dumps(report)  # JSON as it is (the signed URL's GET /health?detail=1 body), no default=str


def test_health_reports_nothing_severe_on_clean_database(pg, db_url, tmp_path):
    load_clean(pg)
    plan = plan_with({"expected_indexes": [{"table": "orders", "columns": ["customer_id"]}]}, tmp_path)

    report = build_report(pg, plan).model_dump(mode="json")

    assert severe(report, pg) == []
    assert report["counts"]["critical"] == 0
    sizes = findings(report, "table_sizes")
    assert [i["object"] for i in sizes][:2] == ["public.orders", "public.customers"]
    assert report["metrics"]["WraparoundAgePct"] < 1


def test_health_check_behind_a_lock_says_not_checked_instead_of_waiting(pg, db_url, tmp_path):
    pg.execute("CREATE SEQUENCE busy_seq")
    pg.execute("SELECT nextval('busy_seq')")
    holder = psycopg.connect(db_url)
    try:
        holder.execute("ALTER SEQUENCE busy_seq RESTART WITH 10")  # ACCESS EXCLUSIVE until commit

        report = build_report(pg, plan_with({}, tmp_path)).model_dump(mode="json")

        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        holder.close()
    [chk] = [c for c in report["checks"] if c["check"] == "sequences"]
    assert chk["summary"].startswith("not checked") and chk["severity"] == "info"
    assert len(report["checks"]) > 10  # the other checks still ran


def test_sequence_close_to_its_column_limit_is_critical(pg, tmp_path):
    pg.execute("CREATE TABLE events (id serial PRIMARY KEY, v text)")
    pg.execute("SELECT setval('events_id_seq', 2000000000)")  # 93% of int4, 0.00002% of the bigint sequence

    report = build_report(pg, plan_with({}, tmp_path)).model_dump(mode="json")

    [seq] = findings(report, "sequences")
    assert (seq["object"], seq["severity"]) == ("public.events_id_seq", "critical")
    assert "(int4)" in seq["message"]


def test_health_cli_prints_summary_and_json(pg, use_db, capsys, monkeypatch):
    monkeypatch.delenv("PGKEEPER_PLAN", raising=False)
    load_clean(pg)

    assert cli_main(["health"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("health of ") and "Foreign keys without an index: none" in text

    assert cli_main(["health", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["database"] == pg.info.dbname and {c["check"] for c in report["checks"]} >= {
        "wraparound", "idle_in_transaction", "invalid_indexes", "expected_indexes", "table_bloat"}


def test_vacuum_job_health_mode_returns_the_report(pg, use_db, write_plan):
    write_plan({"version": 1})
    load_clean(pg)

    result = handle(JOB, {"job": "vacuum", "options": {"mode": "health"}}, LocalContext(60))

    assert result["status"] == "succeeded"
    health = result["report"]["health"]
    assert health["database"] == pg.info.dbname and "WraparoundAgePct" in health["metrics"]


def test_sizes_are_right_on_a_database_where_autovacuum_never_ran(pg, tmp_path):
    """relpages is only as new as the last VACUUM/ANALYZE: sizes must come from the files."""
    pg.execute("CREATE TABLE small (id int PRIMARY KEY) WITH (autovacuum_enabled = false)")
    pg.execute("INSERT INTO small SELECT g FROM generate_series(1, 10) g")
    pg.execute("CREATE TABLE grown (id int, v text) WITH (autovacuum_enabled = false)")
    pg.execute("CREATE INDEX grown_v_idx ON grown (v)")  # created empty: relpages says 1 page
    pg.execute("INSERT INTO grown SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
    assert pg.execute("SELECT relpages FROM pg_class WHERE relname = 'grown'").fetchone()[0] == 0

    report = build_report(pg, plan_with({}, tmp_path)).model_dump(mode="json")

    sizes = {i["object"]: i for i in findings(report, "table_sizes")}
    real = pg.execute("SELECT pg_relation_size('grown'), pg_relation_size('grown_v_idx')").fetchone()
    assert list(sizes)[0] == "public.grown", "the largest table comes first, whatever its statistics say"
    assert sizes["public.grown"]["table_bytes"] == real[0] > 5_000_000
    assert sizes["public.grown"]["index_bytes"] == real[1] > 3_000_000
    unused = {i["object"]: i for i in findings(report, "unused_indexes")}
    if "public.grown_v_idx" in unused:
        assert unused["public.grown_v_idx"]["size_bytes"] == real[1]


def test_sizes_of_a_table_a_migration_locks_are_read_without_waiting(pg, db_url, tmp_path):
    pg.execute("CREATE TABLE locked_t AS SELECT g AS id FROM generate_series(1, 1000) g")
    pg.execute("VACUUM ANALYZE locked_t")
    with psycopg.connect(db_url) as migration:
        migration.execute("LOCK TABLE locked_t IN ACCESS EXCLUSIVE MODE")
        report = build_report(pg, plan_with({}, tmp_path)).model_dump(mode="json")
    sizes = {i["object"]: i for i in findings(report, "table_sizes")}
    pages = pg.execute("SELECT relpages FROM pg_class WHERE relname = 'locked_t'").fetchone()[0]
    assert sizes["public.locked_t"]["table_bytes"] == pages * 8192 > 0  # from relpages: no lock taken
