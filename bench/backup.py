"""Backup throughput, size and memory: pgkeeper against the pipelines users script today.

All three upload the same database to the same moto S3 server (its own process):
  A  pg_dump -Fc | aws s3 cp - s3://...                      (what the seeds' peers run)
  B  pg_dump -Fc -Z0 | zstd -3 -T0 | aws s3 cp - s3://...    (the best hand-made pipeline)
  C  pgkeeper's backup job (snapshot + exact counts, zstd, SHA-256, multipart, manifest, and the
     read-back verification), run in a child process so its peak RSS is its own.
  D  C with `encryption: age` (one recipient): `age_overhead` is D's time over C's.
  E  C sharded (`shards: 4`, workers as threads): `sharded.throughput_ratio` is C's time over E's; on
     2 cores no speed-up is expected (pg_dump, zstd and PostgreSQL already share them).
Past one invocation (`past_one_invocation`): a database of 8 equal tables, S3 behind a proxy that
caps each upload stream (as one Lambda stream is capped, ~12 MB/s), one part in flight per stream:
one stream's time T1 is measured, then a timeout of 0.75 x T1 is given to one stream (it fails) and
to the sharded backup (it completes; `max_worker_seconds` is its slowest data shard).
CPU: user+system seconds of each approach's whole process tree (the shell pipeline's processes; the
job's interpreter and pg_dump), from the children's rusage; PostgreSQL's backend and the S3 server
are the same work for all and not counted. `cpu_ratio` is C's over B's.
Data (PGKEEPER_BENCH_DATASET=app|pgbench|both, default app):
  app      app-like tables (customers, orders, events: ids, timestamps, enums, money, words, hashes, JSON)
           plus `pgbench -i` tables; the headline keys always describe it when it runs.
  pgbench  pure `pgbench -i` data (~1 GB, ~150 MB quick): blank-padded rows that compress well, the
           kind of data the issue's reference numbers (31% smaller with zstd -3) come from.
When the variable is set, each dataset's full result is also under `datasets`. Throughput is the
uncompressed archive size (pg_dump -Z0 bytes, the same for all) over wall time.
The aws CLI is the one on PATH (`aws --version`); install it with `pip install awscli` if missing.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import psycopg
from common import scratch_database
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "pgk-bench"

DATA = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text, country text, created_at timestamptz,
                        plan text, profile jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, created_at timestamptz, status text,
                     amount numeric(12,2), currency text, note text);
CREATE TABLE events (id bigint, at timestamptz, kind text, session text, payload jsonb);
"""

WORDS = ("ARRAY['alpha','bravo','charlie','delta','echo','foxtrot','golf','hotel','india','juliet','kilo',"
         "'lima','mike','november','oscar','papa','quebec','romeo','sierra','tango','uniform','victor']")


def _load(conn: psycopg.Connection, scale: int) -> None:
    """~ scale * 100 MB of mixed rows: ids, timestamps, enums, money, words, hashes, JSON."""
    conn.execute(DATA)
    customers = 60_000 * scale
    conn.execute(f"""
        INSERT INTO customers SELECT g, 'user' || g || '@example.com', initcap(({WORDS})[1 + g % 22]) || ' ' ||
               initcap(({WORDS})[1 + (g * 7) % 22]), (ARRAY['US','DE','FR','GB','BR','IN','JP'])[1 + g % 7],
               '2020-01-01'::timestamptz + g * interval '37 seconds', (ARRAY['free','pro','team'])[1 + g % 3],
               jsonb_build_object('theme', (ARRAY['dark','light'])[1 + g % 2], 'newsletter', g % 4 = 0,
                                  'ref', md5(g::text))
        FROM generate_series(1, {customers}) g""")
    conn.execute(f"""
        INSERT INTO orders SELECT g, 1 + (g * 13) % {customers}, '2021-01-01'::timestamptz + g * interval '11 seconds',
               (ARRAY['paid','pending','refunded','shipped'])[1 + g % 4], round((random() * 500)::numeric, 2),
               (ARRAY['USD','EUR','GBP'])[1 + g % 3],
               CASE WHEN g % 3 = 0 THEN NULL ELSE ({WORDS})[1 + g % 22] || ' ' || ({WORDS})[1 + (g / 3) % 22]
                    || ' ' || substr(md5(g::text), 1, 8) END
        FROM generate_series(1, {250_000 * scale}) g""")
    conn.execute(f"""
        INSERT INTO events SELECT g, '2024-01-01'::timestamptz + g * interval '3 seconds',
               (ARRAY['view','click','signup','purchase','logout'])[1 + g % 5], md5((g / 20)::text),
               jsonb_build_object('path', '/' || ({WORDS})[1 + g % 22] || '/' || (g % 1000), 'ms', g % 997,
                                  'ua', (ARRAY['Mozilla/5.0 (Macintosh)','Mozilla/5.0 (Windows NT 10.0)',
                                               'Mozilla/5.0 (iPhone)'])[1 + g % 3])
        FROM generate_series(1, {300_000 * scale}) g""")
    conn.execute("VACUUM ANALYZE")


