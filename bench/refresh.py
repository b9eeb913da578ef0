"""Reader latency while a materialized view refreshes: pgkeeper's refresh job vs a plain REFRESH.

The baseline is what the seed apps run today (`REFRESH MATERIALIZED VIEW` from a cron endpoint).
A reader on its own connection does what a dashboard does (a point lookup, a small aggregate) on
a fixed schedule while the view over `rows` rows refreshes; only reads due during the refresh
count, each timed from when it was due (see `Reader`).
pgkeeper runs through the real runner (plan file, run history, drift check against the view's
definition file), so its figures include everything a scheduled run does. About 1% of the rows
change before each refresh, so CONCURRENTLY has a real diff to apply.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from common import percentile, pgkeeper_env, scratch_database

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 2000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, account int NOT NULL REFERENCES accounts(id),
                     amount numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, 1 + g % 2000, (g % 997) / 10.0, timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, %(rows)s) g;
ANALYZE accounts, orders;
"""

VIEW = """CREATE MATERIALIZED VIEW mv_orders AS
SELECT o.id, o.account, a.name AS account_name, o.amount, round(o.amount * 1.2, 2) AS gross, o.created_at
FROM orders o JOIN accounts a ON a.id = o.account;
CREATE UNIQUE INDEX mv_orders_id_key ON mv_orders (id);
"""


READ_INTERVAL_S = 0.002
"""500 reads/s are due: far below what one connection serves from an idle view (~0.1 ms each)."""


def log(msg: str) -> None:
    print(f"bench refresh: {msg}", file=sys.stderr, flush=True)


class Reader(threading.Thread):
    """Dashboard-like reads on their own connection, on a fixed schedule (open loop).

    Latency counts from when a read was *due*, not when a stalled loop got round to sending it
    (the coordinated-omission correction of wrk2/HdrHistogram): a reader blocked for 400 ms by a
    plain REFRESH delays every read due in those 400 ms, as it would for an app's many requests.
    """

    def __init__(self, url: str, rows: int, interval_s: float = READ_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.url, self.rows, self.interval = url, rows, interval_s
        self.samples: list[tuple[float, float]] = []
        self.stop_at: float | None = None
        """Set when the refresh ends: the reader works off every read due until then, then stops."""
        self.ready = threading.Event()

    def run(self) -> None:
        rnd = random.Random(7)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT 1")
            self.ready.set()
            due = time.perf_counter()
            i = 0
            while self.stop_at is None or due <= self.stop_at:
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                if i % 2:
                    conn.execute("SELECT gross FROM mv_orders WHERE id = %s", [rnd.randint(1, self.rows)]).fetchone()
                else:
                    lo = rnd.randint(1, self.rows - 50)  # the same small cost whatever the view's size
                    conn.execute("SELECT count(*), sum(gross) FROM mv_orders WHERE id BETWEEN %s AND %s",
                                 [lo, lo + 49]).fetchone()
                self.samples.append((due, time.perf_counter()))
                due += self.interval
                i += 1


def during(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """Latencies (ms, from when each read was due) of the reads due while the refresh ran."""
    return [(e - s) * 1000 for s, e in samples if start <= s <= end]


def measure(url: str, rows: int, refresh) -> tuple[list[float], float, dict]:
    reader = Reader(url, rows)
    reader.start()
    reader.ready.wait(10)
    time.sleep(0.3)  # let the reader settle into its loop before the refresh starts
    start = time.perf_counter()
    info = refresh()
    end = time.perf_counter()
    reader.stop_at = end
    reader.join(timeout=60)
    return during(reader.samples, start, end), (end - start) * 1000, info


def change_some_rows(url: str, rows: int, round_no: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE orders SET amount = amount + 1 WHERE id %% 100 = %s", [round_no % 100])
        c.execute("VACUUM ANALYZE orders")


def main(quick: bool) -> dict:
    rows = 200_000 if quick else 1_000_000
    rounds = 1 if quick else 2
    from pgkeeper import runner
    from pgkeeper.events import JobEvent
    from pgkeeper.local.context import LocalContext
    from pgkeeper.log import logger
    from pgkeeper.refresh.job import JOB

    logger.setLevel("WARNING")  # the job's INFO lines would drown the summary on stdout
    with scratch_database("pgk_bench_refresh") as url, tempfile.TemporaryDirectory() as tmp:
        log(f"loading {rows} rows")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(SCHEMA.replace("%(rows)s", str(rows)))
            c.execute(VIEW)
            c.execute("VACUUM ANALYZE mv_orders")
        plan = Path(tmp) / "plan.yaml"
        (Path(tmp) / "mv_orders.sql").write_text(VIEW)
        plan.write_text("version: 1\nrefresh:\n  views:\n    - name: mv_orders\n"
                        "      definition: mv_orders.sql\n      concurrently: true\n")

        def by_pgkeeper() -> dict:
            result = runner.execute(JOB, JobEvent(job="refresh"), LocalContext(900))
            [view] = result["report"]["views"]
            assert view["outcome"] == "refreshed" and view["mode"] == "concurrent", view
            return view

        def plain() -> dict:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("REFRESH MATERIALIZED VIEW mv_orders")
            return {}

        with pgkeeper_env(plan, url):
            log("idle reader (no refresh running)")
            idle, _, _ = measure(url, rows, lambda: time.sleep(2.0) or {})
            lat = {"pgkeeper": [], "plain": []}
            refresh_ms = {"pgkeeper": [], "plain": []}
            job_ms: list[float] = []
            for r in range(rounds):
                for name, fn in (("pgkeeper", by_pgkeeper), ("plain", plain)):
                    change_some_rows(url, rows, 2 * r + (name == "plain"))
                    log(f"round {r + 1}: reader during a {name} refresh")
                    samples, wall_ms, info = measure(url, rows, fn)
                    lat[name] += samples
                    refresh_ms[name].append(info.get("duration_ms", wall_ms))
                    if name == "pgkeeper":
                        job_ms.append(wall_ms)

    def stats(values: list[float]) -> tuple[float, float, float]:
        return round(percentile(values, 50), 2), round(percentile(values, 99), 2), round(max(values), 2)

    out: dict = {"bench": "refresh", "rows": rows, "rounds": rounds, "reads_per_s": round(1 / READ_INTERVAL_S)}
    for name in ("pgkeeper", "plain"):
        p50, p99, mx = stats(lat[name])
        out[f"reader_p50_ms_{name}"] = p50
        out[f"reader_p99_ms_{name}"] = p99
        out[f"reader_max_ms_{name}"] = mx
        out[f"reader_queries_{name}"] = len(lat[name])
        out[f"refresh_ms_{name}"] = round(sum(refresh_ms[name]) / len(refresh_ms[name]))
    out["job_ms_pgkeeper"] = round(sum(job_ms) / len(job_ms))
    out["reader_p50_ms_idle"], out["reader_p99_ms_idle"], _ = stats(idle)
    out["p99_plain_over_pgkeeper"] = round(out["reader_p99_ms_plain"] / out["reader_p99_ms_pgkeeper"], 1)
    out["refresh_time_pgkeeper_over_plain"] = round(out["refresh_ms_pgkeeper"] / out["refresh_ms_plain"], 2)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(main(quick="--quick" in sys.argv)))
