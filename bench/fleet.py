"""Fleet fan-out: 20 databases, each member in an invocation of its own with a small budget.

The functions are served as `pgkeeper serve` serves them (UrlServer, this process); the fan-out's
invocations go out through boto3's Lambda client to that server's Invoke API, which runs each on a
thread (Lambda would run each in an instance of its own). Each database holds a materialized view
whose refresh takes `WORK_S` (pg_sleep: the I/O wait of a real refresh, not this machine's 2 cores).

  sequential  the same refresh, database after database (`{"job", "database"}` each): a loop script
  fan-out     one `{"job": "refresh"}`: at most `concurrency` members at once

`fanout_speedup` is sequential over fan-out wall time; `max_overlap` is the most member runs whose
[started_at, finished_at] (from each database's own run history) overlapped: never above the bound.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import yaml
from common import scratch_database

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from s3_proxy import max_overlap  # noqa: E402  (the tests' helper: one definition of "ran at once")

WORK_S = 1.0
MEMBER_TIMEOUT_S = 30.0
"""The members' function timeout: small, as the issue asks; each refresh needs WORK_S of it."""


def _runs(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT trigger, status, started_at, finished_at FROM pgkeeper.runs").fetchall()


def main(quick: bool) -> dict:
    from pgkeeper import config
    from pgkeeper.local.context import LocalContext
    from pgkeeper.local.invoke import environment
    from pgkeeper.local.serve import UrlServer, load_functions
    from pgkeeper.webhooks import routes

    count, concurrency = (8, 4) if quick else (20, 5)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = [stack.enter_context(scratch_database(f"pgk_bench_fleet{i}")) for i in range(count)]
        for url in urls:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE MATERIALIZED VIEW slow AS SELECT pg_sleep({WORK_S}) IS NULL AS slept")
        names = [f"db{i:02d}" for i in range(count)]
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(yaml.safe_dump({"version": 1, "fleet": {"concurrency": concurrency, "poll_s": 0.2,
                                                                "databases": [{"name": n, "database": {
                                                                    "url_env": f"BENCH_FLEET_{n.upper()}"}}
                                                                    for n in names]}}))
        functions, env, _ = load_functions(ROOT / "template.yaml", only=["RefreshFunction"])
        fn = functions["refresh"]
        fn.timeout_s = MEMBER_TIMEOUT_S
        server = UrlServer(("127.0.0.1", 0), functions)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        values: dict[str, str | None] = {
            **env, **{f"BENCH_FLEET_{n.upper()}": u for n, u in zip(names, urls, strict=True)},
            "PGKEEPER_PLAN": str(plan), "DATABASE_URL": None, "AWS_ENDPOINT_URL_LAMBDA": server.url,
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "LOG_LEVEL": "WARNING"}
        with environment(values):
            config.reset()
            routes.reset()
            try:
                print(f"bench fleet: {count} databases one after another", file=sys.stderr)
                t0 = time.monotonic()
                for name in names:
                    result = fn.handler({"job": "refresh", "database": name}, fn.context())
                    assert result["status"] == "succeeded", result
                sequential_s = time.monotonic() - t0

                print(f"bench fleet: fan-out, concurrency {concurrency}", file=sys.stderr)
                t0 = time.monotonic()
                result = fn.handler({"job": "refresh"}, LocalContext(MEMBER_TIMEOUT_S * count, fn.function_name))
                fanout_s = time.monotonic() - t0
                assert result["status"] == "succeeded", result
            finally:
                server.shutdown()
                server.server_close()
                routes.reset()
                config.reset()
        fleet_runs = [r for url in urls for r in _runs(url) if r[0] == "fleet"]
        assert len(fleet_runs) == count and all(r[1] == "succeeded" for r in fleet_runs)
        overlap = max_overlap([(r[2], r[3]) for r in fleet_runs])
    return {
        "bench": "fleet",
        "databases": count,
        "concurrency": concurrency,
        "member_timeout_s": MEMBER_TIMEOUT_S,
        "work_per_member_s": WORK_S,
        "sequential_s": round(sequential_s, 2),
        "fanout_s": round(fanout_s, 2),
        "fanout_speedup": round(sequential_s / fanout_s, 2),
        "ideal_speedup": concurrency,
        "max_overlap": overlap,
        "max_running": result["report"]["max_running"],
        "bound_respected": overlap <= concurrency,
        "cpus": os.cpu_count(),
    }