def _pgbench_init(url: str, scale: int, steps: tuple[str, ...] = ()) -> None:
    subprocess.run(["pgbench", "-i", "-q", *steps, "-s", str(scale), "-d", url], check=True, capture_output=True)


def _load_app(conn: psycopg.Connection, url: str, quick: bool) -> None:
    _load(conn, 1 if quick else 8)  # ~95 MB of app-like tables per unit
    # pgbench's tables too (a quarter of the archive): the standard benchmark data, whose
    # blank-padded rows favour zstd; the app-like tables above favour neither.
    _pgbench_init(url, 4 if quick else 20)  # ~15 MB per unit


def _load_pgbench(conn: psycopg.Connection, url: str, quick: bool) -> None:
    # Server-side generation (G): the same rows as the default client-side step, without pgbench
    # formatting 6.4 M rows on one of our two cores.
    _pgbench_init(url, 10 if quick else 64, ("-I", "dtGvp"))  # ~15.6 MB of database per unit: ~150 MB / ~1 GB


LOADERS = {"app": _load_app, "pgbench": _load_pgbench}
DEFAULT_DATASET = "app"


def _datasets() -> tuple[list[str], bool]:
    """The datasets to run, and whether the caller chose them (then per-dataset results are reported)."""
    choice = os.environ.get("PGKEEPER_BENCH_DATASET", "").strip().lower()
    if not choice:
        return [DEFAULT_DATASET], False
    if choice == "both":
        return list(LOADERS), True
    if choice not in LOADERS:
        raise SystemExit(f"bench backup: PGKEEPER_BENCH_DATASET={choice!r}; expected one of "
                         f"{', '.join([*LOADERS, 'both'])}")
    return [choice], True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline_s: float = 30.0) -> None:
    import urllib.request

    end = time.monotonic() + deadline_s
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _shell(cmd: str, env: dict) -> float:
    t0 = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of every descendant reaped so far (each reaped process includes
    the descendants it reaped): the difference around a run is that run's whole tree."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CHILD = """
import json, resource, sys, time
from pgkeeper import runner
from pgkeeper.backup.job import JOB
from pgkeeper.local.context import LocalContext
from pgkeeper.events import JobEvent
t0 = time.monotonic()
import os
try:
    r = runner.execute(JOB, JobEvent(job="backup", options={}),
                       LocalContext(float(os.environ.get("BENCH_TIMEOUT_S", "900"))))
    out = {"report": r["report"]}
except Exception as exc:
    out = {"error": str(exc)[:500]}
wall = time.monotonic() - t0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("BENCH " + json.dumps({"wall": wall, "maxrss_mb": me, **out}))
"""


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # the process ended between listing and reading: it holds no memory now
        return 0
    return 0


def _children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/*/children: a few reads, not a scan of all of /proc
    (which, every 50 ms, took CPU from the measured run on this 2-core machine)."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:  # the process ended while we looked: report the children found so far
        return kids
    return kids


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """(RSS of `root`, RSS of its descendants) in kB, from /proc (Linux)."""
    family, todo = [], _children(root)
    while todo:
        pid = todo.pop()
        family.append(pid)
        todo += _children(pid)
    return _rss_kb(root), sum(_rss_kb(p) for p in family)


def _pgkeeper(env: dict, may_fail: bool = False) -> dict:
    """Run the job in a child process, polling its RSS and its children's (pg_dump, pg_restore)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak_self = peak_total = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        mine, kids = _tree_rss_kb(proc.pid)
        peak_self = max(peak_self, mine)
        peak_total = max(peak_total, mine + kids)
        time.sleep(0.05)
    reader.join(10)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.stderr.write("".join(out)[-3000:] + err[-3000:])
        raise SystemExit("bench backup: the pgkeeper run failed")
    line = next(ln for ln in "".join(out).splitlines() if ln.startswith("BENCH "))
    result = json.loads(line[6:])
    if "error" in result and not may_fail:
        raise SystemExit(f"bench backup: the pgkeeper run failed: {result['error']}")
    result["peak_self_mb"] = peak_self / 1024
    result["peak_tree_mb"] = peak_total / 1024
    return result


