"""One snapshot, many workers: sharded backups against real PostgreSQL, pg_dump/pg_restore and moto.

What a user relies on: the parts together restore the same rows and contents as the database had in
the snapshot; a worker that dies leaves no backup and no open upload; the snapshot's transaction
ends once every worker imported it; a database whose one stream cannot finish in an invocation
completes sharded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import test_backup as backup_tests
import test_fleet
from s3_proxy import SlowPartsProxy
from test_backup import BUCKET, TABLES, _content, _dbname, _run

from pgkeeper.backup.errors import BackupError
from pgkeeper.cli import main as cli
from pgkeeper.local.context import LocalContext

db_url, plan, s3, seeded = backup_tests.db_url, backup_tests.plan, backup_tests.s3, backup_tests.seeded
served = test_fleet.served

WIDE = """
CREATE TABLE wide_{n} AS SELECT g AS id, md5(g::text || '{n}') || md5((g * 3)::text) AS a, g % 97 AS b
FROM generate_series(1, {rows}) g
"""


def _manifest(s3, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _uploads(s3) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def _wide(pg: psycopg.Connection, tables: int, rows: int) -> list[str]:
    for n in range(tables):
        pg.execute(WIDE.format(n=n, rows=rows))
    return [f"public.wide_{n}" for n in range(tables)]


def test_a_sharded_backup_restores_the_same_rows_and_contents(seeded, plan, s3, pg, make_database, capsys):
    wide = _wide(pg, 3, 20_000)
    plan(shards=3, shard_workers="threads", content_checksums=True)
    report = _run()["report"]
    manifest = _manifest(s3, report["manifest_key"])
    assert manifest["format"] == "pgkeeper-backup/2"
    sections = [(p["name"], p["section"]) for p in manifest["shards"]]
    assert sections == [("pre", "pre-data"), ("s00", "data"), ("s01", "data"), ("s02", "data"), ("post", "post-data")]
    data_tables = [set(p["tables"]) for p in manifest["shards"] if p["section"] == "data"]
    assert all(data_tables) and set.union(*data_tables) >= set(wide)  # every table in exactly one shard
    assert sum(len(t) for t in data_tables) == len(set.union(*data_tables))
    assert manifest["key"] == report["key"] and manifest["key"].endswith(".pgdump.zst")
    assert "imports_s" in manifest["timings"] and "max_worker_s" in manifest["timings"]
    assert report["verification"]["ok"]

    target = make_database()
    capsys.readouterr()
    assert cli(["restore", "--latest", "--to", target, "--database", _dbname(seeded), "--jobs", "2"]) == 0
    assert "every row count and content checksum match" in capsys.readouterr().err
    with psycopg.connect(seeded) as src, psycopg.connect(target) as dst:
        for table in [*TABLES, *wide]:
            assert _content(dst, table) == _content(src, table), table
        # Post-data came last: the primary key, the foreign key and the view's data are there.
        assert dst.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0] >= 1
        assert dst.execute("SELECT sum(n) FROM user_counts").fetchone()[0] == 3000
        seq = "SELECT last_value FROM \"Audit Log\".\"Entry_id_seq\""
        assert dst.execute(seq).fetchone() == src.execute(seq).fetchone()  # sequences (shard s00)

    # One backup, listed once; a drill restores every part into a scratch database.
    assert cli(["backups", "list", "--json", "--database", _dbname(seeded)]) == 0
    assert [b["key"] for b in json.loads(capsys.readouterr().out)["backups"]] == [report["key"]]
    assert _run({"drill": True})["status"] == "succeeded"


WATCHER = """
import sys, time, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    while True:
        row = conn.execute(
            "SELECT coalesce(bool_or(application_name = 'pgkeeper/backup/snapshot' "
            "AND xact_start IS NOT NULL), false), "
            "count(*) FILTER (WHERE application_name LIKE 'pgkeeper/backup/shard/%/s%') "
            "FROM pg_stat_activity WHERE datname = current_database()").fetchone()
        print(int(row[0]), row[1], flush=True)
        time.sleep(0.005)
