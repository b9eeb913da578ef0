"""Backup and restore: the demo database to a local S3 (moto's server), then into a new database.

The backup runs through `pgkeeper invoke` like the scheduled Lambda (snapshot, exact counts,
zstd, multipart upload, read-back verification, manifest last); the restore is what an operator
types during a restore drill, `pgkeeper restore --latest --to URL`. The row counts of every
table are then compared: the manifest's, the source's and the restored database's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from demo.__main__ import ROOT, Demo, table

BUCKET = "pgkeeper-demo-backups"
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")


@contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 server on a free port, and the AWS variables pointing at it (restored after)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "demo",
                       "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    try:
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _counts(url: str, tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    with psycopg.connect(url) as c:
        return {(s, n): c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, n))).fetchone()[0]
                for s, n in tables}


def run(demo: Demo) -> None:
    import boto3

    with local_s3() as endpoint:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        print(f"A local S3 (moto server) at {endpoint}, bucket {BUCKET}; the function gets it as "
              "PGKEEPER_BACKUP_BUCKET, as the template's bucket in AWS.")
        saved = dict(demo.env)
        demo.env["PGKEEPER_BACKUP_BUCKET"] = BUCKET
        try:
            result = demo.invoke("BackupFunction", "backup-scheduled.json")
        finally:
            demo.env.clear()
            demo.env.update(saved)
        report = result["report"]
        if result["status"] != "succeeded":
            print(json.dumps(result, indent=2)[:3000])
            raise SystemExit("demo: the backup failed")
        v = report["verification"]
        table([{
            "key": report["key"].rsplit("/", 1)[1],
            "dump MB": f"{report['bytes_in'] / 1e6:.2f}",
            "stored MB": f"{report['bytes_out'] / 1e6:.2f}",
            "ratio": report["ratio"],
            "MB/s": report["throughput_mb_s"],
            "tables": report["tables"],
            "rows": report["rows"],
            "verified": f"{v['mode']}: decoded in full ({v['decoded']['where']}), sha256 {v['sha256']} on "
                        f"read-back, {v['tables']} tables in the TOC",
        }], ["key", "dump MB", "stored MB", "ratio", "MB/s", "tables", "rows", "verified"],
            "The backup (manifest written last, after the read-back verification):")

        database = conninfo_to_dict(demo.url)["dbname"]
        print("\n$ pgkeeper backups list")
        subprocess.run([sys.executable, "-m", "pgkeeper.cli", "backups", "list", "--bucket", BUCKET,
                        "--database", database], cwd=ROOT, check=True)

        target_name = f"{database}_restored_{uuid.uuid4().hex[:4]}"
        with demo.connect() as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_name)))
        params = conninfo_to_dict(demo.url)
        params["dbname"] = target_name
        target = make_conninfo(**params)
        try:
            print(f"\n$ createdb {target_name}")
            print(f"$ pgkeeper restore --latest --to postgresql://…/{target_name} --bucket {BUCKET} "
                  f"--database {database}")
            proc = subprocess.run([sys.executable, "-m", "pgkeeper.cli", "restore", "--latest", "--to", target,
                                   "--bucket", BUCKET, "--database", database], cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"demo: pgkeeper restore failed (exit {proc.returncode})")
            manifest = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"]
                                  .read())
            tables = [(t["schema"], t["name"]) for t in manifest["tables"]]
            source, restored = _counts(demo.url, tables), _counts(target, tables)
            rows = [{"table": f"{s}.{n}", "manifest": t["rows"], "source now": source[(s, n)],
                     "restored": restored[(s, n)], "match": "yes" if restored[(s, n)] == t["rows"] else "NO"}
                    for (s, n), t in zip(tables, manifest["tables"], strict=True)]
            table(rows, ["table", "manifest", "source now", "restored", "match"],
                  f"Row counts: the manifest (taken in the dump's snapshot), the source, and {target_name}")
            if any(r["match"] != "yes" for r in rows):
                raise SystemExit("demo: restored row counts differ from the manifest")
            print("\nEvery table matches. (`source now` may be ahead of the manifest on a live database: the "
                  "manifest counts exactly what the dump holds.)")
        finally:
            with demo.connect() as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_name)))
