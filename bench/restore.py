"""Restore: how long a recovery of a pgkeeper backup takes, against what a user would otherwise run.

  A  aws s3 cp s3://.../x.pgdump.zst - | zstd -d | pg_restore --no-owner --no-privileges -d EMPTY
     (the standard-tools recipe of docs/OPERATIONS.md, without the checksum or the row counts)
  B  pgkeeper restore --jobs 1   (one stream, one transaction, SHA-256 before commit, row counts)
  C  pgkeeper restore            (default --jobs: the CPU count; the verified archive to a temp file
                                  first, then pg_restore --jobs)
  D  the restore drill (the backup function's `drill` option: scratch database, compare, drop),
     timed in process as the job reports it (`drill_s`)

Each into a new empty database, alternating, the median of the rounds. `restore_ratio` is A's
time over C's (above 1: pgkeeper's default restore is faster than the hand-made pipe, while
also checking the SHA-256 and every table's rows); `restore_ratio_serial` the same for B.
`rto_mb_s` is pg_dump's bytes (the uncompressed archive) restored per second by C.
Same dataset as `make bench BENCH=backup` (PGKEEPER_BENCH_DATASET), same local moto server.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from backup import BUCKET, DEFAULT_DATASET, LOADERS, _free_port, _shell, _wait_http
from common import scratch_database
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]


_JOB = ("import json, sys; from pgkeeper import runner; from pgkeeper.backup.job import JOB; "
        "from pgkeeper.events import JobEvent; "
        "r = runner.execute(JOB, JobEvent(job='backup', options=json.loads(sys.argv[1]), trigger='invoke'), None); "
        "print('BENCH ' + json.dumps(r['report']))")


def _backup_job(env: dict, options: dict) -> dict:
    """One run of the backup job (a backup, or with {"drill": true} a drill) in a fresh process: its report."""
    proc = subprocess.run([sys.executable, "-c", _JOB, json.dumps(options)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit("bench restore: the pgkeeper run failed")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH "))
    return json.loads(line[6:])


def main(quick: bool) -> dict:
    aws = shutil.which("aws")
    if not aws or not all(shutil.which(t) for t in ("zstd", "pg_restore", "pgbench")):
        raise SystemExit("bench restore: needs aws (pip install awscli), zstd, pg_restore and pgbench on PATH")
    dataset = os.environ.get("PGKEEPER_BENCH_DATASET", DEFAULT_DATASET).strip().lower() or DEFAULT_DATASET
    if dataset not in LOADERS:
        raise SystemExit(f"bench restore: PGKEEPER_BENCH_DATASET={dataset!r}; expected one of {', '.join(LOADERS)}")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    rounds = 2 if quick else 3
    try:
        _wait_http(endpoint)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
        with scratch_database(f"pgk_bench_restore_{dataset}") as url, tempfile.TemporaryDirectory() as tmp:
            print(f"bench restore: loading the {dataset} dataset", file=sys.stderr)
            with psycopg.connect(url, autocommit=True) as conn:
                LOADERS[dataset](conn, url, quick)
            plan = Path(tmp) / "plan.yaml"
            plan.write_text(f"version: 1\nbackup:\n  bucket: {BUCKET}\n  verify: list\n"
                            "  retention:\n    enabled: false\n")
            cenv = {**env, "DATABASE_URL": url, "PGKEEPER_PLAN": str(plan)}
            backup = _backup_job(cenv, {})
            key, mb = backup["key"], backup["bytes_in"] / 1e6
            print(f"bench restore: backup {key}: {mb:.0f} MB archive, {backup['rows']} rows", file=sys.stderr)
            dbname = str(conninfo_to_dict(url)["dbname"])
            from pgkeeper.cli.restore import default_jobs

            jobs = default_jobs()  # what `pgkeeper restore` uses without --jobs
            times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
            drills: list[float] = []
            for _ in range(rounds):
                for name in ("A", "B", "C"):
                    with scratch_database(f"pgk_bench_restore_into_{name.lower()}") as target:
                        if name == "A":
                            cmd = (f"{aws} --endpoint-url {endpoint} s3 cp s3://{BUCKET}/{key} - | zstd -d -q | "
                                   f"pg_restore --no-owner --no-privileges --dbname '{target}'")
                        else:
                            cmd = (f"{sys.executable} -m pgkeeper.cli restore --key {key} --to '{target}' "
                                   f"--bucket {BUCKET} --database {dbname} --jobs {1 if name == 'B' else jobs}")
                        times[name].append(_shell(cmd, cenv))
                        print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
                t0 = time.monotonic()
                drill = _backup_job(cenv, {"drill": True})
                drills.append(drill.get("restore_s") or time.monotonic() - t0)
                print(f"  D (drill): {drills[-1]:.1f} s", file=sys.stderr)
    finally:
        moto.terminate()
        moto.wait(10)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bench": "restore", "dataset": dataset, "rounds": rounds, "archive_mb": round(mb, 1), "jobs": jobs,
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "restore_ratio": round(med["A"] / med["C"], 2),
        "restore_ratio_serial": round(med["A"] / med["B"], 2),
        "rto_mb_s": round(mb / med["C"], 1),
        "drill_s": round(statistics.median(drills), 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv)))