"""


def test_the_snapshot_transaction_ends_once_every_worker_imported_it(seeded, plan, s3, pg):
    """Sampled from another process (this one is busy running the backup): the data workers'
    pg_dump sessions are seen streaming while pgkeeper's snapshot transaction is already closed."""
    _wide(pg, 4, 200_000)
    plan(shards=4, shard_workers="threads")
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, seeded], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # connected and sampling
        assert _run()["status"] == "succeeded"
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    seen = [(line.split()[0] == "1", int(line.split()[1])) for line in out.splitlines() if line.strip()]
    assert any(open_ for open_, _ in seen)  # open while the workers imported it
    assert any(dumps > 0 and not open_ for open_, dumps in seen), "".join(f"{int(o)}{d}," for o, d in seen)


def _pg_dump_of(part: str) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"pg_dump") and any(f"/{part} ".encode() in a or
                                                                a.endswith(f"/{part}".encode()) for a in cmdline):
            return int(pid)
    return None


def test_a_worker_killed_mid_stream_leaves_no_backup_and_no_open_upload(seeded, plan, s3, pg):
    _wide(pg, 3, 150_000)
    plan(shards=3, shard_workers="threads", upload_concurrency=1)
    killed: list[int] = []

    def kill_first_shard() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            pid = _pg_dump_of("s00")
            if pid:
                time.sleep(0.15)  # mid-stream: it has started writing
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_shard, daemon=True)
    killer.start()
    with pytest.raises(BackupError) as err:
        _run()
    killer.join(5)
    assert killed, "the worker's pg_dump was seen and killed"
    assert "part s00" in str(err.value) and "killed by signal 9" in str(err.value)
    # Nothing but the marker that tells other invocations' workers to stop (swept a day later).
    assert [k.rsplit(".", 1)[1] for k in _keys(s3)] == ["cancelled"] and _uploads(s3) == []


