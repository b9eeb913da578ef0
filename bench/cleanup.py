"""Cleanup throughput: pgkeeper's batched deletes against the single `DELETE ... WHERE expires_at < now()`.

A sessions table (bigint id, user id, token with a unique index, expires_at with an index,
created_at), half of it expired, in two layouts: expired rows scattered through the table, and
clustered at its start. Each measured run starts from the same data, rebuilt (copied from a source
table in physical order, indexed, VACUUM ANALYZEd, CHECKPOINTed), so every run sees the same pages,
visibility map and buffer state.

  baseline   one DELETE (the user's statement), best of JIT on (the server's default) and off
  pgkeeper   the cleanup job through `runner.execute` (lock, run record, validation, sample, batches);
             its time excludes only the ANALYZE at the end, which the baseline does not do
             (reported as analyze_ms)
  writer     a concurrent app writer (INSERT a session, UPDATE a live one's expiry, autocommit)
             during one run of each: its p99 latency, and how many operations it completed
Also: the primary-key keyset fallback (forced, what PostgreSQL < 14 gets) and the SKIP LOCKED
statement used for every batch (pgkeeper only uses it to retry a range after a lock timeout).

throughput_ratio = pgkeeper rows/s over baseline rows/s (medians of the repeats), the worse layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from common import percentile, scratch_database

LAYOUTS = ("scattered", "clustered")

SCHEMA = """
CREATE TABLE sessions (
    id         bigint PRIMARY KEY,
    user_id    bigint NOT NULL,
    token      text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
)"""


def log(msg: str) -> None:
    print(f"  cleanup: {msg}", file=sys.stderr, flush=True)


def make_source(conn: psycopg.Connection, layout: str, rows: int) -> None:
    """src_<layout>: the rows in the physical order every rebuild copies."""
    expired = ("abs(hashint8(g)) % 2 = 0" if layout == "scattered" else f"g <= {rows // 2}")
    conn.execute(f"DROP TABLE IF EXISTS src_{layout}")
    conn.execute(f"""
        CREATE TABLE src_{layout} AS
        SELECT g AS id, g % 50000 AS user_id, md5(g::text) AS token,
               CASE WHEN {expired} THEN now() - interval '1 hour' - (abs(hashint8(g * 7)) % 43200) * interval '1 minute'
                    ELSE now() + interval '1 hour' + (abs(hashint8(g * 7)) % 43200) * interval '1 minute' END AS expires_at,
               now() - interval '30 days' + (g % 43200) * interval '1 minute' AS created_at
        FROM generate_series(1, {rows}) g""")


def rebuild(conn: psycopg.Connection, layout: str) -> None:
    conn.execute("DROP TABLE IF EXISTS sessions")
    conn.execute(SCHEMA.replace("PRIMARY KEY", ""))
    conn.execute(f"INSERT INTO sessions SELECT * FROM src_{layout}")
    conn.execute("ALTER TABLE sessions ADD PRIMARY KEY (id)")
    conn.execute("CREATE UNIQUE INDEX sessions_token_key ON sessions (token)")
    conn.execute("CREATE INDEX sessions_expires_at_idx ON sessions (expires_at)")
    conn.execute("VACUUM ANALYZE sessions")
    conn.execute("CHECKPOINT")


class Writer(threading.Thread):
    """The app: inserts new sessions and extends live ones, one autocommit statement at a time."""

    def __init__(self, url: str, live_ids: tuple[int, int, int]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.lo, self.hi, self.step = live_ids
        self.stop_flag = threading.Event()
        self.started_flag = threading.Event()
        self.latencies_ms: list[float] = []

    def run(self) -> None:
        rnd = random.Random(7)
        with psycopg.connect(self.url, autocommit=True) as c:
            next_id = 10_000_000_000
            self.started_flag.set()
            while not self.stop_flag.is_set():
                t = time.perf_counter()
                if rnd.random() < 0.5:
                    next_id += 1
                    c.execute("INSERT INTO sessions VALUES (%s, 1, md5(%s::text), now() + interval '1 day', now())",
                              [next_id, next_id])
                else:
                    live = self.lo + self.step * rnd.randrange((self.hi - self.lo) // self.step)
                    c.execute("UPDATE sessions SET expires_at = expires_at + interval '1 minute' "
                              "WHERE id = %s AND expires_at > now()", [live])
                self.latencies_ms.append((time.perf_counter() - t) * 1000)


def live_range(layout: str, rows: int) -> tuple[int, int, int]:
    # Scattered rows are live by a hash: the writer's UPDATE checks expiry, so any id will do.
    return (1, rows, 1) if layout == "scattered" else (rows // 2 + 1, rows, 1)


def baseline(url: str, jit: bool) -> dict:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET jit = " + ("on" if jit else "off"))
        t = time.perf_counter()
        n = c.execute("DELETE FROM sessions WHERE expires_at < now()").rowcount
        s = time.perf_counter() - t
    return {"rows": n, "seconds": round(s, 4), "rows_per_s": round(n / s)}


def pgkeeper_run(options: dict | None = None) -> dict:
    from pgkeeper import runner
    from pgkeeper.jobs.cleanup import JOB
    from pgkeeper.local.context import LocalContext
    from pgkeeper.triggers import JobRequest

    t = time.perf_counter()
    # The job's logs and metrics go to stdout in Lambda; here stdout is the bench's summary.
    with contextlib.redirect_stdout(sys.stderr):
        result = runner.execute(JOB, JobRequest(job="cleanup", options=options or {}), LocalContext(900))
    wall = time.perf_counter() - t
    target = result["report"]["targets"][0]
    analyze_s = (target.get("analyze_ms") or 0) / 1000
    seconds = wall - analyze_s
    n = target["rows_deleted"]
    return {"rows": n, "seconds": round(seconds, 4), "rows_per_s": round(n / seconds),
            "transactions": target["transactions"], "longest_transaction_ms": target["longest_transaction_ms"],
            "analyze_ms": target.get("analyze_ms"), "outcome": target["outcome"], "method": target["method"],
            "retried": target.get("retried")}


def skip_locked_always(url: str, target_ms: int) -> dict:
    """The SKIP LOCKED statement for every batch, with the same TID walk and sizing."""
    from pgkeeper.budget import Budget
    from pgkeeper.cleanup import batches
    from pgkeeper.cleanup.predicate import Predicate
    from pgkeeper.cleanup.resolve import Heap
    from pgkeeper.cleanup.sizing import Sizer
    from pgkeeper.cleanup.walkers import TidRangeWalk, relation_blocks
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET synchronous_commit = off")
        cutoff = c.execute("SELECT now()").fetchone()[0]
        oid = c.execute("SELECT 'sessions'::regclass::oid").fetchone()[0]
        heap = Heap(oid, "public", "sessions", ("id",))
        pred = Predicate(sql.SQL("expires_at < %s"), (cutoff,), cutoff)
        walker = TidRangeWalk(heap, relation_blocks(c, oid))
        sizer = Sizer(target_ms, walker.initial, walker.maximum)
        total, longest, budget = 0, 0.0, Budget(600, reserve_s=0)
        t0 = time.perf_counter()
        while (rng := walker.next_range(c, sizer.size)) is not None and not budget.exhausted():
            q, p = batches.delete_statement(heap, rng, pred, skip_locked=True)
            t = time.perf_counter()
            n = c.execute(q, p).rowcount
            ms = (time.perf_counter() - t) * 1000
            longest = max(longest, ms)
            total += n
            walker.advance(rng)
            sizer.record(rng.size, ms, n)
        s = time.perf_counter() - t0
    return {"rows": total, "seconds": round(s, 4), "rows_per_s": round(total / s), "longest_transaction_ms": round(longest, 1)}


def with_writer(url: str, layout: str, rows: int, fn) -> tuple[dict, dict]:
    w = Writer(url, live_range(layout, rows))
    w.start()
    w.started_flag.wait(10)
    time.sleep(0.2)  # the writer's steady state before the delete starts (a benchmark, not a test)
    mark = len(w.latencies_ms)
    t = time.perf_counter()
    out = fn()
    s = time.perf_counter() - t
    during = w.latencies_ms[mark:]
    w.stop_flag.set()
    w.join(10)
    return out, {"ops": len(during), "ops_per_s": round(len(during) / s), "p50_ms": round(percentile(during, 50), 2),
                 "p99_ms": round(percentile(during, 99), 2), "max_ms": round(max(during, default=0), 2)}


def median_rate(runs: list[dict]) -> float:
    return statistics.median(r["rows_per_s"] for r in runs)


def main(quick: bool) -> dict:
    rows = 400_000 if quick else 2_000_000
    repeats = 2 if quick else 3
    from pgkeeper import config
    from pgkeeper.log import logger

    logger.setLevel("WARNING")
    result: dict = {"rows": rows, "expired_fraction": 0.5, "repeats": repeats, "layouts": {}}
    with scratch_database("pgk_bench_cleanup") as url, tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(json.dumps({"version": 1, "cleanup": {"targets": [
            {"name": "sessions", "table": "sessions", "expiry_column": "expires_at", "allow_large": True}]}}))
        saved = {k: os.environ.get(k) for k in ("PGKEEPER_PLAN", "DATABASE_URL")}
        os.environ.update({"PGKEEPER_PLAN": str(plan), "DATABASE_URL": url})
        config.reset()
        try:
            with psycopg.connect(url, autocommit=True) as c:
                for layout in LAYOUTS:
                    log(f"{layout}: building {rows} rows")
                    make_source(c, layout, rows)
                    base: list[dict] = []
                    base_nojit: list[dict] = []
                    ours: list[dict] = []
                    for r in range(repeats):
                        # Interleaved, so drift in the machine's load hits all of them alike.
                        rebuild(c, layout)
                        base.append(baseline(url, jit=True))
                        rebuild(c, layout)
                        ours.append(pgkeeper_run())
                        rebuild(c, layout)
                        base_nojit.append(baseline(url, jit=False))
                        log(f"{layout} #{r + 1}: single DELETE {base[-1]['rows_per_s']}/s (jit off "
                            f"{base_nojit[-1]['rows_per_s']}/s), pgkeeper {ours[-1]['rows_per_s']}/s in "
                            f"{ours[-1]['transactions']} txns, longest {ours[-1]['longest_transaction_ms']} ms")
                    base_rate = max(median_rate(base), median_rate(base_nojit))
                    rebuild(c, layout)
                    _b, base_writer = with_writer(url, layout, rows, lambda: baseline(url, jit=True))
                    rebuild(c, layout)
                    ours_w, ours_writer = with_writer(url, layout, rows, pgkeeper_run)
                    rebuild(c, layout)
                    keyset = pgkeeper_run({"method": "keyset"})
                    detail = {
                        "baseline_rows_per_s": round(base_rate),
                        "baseline_runs": {"jit_on": base, "jit_off": base_nojit},
                        "pgkeeper_rows_per_s": round(median_rate(ours)),
                        "pgkeeper_runs": ours,
                        "ratio": round(median_rate(ours) / base_rate, 3),
                        "max_txn_ms": max(r["longest_transaction_ms"] for r in [*ours, ours_w]),
                        "writer_during_single_delete": base_writer,
                        "writer_during_pgkeeper": {**ours_writer, "pgkeeper_run": ours_w},
                        "keyset_fallback": {**keyset, "ratio": round(keyset["rows_per_s"] / base_rate, 3)},
                    }
                    if layout == "scattered":
                        rebuild(c, layout)
                        always = skip_locked_always(url, 100)
                        detail["skip_locked_every_batch"] = {**always, "ratio": round(always["rows_per_s"] / base_rate, 3)}
                    result["layouts"][layout] = detail
                    log(f"{layout}: ratio {detail['ratio']}, max txn {detail['max_txn_ms']} ms, writer p99 "
                        f"{ours_writer['p99_ms']} ms (single DELETE: {base_writer['p99_ms']} ms)")
                    c.execute(f"DROP TABLE src_{layout}")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            config.reset()
    layouts = result["layouts"]
    result["throughput_ratio"] = min(d["ratio"] for d in layouts.values())
    result["max_txn_ms"] = max(d["max_txn_ms"] for d in layouts.values())
    result["writer_p99_ms"] = max(d["writer_during_pgkeeper"]["p99_ms"] for d in layouts.values())
    result["writer_p99_ms_single_delete"] = max(d["writer_during_single_delete"]["p99_ms"] for d in layouts.values())
    return result
