"""Cleanup throughput: pgkeeper's batched deletes against the single `DELETE ... WHERE expires_at < now()`.

A sessions table (bigint id, user id, token with a unique index, expires_at with an index,
created_at), half of it expired, in two layouts: expired rows scattered through the table (by a
hash of the id), and clustered at its start. Each layout is built once into a template database
(indexed, VACUUM ANALYZEd); every measured run gets a fresh copy of it (CREATE DATABASE ... TEMPLATE,
STRATEGY FILE_COPY), so all runs start from the same pages, visibility map and checkpoint state.

  baseline   the user's one DELETE; the better median of JIT on (the server default) and JIT off
  pgkeeper   the cleanup job through `runner.execute` (validation, safety-rail sample, batches, the
             run's bookkeeping); rows/s over the target's own time (checking it + deleting), without
             the ANALYZE it runs afterwards (the baseline does none; its duration is analyze_ms).
             `end_to_end` also counts connecting, the advisory lock and the run record.
  writer     a concurrent app writer (INSERT a session, UPDATE a live one's expiry, autocommit)
             during one run of each: its p99 latency, and how many operations it completed
Runs are interleaved (baseline, pgkeeper, baseline JIT off, ...) so the machine's load drifts
across all of them alike. Also measured: the primary-key keyset fallback (what PostgreSQL < 14
gets), the SKIP LOCKED statement used for every batch (pgkeeper only uses it to retry a range
after a lock timeout), and (full mode) the same layouts without the expires_at index.

throughput_ratio = median pgkeeper rows/s over median baseline rows/s, the worse layout;
ratio_best uses each side's best run (what an idle machine would show).
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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from common import ADMIN_URL, database_url, percentile, pgkeeper_env
from psycopg import sql

LAYOUTS = ("scattered", "clustered")


def log(msg: str) -> None:
    print(f"  cleanup: {msg}", file=sys.stderr, flush=True)


def admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        c.execute(statement)


def build_template(name: str, layout: str, rows: int, expiry_index: bool) -> None:
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    expired = "abs(hashint8(g)) % 2 = 0" if layout == "scattered" else f"g <= {rows // 2}"
    spread = "(abs(hashint8(g * 7)) % 43200) * interval '1 minute'"
    with psycopg.connect(database_url(name), autocommit=True) as c:
        c.execute(f"""
            CREATE TABLE sessions AS
            SELECT g::bigint AS id, (g % 50000)::bigint AS user_id, md5(g::text) AS token,
                   CASE WHEN {expired} THEN now() - interval '1 hour' - {spread}
                        ELSE now() + interval '1 hour' + {spread} END AS expires_at,
                   now() - interval '30 days' + (g % 43200) * interval '1 minute' AS created_at
            FROM generate_series(1, {rows}) g""")
        c.execute("ALTER TABLE sessions ALTER expires_at SET NOT NULL, ADD PRIMARY KEY (id)")
        c.execute("CREATE UNIQUE INDEX sessions_token_key ON sessions (token)")
        if expiry_index:
            c.execute("CREATE INDEX sessions_expires_at_idx ON sessions (expires_at)")
        c.execute("VACUUM ANALYZE sessions")
        from pgkeeper.db import runs

        runs.ensure_schema(c)  # the job's run history exists before any timed run, as in production


@contextlib.contextmanager
def fresh_copy(template: str) -> Iterator[str]:
    name = f"{template}_r{uuid.uuid4().hex[:6]}"
    admin(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(name), sql.Identifier(template)))
    try:
        # A production database's catalogs are warm; a fresh copy's are on disk. Warm them (not the
        # table: its pages stay as the copy left them) the same way before every measured run.
        with psycopg.connect(database_url(name), autocommit=True) as c:
            c.execute("SELECT count(*) FROM pg_catalog.pg_class, pg_catalog.pg_namespace")
            c.execute("SELECT count(*) FROM pg_catalog.pg_attribute")
            c.execute("SELECT count(*) FROM pg_catalog.pg_stats WHERE tablename = 'sessions'")
            c.execute("EXPLAIN DELETE FROM sessions WHERE expires_at < now()")
        yield database_url(name)
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class Writer(threading.Thread):
    """The app: inserts new sessions and extends live ones, one autocommit statement at a time."""

    def __init__(self, url: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.rows = rows
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
                    # Live rows only (the condition re-checks): the writer never waits for the cleanup.
                    c.execute("UPDATE sessions SET expires_at = expires_at + interval '1 minute' "
                              "WHERE id = %s AND expires_at > now()", [rnd.randrange(1, self.rows)])
                self.latencies_ms.append((time.perf_counter() - t) * 1000)


def with_writer(url: str, rows: int, fn: Callable[[], dict]) -> tuple[dict, dict]:
    w = Writer(url, rows)
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


def baseline(url: str, jit: bool) -> dict:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET jit = " + ("on" if jit else "off"))
        t = time.perf_counter()
        n = c.execute("DELETE FROM sessions WHERE expires_at < now()").rowcount
        s = time.perf_counter() - t
    return {"rows": n, "seconds": round(s, 4), "rows_per_s": round(n / s)}


def pgkeeper_run(url: str, options: dict | None = None) -> dict:
    from pgkeeper import runner
    from pgkeeper.cleanup.job import JOB
    from pgkeeper.events import JobEvent
    from pgkeeper.local.context import LocalContext

    os.environ["DATABASE_URL"] = url
    t = time.perf_counter()
    # The job's logs and metrics go to stdout in Lambda; here stdout is the bench's summary.
    with contextlib.redirect_stdout(sys.stderr):
        result = runner.execute(JOB, JobEvent(job="cleanup", options=options or {}), LocalContext(900))
    wall = time.perf_counter() - t
    target = result["report"]["targets"][0]
    analyze_s = (target.get("analyze_ms") or 0) / 1000
    seconds = (target["checked_ms"] + target["duration_ms"]) / 1000 - analyze_s
    n = target["rows_deleted"]
    return {"rows": n, "seconds": round(seconds, 4), "rows_per_s": round(n / seconds),
            "end_to_end_rows_per_s": round(n / (wall - analyze_s)),
            "transactions": target["transactions"], "longest_transaction_ms": target["longest_transaction_ms"],
            "analyze_ms": target.get("analyze_ms"), "outcome": target["outcome"], "method": target["method"],
            "retried": target.get("retried")}


def skip_locked_always(url: str, target_ms: int) -> dict:
    """The SKIP LOCKED statement for every batch, with the same TID walk and sizing."""
    from pgkeeper.cleanup import batches
    from pgkeeper.cleanup.predicate import Predicate
    from pgkeeper.cleanup.resolve import Heap
    from pgkeeper.cleanup.sizing import Sizer
    from pgkeeper.cleanup.walkers import TidRangeWalk, relation_blocks

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET synchronous_commit = off")
        cutoff = c.execute("SELECT now()").fetchone()[0]
        oid = c.execute("SELECT 'sessions'::regclass::oid").fetchone()[0]
        heap = Heap(oid, "public", "sessions", ("id",))
        pred = Predicate(sql.SQL("expires_at < %s"), (cutoff,), cutoff)
        walker = TidRangeWalk(heap, relation_blocks(c, oid))
        sizer = Sizer(target_ms, walker.initial, walker.maximum)
        total, longest = 0, 0.0
        t0 = time.perf_counter()
        while (rng := walker.next_range(c, sizer.size)) is not None:
            q, p = batches.delete_statement(heap, rng, pred, skip_locked=True)
            t = time.perf_counter()
            n = c.execute(q, p).rowcount
            ms = (time.perf_counter() - t) * 1000
            longest = max(longest, ms)
            total += n
            walker.advance(rng)
            sizer.record(rng.size, ms, n)
        s = time.perf_counter() - t0
    return {"rows": total, "seconds": round(s, 4), "rows_per_s": round(total / s),
            "longest_transaction_ms": round(longest, 1)}


def median_rate(runs: list[dict]) -> float:
    return statistics.median(r["rows_per_s"] for r in runs)


def best_rate(runs: list[dict]) -> float:
    return max(r["rows_per_s"] for r in runs)


def measure(template: str, repeats: int, label: str) -> dict:
    """Interleaved baseline / pgkeeper / baseline (JIT off) runs on fresh copies of `template`."""
    base: list[dict] = []
    base_nojit: list[dict] = []
    ours: list[dict] = []
    for r in range(repeats):
        with fresh_copy(template) as url:
            base.append(baseline(url, jit=True))
        with fresh_copy(template) as url:
            ours.append(pgkeeper_run(url))
        with fresh_copy(template) as url:
            base_nojit.append(baseline(url, jit=False))
        log(f"{label} #{r + 1}: single DELETE {base[-1]['rows_per_s']}/s (JIT off {base_nojit[-1]['rows_per_s']}/s), "
            f"pgkeeper {ours[-1]['rows_per_s']}/s in {ours[-1]['transactions']} txns, "
            f"longest {ours[-1]['longest_transaction_ms']} ms")
    base_rate = max(median_rate(base), median_rate(base_nojit))
    base_best = max(best_rate(base), best_rate(base_nojit))
    return {
        "baseline_rows_per_s": round(base_rate),
        "pgkeeper_rows_per_s": round(median_rate(ours)),
        "ratio": round(median_rate(ours) / base_rate, 3),
        "ratio_best": round(best_rate(ours) / base_best, 3),
        "end_to_end_ratio": round(statistics.median(r["end_to_end_rows_per_s"] for r in ours) / base_rate, 3),
        "max_txn_ms": max(r["longest_transaction_ms"] for r in ours),
        "baseline_runs": {"jit_on": base, "jit_off": base_nojit},
        "pgkeeper_runs": ours,
    }


def main(quick: bool) -> dict:
    rows = 400_000 if quick else 2_000_000
    repeats = 3 if quick else 5
    from pgkeeper.log import logger

    logger.setLevel("WARNING")
    result: dict = {"rows": rows, "expired_fraction": 0.5, "repeats": repeats, "layouts": {}}
    prefix = f"pgk_bench_cleanup_{uuid.uuid4().hex[:6]}"
    templates: list[str] = []
    # DATABASE_URL is set per fresh copy (pgkeeper_run); pgkeeper_env gives the caller's back.
    with tempfile.TemporaryDirectory() as tmp, pgkeeper_env(Path(tmp) / "plan.yaml"):
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(json.dumps({"version": 1, "cleanup": {"targets": [
            {"name": "sessions", "table": "sessions", "expiry_column": "expires_at", "allow_large": True}]}}))
        try:
            for layout in LAYOUTS:
                template = f"{prefix}_{layout}"
                log(f"{layout}: building {rows} rows")
                build_template(template, layout, rows, expiry_index=True)
                templates.append(template)
                detail = measure(template, repeats, layout)
                with fresh_copy(template) as url:
                    _b, detail["writer_during_single_delete"] = with_writer(url, rows, lambda u=url: baseline(u, True))
                with fresh_copy(template) as url:
                    run, writer = with_writer(url, rows, lambda u=url: pgkeeper_run(u))
                    detail["writer_during_pgkeeper"] = {**writer, "pgkeeper_run": run}
                    detail["max_txn_ms"] = max(detail["max_txn_ms"], run["longest_transaction_ms"])
                with fresh_copy(template) as url:
                    keyset = pgkeeper_run(url, {"method": "keyset"})
                detail["keyset_fallback"] = {**keyset,
                                             "ratio": round(keyset["rows_per_s"] / detail["baseline_rows_per_s"], 3)}
                if layout == "scattered":
                    with fresh_copy(template) as url:
                        always = skip_locked_always(url, 100)
                    detail["skip_locked_every_batch"] = {
                        **always, "ratio": round(always["rows_per_s"] / detail["baseline_rows_per_s"], 3)}
                if not quick:
                    bare = f"{prefix}_{layout}_noidx"
                    build_template(bare, layout, rows, expiry_index=False)
                    templates.append(bare)
                    no_index = measure(bare, 3, f"{layout} without expires_at index")
                    detail["without_expiry_index"] = {k: no_index[k] for k in (
                        "baseline_rows_per_s", "pgkeeper_rows_per_s", "ratio", "ratio_best", "max_txn_ms")}
                result["layouts"][layout] = detail
                log(f"{layout}: ratio {detail['ratio']} (best {detail['ratio_best']}), max txn "
                    f"{detail['max_txn_ms']} ms, writer p99 {detail['writer_during_pgkeeper']['p99_ms']} ms "
                    f"(single DELETE: {detail['writer_during_single_delete']['p99_ms']} ms)")
        finally:
            for name in templates:
                admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    layouts = result["layouts"]
    result["throughput_ratio"] = min(d["ratio"] for d in layouts.values())
    result["ratio_best"] = min(d["ratio_best"] for d in layouts.values())
    result["max_txn_ms"] = max(d["max_txn_ms"] for d in layouts.values())
    result["writer_p99_ms"] = max(d["writer_during_pgkeeper"]["p99_ms"] for d in layouts.values())
    result["writer_p99_ms_single_delete"] = max(d["writer_during_single_delete"]["p99_ms"] for d in layouts.values())
    return result