@pytest.fixture()
def throttled(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowPartsProxy]:
    """Every part upload takes 3 s more: one stream of N parts needs 3N s, N streams of one part 3 s."""
    proxy = SlowPartsProxy(aws, lambda _size: 3.0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    yield proxy
    proxy.close()


def test_a_database_one_stream_cannot_back_up_in_time_completes_sharded(seeded, plan, s3, pg, throttled):
    _wide(pg, 4, 60_000)  # ~4 MB compressed each: one 5 MiB part per shard, four for one stream
    plan(upload_concurrency=1)
    with pytest.raises(BackupError, match="out of time|did not finish|within the"):
        _run(context=LocalContext(10.5))  # one stream needs 4 x 3 s of upload alone
    assert _keys(s3) == [] and _uploads(s3) == []

    plan(shards=4, shard_workers="threads", upload_concurrency=1)
    result = _run(context=LocalContext(10.5))  # each shard's stream needs 3 s
    assert result["status"] == "succeeded"
    manifest = _manifest(s3, result["report"]["manifest_key"])
    assert manifest["timings"]["max_worker_s"] < 10.5
    assert {p["name"] for p in manifest["shards"]} == {"pre", "s00", "s01", "s02", "s03", "post"}


def test_shards_run_as_invocations_of_the_function_through_the_invoke_api(use_db, pg, served, make_database,
                                                                          capsys):
    """A fleet member's sharded backup, as deployed: the fan-out invokes the member, whose run invokes
    one worker per data shard through the Lambda Invoke API (`pgkeeper serve`'s, here)."""
    pg.execute(backup_tests.SCHEMA)
    wide = _wide(pg, 3, 20_000)
    plan = {"version": 1, "backup": {"part_size_mib": 5, "shards": 3, "shard_workers": "invocations"},
            "fleet": {"concurrency": 1, "poll_s": 0.1, "databases": [{"name": "main",
                                                                      "database": {"url_env": "SHARDED_URL"}}]}}
    s = served(plan, {"SHARDED_URL": use_db})
    boto3.client("s3").create_bucket(Bucket="pgk-fleet")

    result = s.handler("backup")({"job": "backup"}, s.context("backup", 120))
    assert result["status"] == "succeeded", result
    (run,) = [r for r in psycopg.connect(use_db).execute(
        "SELECT trigger, status, report FROM pgkeeper.runs WHERE job = 'backup' AND run_id <> %s",
        [result["run_id"]]).fetchall()]  # the member's run, not the fan-out's own (also recorded here)
    assert run[:2] == ("fleet", "succeeded")
    manifest_key = run[2]["manifest_key"]
    manifest = json.loads(boto3.client("s3").get_object(Bucket="pgk-fleet", Key=manifest_key)["Body"].read())
    assert [p["name"] for p in manifest["shards"]] == ["pre", "s00", "s01", "s02", "post"]
    assert manifest_key.startswith("pgkeeper/main/")

    target = make_database()
    assert cli(["restore", "--latest", "--to", target, "--bucket", "pgk-fleet", "--database", "main"]) == 0
    with psycopg.connect(use_db) as src, psycopg.connect(target) as dst:
        for table in [*TABLES, *wide]:
            assert _content(dst, table) == _content(src, table), table


def test_strays_are_objects_of_no_backup_and_are_swept_only_when_old(seeded, plan, s3, pg):
    from datetime import UTC, datetime, timedelta

    from pgkeeper.backup.store import BackupStore

    _wide(pg, 2, 1000)
    plan(shards=2, shard_workers="threads")
    report = _run()["report"]
    base = report["key"].rsplit("/", 1)[0] + "/"
    stray = [f"{base}20250101T000000Z-deadbeef.s01.pgshard.zst", f"{base}20250101T000000Z-deadbeef.s01.part.json"]
    orphan = f"{base}20250102T000000Z-cafecafe.pgdump.zst"
    for key in [*stray, orphan, f"{base}notours.txt"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    store = BackupStore(s3, BUCKET, "pgkeeper/", base.rstrip("/").rsplit("/", 1)[1])
    assert store.strays(datetime.now(UTC) - timedelta(hours=1)) == []  # too young: maybe a running backup's
    assert store.strays(datetime.now(UTC) + timedelta(seconds=5)) == sorted(stray)  # never a backup's part


def test_the_standard_tools_recipe_restores_a_sharded_backup(seeded, plan, s3, pg, make_database, tmp_path):
    """OPERATIONS.md's sharded recipe, run as written (its `aws s3 cp` served from a local copy)."""
    wide = _wide(pg, 2, 5000)
    plan(shards=2, shard_workers="threads")
    report = _run()["report"]
    store = tmp_path / "bucket"
    store.mkdir()
    for key in _keys(s3):
        (store / key.rsplit("/", 1)[1]).write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    text = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    block = text.split("<!-- sharded-recipe -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    recipe = "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())
    target = make_database()
    work = tmp_path / "work"
    work.mkdir()
    script = (f'aws() {{ cp "{store}/${{3##*/}}" "$4"; }}\nB=s3://bucket/prefix\n'
              f'KEY={report["key"].rsplit("/", 1)[1].removesuffix(".pgdump.zst")}\nDB=\'{target}\'\n{recipe}')
    subprocess.run(["bash", "-c", script], cwd=work, check=True, capture_output=True)
    with psycopg.connect(seeded) as src, psycopg.connect(target) as dst:
        for table in [*TABLES, *wide]:
            assert _content(dst, table) == _content(src, table), table
        assert dst.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0] >= 1


def test_a_tampered_part_stops_the_restore_and_says_what_the_target_holds(seeded, plan, s3, pg, make_database,
                                                                          capsys):
    _wide(pg, 3, 5000)
    plan(shards=3, shard_workers="threads")
    report = _run()["report"]
    part = next(p for p in _manifest(s3, report["manifest_key"])["shards"] if p["name"] == "s01")
    import zstandard

    raw = s3.get_object(Bucket=BUCKET, Key=part["key"])["Body"].read()
    archive = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    s3.put_object(Bucket=BUCKET, Key=part["key"], Body=zstandard.ZstdCompressor(level=1).compress(archive))
    target = make_database()
    capsys.readouterr()
    assert cli(["restore", "--latest", "--to", target, "--database", _dbname(seeded), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "SHA-256 of the object is" in err and "checksum_mismatch" in err  # its own reason, kept
    assert "the target holds the parts pre" in err and "s01" not in err.split("holds the parts")[1].split(";")[0]


def test_a_worker_spec_too_large_for_an_invoke_payload_goes_through_s3(s3):
    from pgkeeper.backup.sharding import ShardSpec, load_spec, worker_event

    many = [("public", f"table_{n:05d}") for n in range(5000)]
    spec = ShardSpec(run_id="r", name="s00", section="data", key="k", bucket=BUCKET, stem="pgkeeper/db/x",
                     snapshot_id="s", takes_rest=True, exclude_data=many, level=3, threads=1, part_size=5 << 20,
                     upload_concurrency=1, lock_wait_timeout_ms=1000)
    event = worker_event(spec, {}, s3)
    assert len(json.dumps(event)) < 1000 and event["shard"]["spec_key"] == "pgkeeper/db/x.s00.spec.json"
    assert load_spec(event["shard"], s3) == spec