SHARDS = 4
STREAM_CAP_MBPS = 10.0
"""The simulated per-stream upload cap (MB/s) of the sharded mode's proxy."""


def _clear(s3) -> None:
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


SHARD_TABLES = 8
SHARD_ROWS = 300_000
"""The sharded mode's database: 8 tables of ~24 MB each (sharding splits tables, never one table)."""


def _past_one_invocation(env: dict, endpoint: str, s3, quick: bool) -> dict:
    """One stream against the sharded backup when each upload stream is capped (see the module doc)."""
    rows = SHARD_ROWS // (5 if quick else 1)
    sys.path.insert(0, str(ROOT / "tests"))
    from s3_proxy import SlowPartsProxy  # the tests' proxy: a part waits its size over the cap

    proxy = SlowPartsProxy(endpoint, lambda size: size / (STREAM_CAP_MBPS * 1e6))
    with scratch_database("pgk_bench_shards") as url, tempfile.TemporaryDirectory() as tmp:
        print(f"bench backup: sharded mode: {SHARD_TABLES} tables of {rows} rows", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(SHARD_TABLES):
                conn.execute(f"CREATE TABLE t{n} AS SELECT g AS id, md5(g::text) || md5((g * {n + 7})::text) AS a "
                             f"FROM generate_series(1, {rows}) g")
        base = f"version: 1\nbackup:\n  bucket: {BUCKET}\n  retention:\n    enabled: false\n  upload_concurrency: 1\n"
        (Path(tmp) / "one.yaml").write_text(base)
        (Path(tmp) / "many.yaml").write_text(base + f"  shards: {SHARDS}\n  shard_workers: threads\n")
        common = {**env, "DATABASE_URL": url, "AWS_ENDPOINT_URL_S3": proxy.url}
        one = {**common, "PGKEEPER_PLAN": str(Path(tmp) / "one.yaml")}
        many = {**common, "PGKEEPER_PLAN": str(Path(tmp) / "many.yaml")}
        try:
            print(f"  upload streams capped at {STREAM_CAP_MBPS:.0f} MB/s", file=sys.stderr)
            t0 = time.monotonic()
            _pgkeeper(one)
            single_s = time.monotonic() - t0
            _clear(s3)
            timeout_s = round(0.75 * single_s, 1)
            print(f"  one stream: {single_s:.1f} s; both now get {timeout_s} s", file=sys.stderr)
            failed = _pgkeeper({**one, "BENCH_TIMEOUT_S": str(timeout_s)}, may_fail=True)
            _clear(s3)
            t0 = time.monotonic()
            sharded = _pgkeeper({**many, "BENCH_TIMEOUT_S": str(timeout_s)}, may_fail=True)
            sharded_s = time.monotonic() - t0
            manifest = {}
            if "report" in sharded:
                key = sharded["report"]["manifest_key"]
                manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            _clear(s3)
        finally:
            proxy.close()
    print(f"  one stream with {timeout_s} s: {failed.get('error', 'completed')[:100]}; sharded: "
          f"{sharded.get('error', 'completed')[:100]} in {sharded_s:.1f} s", file=sys.stderr)
    return {"shards": SHARDS, "tables": SHARD_TABLES, "stream_cap_mb_s": STREAM_CAP_MBPS,
            "single_stream_s": round(single_s, 2), "timeout_s": timeout_s,
            "single_stream_within_timeout": "report" in failed, "sharded_within_timeout": "report" in sharded,
            "sharded_s": round(sharded_s, 2), "max_worker_seconds": manifest.get("timings", {}).get("max_worker_s"),
            "sharded_error": sharded.get("error")}


def _measure(dataset: str, quick: bool, aws: str, endpoint: str, env: dict, s3) -> dict:
    """Load `dataset` into its own scratch database and time A, B and C on it."""
    rounds = 3
    with scratch_database(f"pgk_bench_backup_{dataset}") as url, tempfile.TemporaryDirectory() as tmp:
        print(f"bench backup: loading the {dataset} dataset", file=sys.stderr)
        t0 = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            LOADERS[dataset](conn, url, quick)
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        print(f"bench backup: loaded {db_bytes / 1e6:.0f} MB in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        p = conninfo_to_dict(url)
        pgenv = {**env, "PGHOST": str(p.get("host", "127.0.0.1")), "PGPORT": str(p.get("port", 5432)),
                 "PGUSER": str(p.get("user", "postgres")), "PGDATABASE": str(p["dbname"])}
        # Warm the cache and measure the archive size once (the common numerator).
        archive = subprocess.run("pg_dump -Fc -Z0 | wc -c", shell=True, env=pgenv, capture_output=True,
                                 text=True, check=True)
        archive_bytes = int(archive.stdout.strip())
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(f"version: 1\nbackup:\n  bucket: {BUCKET}\n  retention:\n    enabled: false\n")
        cenv = {**env, "DATABASE_URL": url, "PGKEEPER_PLAN": str(plan)}
        import pyrage

        recipient = str(pyrage.x25519.Identity.generate().to_public())
        sealed_plan = Path(tmp) / "plan-age.yaml"
        sealed_plan.write_text(plan.read_text() + f"  encryption: age\n  age:\n    recipients: [{recipient}]\n")
        denv = {**cenv, "PGKEEPER_PLAN": str(sealed_plan)}
        sharded_plan = Path(tmp) / "plan-sharded.yaml"
        sharded_plan.write_text(plan.read_text() + f"  shards: {SHARDS}\n  shard_workers: threads\n")
        eenv = {**cenv, "PGKEEPER_PLAN": str(sharded_plan)}
        times: dict[str, list[float]] = {"A": [], "B": [], "C": [], "D": [], "E": []}
        cpu: dict[str, list[float]] = {"A": [], "B": [], "C": [], "D": [], "E": []}
        sizes: dict[str, int] = {}
        rss: list[float] = []
        tree_rss: list[float] = []
        reports = []
        ep = f"--endpoint-url {endpoint}"
        job_s: list[float] = []

        def run_a(r: int) -> None:
            key = f"a-{r}.dump"
            c0 = _children_cpu_s()
            times["A"].append(_shell(f"pg_dump -Fc | {aws} {ep} s3 cp - s3://{BUCKET}/{key}", pgenv))
            cpu["A"].append(_children_cpu_s() - c0)
            sizes["A"] = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
            s3.delete_object(Bucket=BUCKET, Key=key)
            print(f"  A pg_dump -Fc | aws s3 cp: {times['A'][-1]:.1f} s", file=sys.stderr)

        def run_b(r: int) -> None:
            key = f"b-{r}.dump.zst"
            c0 = _children_cpu_s()
            times["B"].append(_shell(f"pg_dump -Fc -Z0 | zstd -q -3 -T0 | {aws} {ep} s3 cp - s3://{BUCKET}/{key}",
                                     pgenv))
            cpu["B"].append(_children_cpu_s() - c0)
            sizes["B"] = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
            s3.delete_object(Bucket=BUCKET, Key=key)
            print(f"  B pg_dump -Z0 | zstd -3 -T0 | aws s3 cp: {times['B'][-1]:.1f} s", file=sys.stderr)

        def run_c(r: int) -> None:
            t0, c0 = time.monotonic(), _children_cpu_s()
            out = _pgkeeper(cenv)
            times["C"].append(time.monotonic() - t0)  # process start and imports included, like A's and B's
            cpu["C"].append(_children_cpu_s() - c0)
            job_s.append(out["wall"])
            rss.append(max(out["maxrss_mb"], out["peak_self_mb"]))
            tree_rss.append(out["peak_tree_mb"])
            reports.append(out["report"])
            sizes["C"] = out["report"]["bytes_out"]
            s3.delete_object(Bucket=BUCKET, Key=out["report"]["key"])
            s3.delete_object(Bucket=BUCKET, Key=out["report"]["manifest_key"])
            print(f"  C pgkeeper backup job: {times['C'][-1]:.1f} s (job {out['wall']:.1f} s: dump "
                  f"{out['report']['dump_s']:.1f} s, verify {out['report']['verification']['duration_s']:.1f} s)",
                  file=sys.stderr)

        def run_d(r: int) -> None:
            t0, c0 = time.monotonic(), _children_cpu_s()
            out = _pgkeeper(denv)
            times["D"].append(time.monotonic() - t0)
            cpu["D"].append(_children_cpu_s() - c0)
            sizes["D"] = out["report"]["bytes_out"]
            s3.delete_object(Bucket=BUCKET, Key=out["report"]["key"])
            s3.delete_object(Bucket=BUCKET, Key=out["report"]["manifest_key"])
            print(f"  D pgkeeper backup job, age-encrypted: {times['D'][-1]:.1f} s", file=sys.stderr)

        def run_e(r: int) -> None:
            t0, c0 = time.monotonic(), _children_cpu_s()
            out = _pgkeeper(eenv)
            times["E"].append(time.monotonic() - t0)
            cpu["E"].append(_children_cpu_s() - c0)
            sizes["E"] = out["report"]["bytes_out"]
            _clear(s3)
            print(f"  E pgkeeper backup job, {SHARDS} shards: {times['E'][-1]:.1f} s", file=sys.stderr)

        # Rotate the order each round: the machine is shared and noisy, no approach always goes first.
        order = [run_a, run_b, run_c, run_d, run_e]
        for r in range(rounds):
            for fn in order[r % 5:] + order[: r % 5]:
                fn(r)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    mbps = {k: archive_bytes / 1e6 / v for k, v in med.items()}
    dump_s = statistics.median(r["dump_s"] for r in reports)
    return {
        "dataset": dataset,
        "database_mb": round(db_bytes / 1e6),
        "archive_mb": round(archive_bytes / 1e6),
        "rounds": rounds,
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "throughput_mb_s": {k: round(v, 1) for k, v in mbps.items()},
        "size_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "throughput_ratio": round(med["B"] / med["C"], 2),
        "speedup_vs_fc": round(med["A"] / med["C"], 2),
        "throughput_ratio_dump_phase": round(med["B"] / dump_s, 2),
        "size_ratio": round(sizes["C"] / sizes["A"], 3),
        "size_ratio_vs_b": round(sizes["C"] / sizes["B"], 3),
        "size_ratio_vs_zstd": round(sizes["C"] / sizes["B"], 3),
        "cpu_s": {k: round(v, 2) for k, v in cpu_med.items()},
        "cpu_ratio": round(cpu_med["C"] / cpu_med["B"], 2),
        "cpu_s_per_gb": {k: round(v / (archive_bytes / 1e9), 2) for k, v in cpu_med.items()},
        "age_overhead": round(med["D"] / med["C"], 3),
        "sharded": {"shards": SHARDS, "workers": "threads",
                    "throughput_ratio": round(med["C"] / med["E"], 2),
                    "note": "one machine of 2 cores: pg_dump, zstd and PostgreSQL already use both; no speed-up "
                            "is expected from more streams here"},
        "age_size_ratio": round(sizes["D"] / sizes["C"], 4),
        "peak_rss_mb": round(max(rss), 1),
        "peak_rss_tree_mb": round(max(tree_rss), 1),
        "pgkeeper_job_s": round(statistics.median(job_s), 2),
        "verify_s": round(statistics.median(r["verification"]["duration_s"] for r in reports), 2),
    }


def main(quick: bool) -> dict:
    aws = shutil.which("aws")
    if not aws or not all(shutil.which(t) for t in ("zstd", "pg_dump", "pgbench")):
        raise SystemExit("bench backup: needs aws (pip install awscli), zstd, pg_dump and pgbench on PATH")
    datasets, chosen = _datasets()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "WARNING",
           "LOG_LEVEL": "WARNING"}
    try:
        _wait_http(endpoint)
        os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                               "AWS_DEFAULT_REGION")})
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        results = {name: _measure(name, quick, aws, endpoint, env, s3) for name in datasets}
        past_timeout = _past_one_invocation(env, endpoint, s3, quick)
    finally:
        moto.terminate()
        moto.wait(10)
    # The headline keys describe the default dataset whenever it ran (their meaning never changes);
    # a run of pgbench alone puts its own numbers there, labelled by `dataset`.
    out = {"bench": "backup", **results.get(DEFAULT_DATASET, results[datasets[0]])}
    out["past_one_invocation"] = past_timeout
    if chosen:
        out["datasets"] = results
    out["aws_cli"] = (subprocess.run([aws, "--version"], capture_output=True, text=True).stdout.strip()
                      or subprocess.run([aws, "--version"], capture_output=True, text=True).stderr.strip())
    return out
