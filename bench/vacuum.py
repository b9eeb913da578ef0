"""The weekly vacuum job against the baseline users run today, `vacuumdb --analyze` over the database.

A database of N tables (~20k rows each) where ~10% are dirty (half their rows updated): the
baseline vacuums and analyzes every table; pgkeeper only the dirty ones. Rounds alternate
(baseline, re-dirty the same tables the same way, pgkeeper) on one database, so both face the same
tables. After each pgkeeper run, pg_stat_user_tables must show every dirty table clean.
Then the health report is timed on a database with 1,000 tables (the issue's < 2 s).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from common import scratch_database
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"  vacuum: {msg}", file=sys.stderr, flush=True)


def build(url: str, tables: int, rows: int) -> list[str]:
    names = [f"t{i:04d}" for i in range(tables)]
    with psycopg.connect(url, autocommit=True) as c:
        for name in names:
            ident = sql.Identifier(name)
            # Autovacuum off per table: nothing cleans behind the measurement's back.
            c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text, n int) "
                              "WITH (autovacuum_enabled = false)").format(ident))
            c.execute(sql.SQL("INSERT INTO {} SELECT g, md5(g::text), g %% 100 FROM generate_series(1, %s) g")
                      .format(ident), [rows])
    subprocess.run(["vacuumdb", "--analyze", "--quiet", "-d", url], check=True)
    return names


def dirty(url: str, names: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for name in names:
            c.execute(sql.SQL("UPDATE {} SET n = n + 1 WHERE id % 2 = 0").format(sql.Identifier(name)))
        c.execute("SELECT pg_stat_force_next_flush()")
    wait_dirty(url, names)


def dead_tuples(url: str, names: list[str]) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as c:
        return dict(c.execute("SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                              [names]).fetchall())


def wait_dirty(url: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Statistics reach shared memory asynchronously: poll (bounded) until every dirty table shows it."""
    deadline = time.monotonic() + timeout_s
    while min(dead_tuples(url, names).values()) == 0:
        if time.monotonic() > deadline:
            raise SystemExit("bench vacuum: dirty tables never showed their dead tuples")
        time.sleep(0.05)


def time_vacuumdb(url: str) -> float:
    t0 = time.monotonic()
    subprocess.run(["vacuumdb", "--analyze", "--quiet", "-d", url], check=True)
    return time.monotonic() - t0


def time_pgkeeper(url: str, plan: Path) -> tuple[float, dict]:
    from pgkeeper import config
    from pgkeeper.handler import handle
    from pgkeeper.local.context import LocalContext
    from pgkeeper.vacuum.job import JOB

    os.environ["DATABASE_URL"] = url
    os.environ["PGKEEPER_PLAN"] = str(plan)
    config.reset()
    t0 = time.monotonic()
    result = handle(JOB, {"job": "vacuum", "options": {}, "trigger": "schedule"}, LocalContext(900))
    return time.monotonic() - t0, result


def build_many(url: str, tables: int) -> None:
    """1,000 small tables, each with a primary key (serial), an index and a foreign key, analyzed."""
    with psycopg.connect(url) as c, c.pipeline():
        for i in range(tables):
            t = sql.Identifier(f"h{i:04d}")
            ref = sql.SQL("REFERENCES {} (id)").format(sql.Identifier(f"h{i - 1:04d}")) if i else sql.SQL("")
            c.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, parent int {}, v text, at timestamptz)")
                      .format(t, ref))
            c.execute(sql.SQL("CREATE INDEX ON {} (v)").format(t))
            c.execute(sql.SQL("INSERT INTO {} (parent, v, at) SELECT {}, md5(g::text), now() "
                              "FROM generate_series(1, 50) g").format(t, sql.Literal(1 if i else None)))
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ANALYZE")


def time_health(url: str, runs: int = 3) -> tuple[float, float, dict]:
    from pgkeeper.health import build_report
    from pgkeeper.log import logger
    from pgkeeper.plan import Plan

    logger.setLevel("WARNING")
    times = []
    report: dict = {}
    for _ in range(runs):
        with psycopg.connect(url, autocommit=True) as c:  # a fresh connection each time, like a Lambda call
            t0 = time.monotonic()
            report = build_report(c, Plan()).model_dump(mode="json")
            times.append(time.monotonic() - t0)
    return times[0], statistics.median(times), report


def main(quick: bool) -> dict:
    tables, dirty_n, rows = 200, 20, (5_000 if quick else 20_000)
    rounds = 1 if quick else 3
    health_tables = 1000
    from pgkeeper.log import logger

    logger.setLevel("WARNING")
    result: dict = {"tables": tables, "dirty_tables": dirty_n, "rows_per_table": rows, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp, scratch_database("pgk_bench_vac") as url:
        plan = Path(tmp) / "plan.yaml"
        plan.write_text("version: 1\n")
        log(f"building {tables} tables x {rows} rows in {conninfo_to_dict(url)['dbname']}")
        names = build(url, tables, rows)
        dirty_names = names[:: tables // dirty_n][:dirty_n]
        base_t, ours_t, left, base_left = [], [], [], []
        for r in range(rounds):
            dirty(url, dirty_names)
            base_t.append(time_vacuumdb(url))
            base_left.append(sum(1 for v in dead_tuples(url, dirty_names).values() if v > 0))
            dirty(url, dirty_names)
            elapsed, res = time_pgkeeper(url, plan)
            ours_t.append(elapsed)
            dead = dead_tuples(url, dirty_names)
            left.append(sum(1 for v in dead.values() if v > 0))
            report = res["report"]
            log(f"round {r + 1}: vacuumdb {base_t[-1]:.2f}s, pgkeeper {elapsed:.2f}s "
                f"({report['counts']}, status {res['status']}), dirty tables left {left[-1]}")
        result.update(
            vacuumdb_s=round(statistics.median(base_t), 3),
            pgkeeper_s=round(statistics.median(ours_t), 3),
            time_ratio=round(statistics.median(ours_t) / statistics.median(base_t), 3),
            dirty_tables_left=max(left),
            baseline_dirty_tables_left=max(base_left),
            pgkeeper_selected=report["selected"],
            pgkeeper_considered=report["considered"],
        )
    with scratch_database("pgk_bench_health") as url:
        log(f"building {health_tables} tables for the health report")
        build_many(url, health_tables)
        cold, warm, report = time_health(url)
        result.update(
            health_seconds_1000_tables=round(cold, 3),
            health_seconds_1000_tables_warm=round(warm, 3),
            health_tables_seen=next(c for c in report["checks"] if c["check"] == "table_sizes")["summary"],
        )
    return result
