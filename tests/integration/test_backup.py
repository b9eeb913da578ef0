"""The backup job against real PostgreSQL, real pg_dump/pg_restore and moto's S3 server.

What a careful DBA checks: the restored database has the same rows and the same contents; a
backup that failed half-way leaves nothing that looks like a backup; retention never deletes
when the new backup is not verified; a tampered object is never restored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
import zstandard
from psycopg import sql

from pgkeeper import runner
from pgkeeper.backup.errors import BackupError, VerificationError, VersionMismatchError
from pgkeeper.backup.job import JOB, BackupOptions
from pgkeeper.backup.manifest import Manifest
from pgkeeper.backup.pipeline import Progress
from pgkeeper.backup.verify import scratch_prefix
from pgkeeper.budget import Budget
from pgkeeper.cli import main as cli
from pgkeeper.config import get_plan
from pgkeeper.db import Database
from pgkeeper.errors import ConfigError, EventError, PgkeeperError
from pgkeeper.events import JobEvent
from pgkeeper.jobs import JobContext, as_dict
from pgkeeper.local.context import LocalContext

BUCKET = "pgk-backups"

SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, created timestamptz NOT NULL, score numeric(10,2),
                    profile jsonb, avatar bytea);
INSERT INTO users SELECT g, 'user' || g || '@example.com', '2024-01-01'::timestamptz + g * interval '1 minute',
                         (g % 1000) / 7.0, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 3)),
                         CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END
FROM generate_series(1, 3000) g;
CREATE TABLE "Session" ("id" text PRIMARY KEY, "userId" bigint REFERENCES users, "expiresAt" timestamptz);
INSERT INTO "Session" SELECT md5(g::text), g % 3000 + 1, now() + g * interval '1 hour' FROM generate_series(1, 1200) g;
CREATE TABLE events (id bigint, at date NOT NULL, kind text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, '2024-06-01'::date + (g % 400), 'kind-' || (g % 7) FROM generate_series(1, 2500) g;
CREATE SCHEMA "Audit Log";
CREATE TABLE "Audit Log"."Entry" (id serial PRIMARY KEY, note text);
INSERT INTO "Audit Log"."Entry" (note) SELECT repeat('x', g % 50) FROM generate_series(1, 700) g;
CREATE TABLE empty_table (id int);
CREATE MATERIALIZED VIEW user_counts AS SELECT score::int AS s, count(*) AS n FROM users GROUP BY 1;
"""

TABLES = ["public.users", 'public."Session"', "public.events_2024", "public.events_2025",
          '"Audit Log"."Entry"', "public.empty_table"]


def _content(conn: psycopg.Connection, table: str) -> tuple[int, str]:
    """(rows, md5 of every row's text, in a stable order): equal only if the contents are equal."""
    schema, name = ("public", table) if "." not in table else table.split(".", 1)
    ident = sql.Identifier(schema.strip('"'), name.strip('"'))
    q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t").format(ident)
    return tuple(conn.execute(q).fetchone())


def _bucket_keys(s3) -> list[str]:
    resp = s3.list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def _multipart_uploads(s3) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


@pytest.fixture()
def s3(aws):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


BIG = ("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS t "
       "FROM generate_series(1, 400000) g")


def _schema_and_big(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)
    conn.execute(BIG)


@pytest.fixture()
def db_url(request, make_database, database_template) -> str:
    """The test's new database. For a test using `big`, a copy of a template holding SCHEMA and the
    big table: writing its 400k rows takes ~1 s, copying them a tenth of that."""
    if "big" in request.fixturenames:
        return make_database(template=database_template("backup_big", _schema_and_big))
    return make_database()


@pytest.fixture()
def seeded(use_db, pg, request):
    if "big" not in request.fixturenames:  # `big`'s copy has SCHEMA already
        pg.execute(SCHEMA)
    return use_db


@pytest.fixture()
def plan(write_plan, s3, monkeypatch):
    monkeypatch.setenv("PGKEEPER_BACKUP_BUCKET", BUCKET)
    # PGKEEPER_TEST_PG_BIN_DIR runs these tests with other binaries, e.g. the pgtools layer's
    # (`make -C layers/pgtools check`, then PGKEEPER_TEST_PG_BIN_DIR=layers/pgtools/.check/pgtools/bin).
    if os.environ.get("PGKEEPER_TEST_PG_BIN_DIR"):
        monkeypatch.setenv("PGKEEPER_PG_BIN_DIR", os.path.abspath(os.environ["PGKEEPER_TEST_PG_BIN_DIR"]))
    else:
        monkeypatch.delenv("PGKEEPER_PG_BIN_DIR", raising=False)

    def write(**backup):
        return write_plan({"version": 1, "backup": {"part_size_mib": 5, **backup}})

    write()
    return write


def _run(options: dict | None = None, context=None) -> dict:
    return runner.execute(JOB, JobEvent(job="backup", options=options or {}, trigger="invoke"), context)


def _ctx(url: str, *, on_part=None, **options) -> JobContext:
    """A job context as the runner builds it, plus a progress hook (the runner has no way to pass one)."""
    plan = get_plan()
    db = Database(url, plan.database, "backup")
    ctx = JobContext(plan=plan, db=db, budget=Budget(600), options=BackupOptions(**options), run_id="hookrun0001")
    if on_part is not None:
        ctx.extra["on_part"] = on_part
    return ctx


def test_backup_restores_into_a_new_database_with_same_rows_and_contents(seeded, plan, s3, make_database, capsys):
    result = _run()
    report = result["report"]
    assert result["status"] == "succeeded"
    assert report["verification"]["ok"] and report["verification"]["sha256"] == "match"
    assert report["verification"]["decoded"] == {"bytes": report["bytes_in"], "where": "upload"}
    assert report["verification"]["bytes_read"] == report["bytes_out"]
    assert report["bytes_out"] < report["bytes_in"] and report["ratio"] > 1
    assert report["tables"] >= len(TABLES) + 1  # + pgkeeper's own tables (run history)
    assert set(_bucket_keys(s3)) == {report["key"], report["manifest_key"]}

    target = make_database()
    assert cli(["restore", "--latest", "--to", target, "--database", _dbname(seeded)]) == 0
    assert "every row count match" in capsys.readouterr().err
    with psycopg.connect(seeded) as src, psycopg.connect(target) as dst:
        for table in TABLES:
            assert _content(dst, table) == _content(src, table), table
        # The materialized view comes back populated, the partitioned parent routes to its partitions.
        assert dst.execute("SELECT sum(n) FROM user_counts").fetchone()[0] == 3000
        assert dst.execute("SELECT count(*) FROM events").fetchone()[0] == 2500

    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read())
    with psycopg.connect(target) as dst:
        for t in manifest["tables"]:
            ident = sql.Identifier(t["schema"], t["name"])
            restored = dst.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
            assert restored == t["rows"], t
    assert {(t["schema"], t["name"]) for t in manifest["tables"]} >= {("public", "Session"), ("Audit Log", "Entry")}
    assert manifest["sha256"] == report["sha256"] and manifest["pg_dump_version"] and manifest["server_version"]


def test_manifest_counts_rows_in_the_dump_snapshot_not_later_writes(seeded, plan, s3, pg, make_database):
    """Rows inserted while pg_dump runs are neither counted nor dumped: counts and dump agree."""

    def write_during_dump(progress: Progress) -> None:
        if progress.parts == 1:
            pg.execute("INSERT INTO empty_table SELECT generate_series(1, 50)")

    pg.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS t "
               "FROM generate_series(1, 300000) g")
    report = as_dict(JOB.run(_ctx(seeded, on_part=write_during_dump)))
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read())
    counts = {(t["schema"], t["name"]): t["rows"] for t in manifest["tables"]}
    assert counts[("public", "empty_table")] == 0
    assert pg.execute("SELECT count(*) FROM empty_table").fetchone()[0] == 50

    target = make_database()
    assert cli(["restore", "--key", report["key"], "--to", target, "--bucket", BUCKET,
                "--database", _dbname(seeded)]) == 0
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM empty_table").fetchone()[0] == 0
        assert dst.execute("SELECT count(*) FROM big").fetchone()[0] == counts[("public", "big")] == 300000


def test_verify_restore_mode_restores_into_a_scratch_database_and_drops_it(seeded, plan, s3, admin_url):
    plan(verify="restore")
    result = _run()
    report = result["report"]
    assert report["verification"]["mode"] == "restore"
    assert report["verification"]["restore"]["rows_match"] is True
    assert report["verification"]["restore"]["rows"] == report["rows"]
    with psycopg.connect(admin_url) as c:  # this run's scratch database (others may run alongside)
        left = c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                         [scratch_prefix(result["run_id"]) + "%"]).fetchall()
    assert left == []


KILLED: list[int] = []


def _kill_pg_dump_after_first_part(progress: Progress) -> None:
    if progress.parts == 1:
        for pid in _children_named("pg_dump"):
            os.kill(pid, signal.SIGKILL)
            KILLED.append(pid)


def _children_named(name: str) -> list[int]:
    """Our child processes running `name`: by process name, or by an argument naming the binary
    (an emulator running it: the arm64 layer's pg_dump under qemu-aarch64, see OPERATIONS.md)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == me and (comm == name or any(Path(os.fsdecode(a)).name == name for a in args if a)):
            found.append(int(entry.name))
    return found


@pytest.fixture()
def big(seeded, pg, plan):
    """Enough rows that the dump is still running when the first 5 MiB part is uploaded. zstd runs
    in-line (no worker threads), so compressed output follows the input closely: pg_dump still has
    ~20 MB to write, and blocks on the pipe, when part 1 is handed over."""
    plan(compression_threads=0)  # the table itself comes with the database (see db_url)
    return seeded


def test_pg_dump_killed_mid_stream_aborts_the_upload_and_leaves_nothing(big, plan, s3):
    KILLED.clear()
    with pytest.raises(BackupError, match="pg_dump was killed by signal 9"):
        JOB.run(_ctx(big, on_part=_kill_pg_dump_after_first_part))
    assert len(KILLED) == 1
    assert _bucket_keys(s3) == []
    assert _multipart_uploads(s3) == []
    assert cli(["backups", "list", "--json", "--bucket", BUCKET, "--database", "x"]) == 0


def test_upload_aborted_by_s3_mid_stream_fails_the_run_and_leaves_nothing(big, plan, s3):
    """S3 drops the multipart upload while parts are still coming (an operator or lifecycle rule)."""

    def s3_loses_the_upload(progress: Progress) -> None:
        if progress.parts == 1:
            for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
                s3.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])

    # Real S3 answers NoSuchUpload; moto answers 500. Either way the part fails and the run with it.
    with pytest.raises(BackupError, match="uploading a part of s3://"):
        JOB.run(_ctx(big, on_part=s3_loses_the_upload))
    assert _bucket_keys(s3) == []
    assert _multipart_uploads(s3) == []


def test_s3_endpoint_gone_mid_upload_fails_the_run_and_no_backup_appears(big, plan, s3, monkeypatch):
    """The S3 endpoint stops answering after the first part; moto's state outlives its server."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    stopped = []

    def endpoint_goes_away(progress: Progress) -> None:
        if progress.parts == 1 and not stopped:
            server.stop()
            stopped.append(True)

    try:
        with pytest.raises(BackupError, match="lifecycle rule"):
            JOB.run(_ctx(big, on_part=endpoint_goes_away))
    finally:
        if not stopped:
            server.stop()
    # Seen through the session's server (same in-process state): no object, no manifest.
    assert _bucket_keys(s3) == []


def test_old_pg_dump_is_refused_before_anything_is_uploaded(seeded, plan, s3, tmp_path, monkeypatch, pg):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.3'\n")
    (fake / "pg_dump").chmod(0o755)
    (fake / "pg_restore").write_text("#!/bin/sh\necho 'pg_restore (PostgreSQL) 12.3'\n")
    (fake / "pg_restore").chmod(0o755)
    monkeypatch.setenv("PGKEEPER_PG_BIN_DIR", str(fake))
    with pytest.raises(VersionMismatchError, match=r"pg_dump 12\.3 .* is older than the server \(PostgreSQL 1\d"):
        _run()
    assert _bucket_keys(s3) == []
    assert _multipart_uploads(s3) == []
    status, error = pg.execute("SELECT status, error FROM pgkeeper.runs").fetchone()
    assert status == "failed" and "older than the server" in error


def _seed_old_backups(s3, database: str, days: int) -> list[str]:
    """Complete backups (dump + manifest) of the last `days` days, as earlier runs left them."""
    keys = []
    now = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    for d in range(1, days + 1):
        stamp = (now - timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ")
        key = f"pgkeeper/{database}/{stamp}-old{d:05d}.pgdump.zst"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"old")
        s3.put_object(Bucket=BUCKET, Key=key.replace(".pgdump.zst", ".manifest.json"), Body=b"{}")
        keys.append(key)
    return keys


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def test_retention_prunes_after_a_verified_backup(seeded, plan, s3):
    plan(retention={"daily": 3, "weekly": 0, "monthly": 0, "min_keep": 1})
    old = _seed_old_backups(s3, _dbname(seeded), 10)
    report = _run()["report"]
    # Today's new backup plus the two newest earlier days; the other eight are gone, manifests first.
    assert sorted(report["pruned"]) == sorted(old[2:])
    dumps = [k for k in _bucket_keys(s3) if k.endswith(".pgdump.zst")]
    assert sorted(dumps) == sorted([report["key"], *old[:2]])
    assert not any(k.endswith(".manifest.json") and k.replace(".manifest.json", ".pgdump.zst") not in dumps
                   for k in _bucket_keys(s3))


def test_failed_verification_prunes_nothing_and_leaves_no_new_backup(seeded, plan, s3, monkeypatch):
    plan(verify="restore", verify_server_url_env="PGK_VERIFY_URL",
         retention={"daily": 1, "weekly": 0, "monthly": 0, "min_keep": 1})
    monkeypatch.setenv("PGK_VERIFY_URL", "postgresql://postgres@127.0.0.1:1/postgres")  # nothing listens there
    old = _seed_old_backups(s3, _dbname(seeded), 5)
    before = _bucket_keys(s3)
    with pytest.raises(VerificationError, match="verification could not run"):
        _run()
    assert _bucket_keys(s3) == before
    assert all(k in before for k in old)
    assert _multipart_uploads(s3) == []


def test_verification_that_cannot_reach_its_server_leaves_no_pg_restore_running(seeded, plan, s3):
    from pgkeeper.backup import pgtools
    from pgkeeper.backup.verify import verify_backup

    report = _run()["report"]
    manifest = Manifest.parse(s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read(), "m")
    with pytest.raises(psycopg.OperationalError):
        verify_backup(s3, BUCKET, manifest, pgtools.find("pg_restore"), mode="restore",
                      server_conninfo="postgresql://postgres@127.0.0.1:1/postgres", run_id="leakcheck")
    assert _children_named("pg_restore") == []


def test_dry_run_lists_what_retention_would_delete_and_uploads_nothing(seeded, plan, s3):
    plan(retention={"daily": 2, "weekly": 0, "monthly": 0, "min_keep": 1})
    old = _seed_old_backups(s3, _dbname(seeded), 4)
    before = _bucket_keys(s3)
    report = _run({"dry_run": True})["report"]
    assert report["dry_run"] is True
    assert report["would_delete"] == old[2:]
    assert [k["key"] for k in report["would_keep"]] == old[:2]
    assert _bucket_keys(s3) == before


def _recompress(s3, key: str) -> None:
    """Replace the object by the same archive compressed differently: valid zstd, valid archive,
    different bytes. pg_restore would restore it happily if it were fed to the end."""
    raw = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    archive = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    s3.put_object(Bucket=BUCKET, Key=key, Body=zstandard.ZstdCompressor(level=1).compress(archive))


def test_restore_refuses_an_object_whose_checksum_does_not_match(seeded, plan, s3, make_database, capsys):
    report = _run()["report"]
    _recompress(s3, report["key"])
    target = make_database()
    rc = cli(["restore", "--key", report["key"], "--to", target, "--bucket", BUCKET, "--database", _dbname(seeded)])
    assert rc == 2
    assert "SHA-256 of the object is" in capsys.readouterr().err
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0


def test_restore_refuses_a_truncated_object(seeded, plan, s3, make_database, capsys):
    report = _run()["report"]
    raw = s3.get_object(Bucket=BUCKET, Key=report["key"])["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=report["key"], Body=raw[: len(raw) * 2 // 3])
    target = make_database()
    assert cli(["restore", "--latest", "--to", target, "--bucket", BUCKET, "--database", _dbname(seeded)]) == 2
    assert "altered or damaged" in capsys.readouterr().err
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0


def test_restore_refuses_a_database_that_already_has_tables(seeded, plan, s3, capsys):
    _run()
    assert cli(["restore", "--latest", "--to", seeded, "--bucket", BUCKET, "--database", _dbname(seeded)]) == 2
    assert "already has" in capsys.readouterr().err


def test_backups_list_shows_only_complete_backups(seeded, plan, s3, capsys):
    report = _run({"label": "before-migration"})["report"]
    s3.put_object(Bucket=BUCKET, Key=f"pgkeeper/{_dbname(seeded)}/20200101T000000Z-dead0000.pgdump.zst", Body=b"x")
    capsys.readouterr()
    assert cli(["backups", "list", "--json", "--details", "--database", _dbname(seeded)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [b["key"] for b in listing["backups"]] == [report["key"]]
    assert listing["backups"][0]["label"] == "before-migration"
    assert listing["backups"][0]["rows"] == report["rows"]
    assert len(listing["incomplete"]) == 1


def test_dump_runs_without_password_in_its_command_line():
    from pgkeeper.backup.pgtools import libpq_target

    target, env = libpq_target("postgresql://app:s3cr%40t@db.example.com:5432/prod?sslmode=require", "x")
    assert "s3cr" not in target and env == {"PGPASSWORD": "s3cr@t"}
    assert "sslmode=require" in target and "dbname=prod" in target


def test_pg_dump_gets_the_password_in_its_environment_never_in_its_command_line(big, plan, s3):
    """What `ps` shows of the running pg_dump: the conninfo, without the password (trust auth here
    ignores it, so the dump still succeeds); the password arrives as PGPASSWORD."""
    params = psycopg.conninfo.conninfo_to_dict(big)
    url = psycopg.conninfo.make_conninfo(**{**params, "password": "Sup3rSecretPw"})
    seen: list[tuple[bytes, bytes]] = []

    def look_at_pg_dump(progress: Progress) -> None:
        for pid in _children_named("pg_dump"):
            if not seen:
                seen.append((Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes()))

    report = as_dict(JOB.run(_ctx(url, on_part=look_at_pg_dump)))
    assert seen, "pg_dump finished before the first part: the hook never saw it running"
    cmdline, environ = seen[0]
    assert b"--snapshot=" in cmdline and b"Sup3rSecretPw" not in cmdline
    assert b"PGPASSWORD=Sup3rSecretPw" in environ.split(b"\0")
    manifest = s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read()
    assert b"Sup3rSecretPw" not in manifest and "Sup3rSecretPw" not in json.dumps(report)


def test_unparsable_verify_server_url_fails_before_the_dump_without_quoting_it(seeded, plan, s3, pg, caplog,
                                                                               monkeypatch):
    """libpq's parse error quotes the bad token, here the password: it must reach no report or log."""
    plan(verify="restore", verify_server_url_env="PGK_VERIFY_URL")
    monkeypatch.setenv("PGK_VERIFY_URL", "postgresql://postgres:Sup3r%zzSecret@127.0.0.1/postgres")
    with pytest.raises(ConfigError, match="PGK_VERIFY_URL: the URL cannot be parsed") as failure:
        _run()
    assert "Sup3r" not in str(failure.value)
    assert _bucket_keys(s3) == [] and _multipart_uploads(s3) == []
    status, error = pg.execute("SELECT status, error FROM pgkeeper.runs").fetchone()
    assert status == "failed" and "PGK_VERIFY_URL" in error and "Sup3r" not in error
    assert "job failed" in caplog.text and "Sup3r" not in caplog.text  # the traceback included


def test_pg_dump_is_pointed_at_neons_direct_host_not_the_pooler():
    from pgkeeper.backup.pgtools import libpq_target
    from pgkeeper.plan.database import DatabaseSettings

    db = Database("postgresql://app:pw@ep-cool-river-123456-pooler.eu-central-1.aws.neon.tech/neondb?sslmode=require",
                  DatabaseSettings(), "backup")
    target, _ = libpq_target(db.conninfo, "pgkeeper/backup/pg_dump")
    assert "host=ep-cool-river-123456.eu-central-1.aws.neon.tech" in target and "pooler" not in target


def test_restore_through_psql_commits_only_a_whole_verified_script(seeded, plan, s3, make_database):
    """The path for pg_restore 17+ into a server before 17 (pg_restore --file - | psql), forced here
    with the machine's client: all rows arrive; a mismatching object commits nothing."""
    from pgkeeper.backup import pgtools
    from pgkeeper.backup.errors import ChecksumMismatchError
    from pgkeeper.backup.restore import restore_backup
    from pgkeeper.backup.store import BackupStore

    report = _run()["report"]
    store = BackupStore(s3, BUCKET, "pgkeeper/", _dbname(seeded))
    ref = store.find(report["key"])
    manifest = store.read_manifest(ref)
    tool = pgtools.find("pg_restore")

    good = make_database()
    result = restore_backup(store, ref, good, tool, manifest=manifest, script=True)
    assert result["mismatches"] == [] and result["rows"] == report["rows"]
    with psycopg.connect(seeded) as src, psycopg.connect(good) as dst:
        assert _content(dst, '"Audit Log"."Entry"') == _content(src, '"Audit Log"."Entry"')

    _recompress(s3, report["key"])
    bad = make_database()
    with pytest.raises(ChecksumMismatchError):
        restore_backup(store, store.find(report["key"]), bad, tool, manifest=manifest, script=True)
    with psycopg.connect(bad) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0


def test_script_copy_drops_only_the_preambles_transaction_timeout():
    import io

    from pgkeeper.backup.restore import copy_script

    script = (b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nBEGIN;\n\nSET statement_timeout = 0;\n"
              b"SET transaction_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
              b"CREATE TABLE public.t (x text);\nCOPY public.t (x) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n"
              b"COMMIT;\n")
    out = io.BytesIO()
    copy_script(io.BytesIO(script), out)
    assert out.getvalue() == script.replace(b"SET transaction_timeout = 0;\nSELECT", b"SELECT", 1)
    assert out.getvalue().count(b"SET transaction_timeout = 0;") == 1  # the row in the data is kept


def test_excluded_tables_and_table_data_stay_out_of_dump_and_manifest(seeded, plan, s3, make_database):
    plan(exclude_tables=['"Session"'], exclude_table_data=['"Audit Log"."Entry"'])
    report = _run()["report"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=report["manifest_key"])["Body"].read())
    names = {(t["schema"], t["name"]) for t in manifest["tables"]}
    assert ("public", "Session") not in names and ("Audit Log", "Entry") not in names
    assert ("public", "users") in names

    target = make_database()
    assert cli(["restore", "--latest", "--to", target, "--database", _dbname(seeded)]) == 0
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT to_regclass('public.\"Session\"')").fetchone()[0] is None
        assert dst.execute('SELECT count(*) FROM "Audit Log"."Entry"').fetchone()[0] == 0  # table kept, rows not
        assert dst.execute("SELECT count(*) FROM users").fetchone()[0] == 3000


def test_plan_check_names_missing_exclusions_and_an_old_pg_dump(seeded, plan, pg, tmp_path, monkeypatch):
    plan(exclude_tables=["public.nope"], exclude_schemas=["ghost"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    (fake / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PGKEEPER_PG_BIN_DIR", str(fake))
    problems = JOB.check(get_plan(), pg)
    assert any("exclude_tables: table public.nope does not exist" in p for p in problems)
    assert any("exclude_schemas: schema 'ghost' does not exist" in p for p in problems)
    assert any("pg_dump 9.6 " in p and "older than the server" in p for p in problems)


def test_pipe_chunks_fill_whole_chunks_from_small_writes_and_keep_every_byte():
    """pg_dump writes a few KB at a time; the compressor must still get full chunks, nothing lost."""
    import threading

    from pgkeeper.backup.pipeline import PipeChunks

    data = os.urandom(3000) * 700  # 2.1 MB in 3 KB writes
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "wb", buffering=0) as out:
            for i in range(0, len(data), 3000):
                out.write(data[i:i + 3000])

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as stream:
        sizes, got = [], bytearray()
        for chunk in PipeChunks(stream, 64 * 1024):
            sizes.append(len(chunk))
            got += chunk
    writer.join()
    assert bytes(got) == data
    assert all(s == 64 * 1024 for s in sizes[:-1]) and 0 < sizes[-1] <= 64 * 1024


class _FailingBody:
    """An S3 body whose connection breaks after `good` bytes."""

    def __init__(self, data: bytes, good: int) -> None:
        self._data, self._good, self._pos = data, good, 0

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._good:
            raise ConnectionResetError("connection reset by peer")
        out = self._data[self._pos:self._pos + min(size, self._good - self._pos)]
        self._pos += len(out)
        return out


def test_read_back_checks_hash_and_size_and_raises_a_broken_download():
    """The read-ahead thread hashes every byte in order, and its errors reach the reader (no hang)."""
    import hashlib
    import io

    from pgkeeper.backup.restore import stream_archive

    archive = os.urandom(1 << 20) + b"pg_dump archive " * 300_000  # compresses to more than one 1 MiB read-ahead chunk
    blob = zstandard.ZstdCompressor(level=3).compress(archive)
    stats = stream_archive(io.BytesIO(blob), [], expected_sha256=hashlib.sha256(blob).hexdigest(), hold_back=True)
    assert (stats.bytes_compressed, stats.bytes_decompressed) == (len(blob), len(archive))
    with pytest.raises(ConnectionResetError):
        stream_archive(_FailingBody(blob, len(blob) // 2), [], expected_sha256=None, hold_back=False)


def _chunks(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_round_trip_passes_a_whole_stream_and_refuses_a_damaged_or_short_one():
    """The in-pipeline decode is what stands for a full read-back decode: it must catch what that would."""
    from pgkeeper.backup.roundtrip import RoundTrip

    archive = os.urandom(1 << 20) + b"pg_dump archive " * 400_000
    blob = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(archive)

    check = RoundTrip()
    for chunk in _chunks(blob):
        check.feed(chunk)
    check.finish(len(archive))
    assert check.decoded == len(archive)

    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0x40
    check = RoundTrip()
    with pytest.raises(BackupError, match="does not decode"):
        for chunk in _chunks(bytes(damaged)):
            check.feed(chunk)
        check.finish(len(archive))

    check = RoundTrip()
    with pytest.raises(BackupError, match="decodes to|does not decode"):
        for chunk in _chunks(blob[: len(blob) * 2 // 3]):
            check.feed(chunk)
        check.finish(len(archive))


def test_a_compressed_stream_that_does_not_decode_is_never_kept(seeded, plan, s3, monkeypatch):
    """A fault between compressor and upload (here: one flipped bit) fails the run; no object, no upload left."""
    from pgkeeper.backup import pipeline

    real = pipeline.zstandard.ZstdCompressor

    class Flipping:
        def __init__(self, **kw):
            self._real = real(**kw)

        def compressobj(self):
            inner = self._real.compressobj()

            class Obj:
                flipped = False

                def compress(self, data):
                    out = inner.compress(data)
                    if out and len(out) > 100 and not Obj.flipped:
                        Obj.flipped = True
                        out = out[:50] + bytes([out[50] ^ 0x10]) + out[51:]
                    return out

                def flush(self, *a):
                    out = inner.flush(*a)
                    if len(out) > 100 and not Obj.flipped:
                        Obj.flipped = True
                        out = out[:50] + bytes([out[50] ^ 0x10]) + out[51:]
                    return out

            return Obj()

    monkeypatch.setattr(pipeline.zstandard, "ZstdCompressor", Flipping)
    with pytest.raises(BackupError, match="does not decode"):
        _run()
    assert _bucket_keys(s3) == []
    assert _multipart_uploads(s3) == []


def test_list_verification_hashes_the_whole_object_though_it_decodes_only_the_head():
    """`list` mode stops decompressing once pg_restore --list has its table of contents, but a
    damaged byte anywhere in the object still fails the SHA-256."""
    import hashlib
    import io

    from pgkeeper.backup.errors import ChecksumMismatchError
    from pgkeeper.backup.restore import Sink, stream_archive

    archive = os.urandom(4 << 20) + b"table data " * 600_000
    blob = zstandard.ZstdCompressor(level=3).compress(archive)
    want = hashlib.sha256(blob).hexdigest()

    def head_reader() -> Sink:  # reads 64 KB, then exits, as pg_restore --list does after the TOC
        return Sink("head", ["head", "-c", "65536"], dict(os.environ), may_stop_early=True, capture_stdout=True)

    stats = stream_archive(io.BytesIO(blob), [head_reader()], expected_sha256=want, hold_back=False,
                           decode_all=False)
    assert stats.bytes_compressed == len(blob)
    assert stats.bytes_decompressed < len(archive)

    tail_damaged = bytearray(blob)
    tail_damaged[-100] ^= 0x01
    with pytest.raises(ChecksumMismatchError):
        stream_archive(io.BytesIO(bytes(tail_damaged)), [head_reader()], expected_sha256=want, hold_back=False,
                       decode_all=False)


def test_a_redelivered_async_event_for_a_succeeded_backup_uploads_nothing(seeded, plan, s3):
    """Lambda may deliver the 202 path's asynchronous event twice: one run, one object."""
    from pgkeeper.db import runs

    run_id = runs.new_run_id()
    request = JobEvent(job="backup", trigger="async", run_id=run_id)
    first = runner.execute(JOB, request)
    keys = _bucket_keys(s3)
    again = runner.execute(JOB, request)
    assert first["status"] == "succeeded" and again["report"]["duplicate"] is True
    assert _bucket_keys(s3) == keys and len(keys) == 2  # the dump and its manifest, once


def test_every_pgkeeper_backend_terminated_mid_backup_gives_a_failed_run_naming_pg_dumps_error(big, plan, s3, pg,
                                                                                               db_url):
    """An operator's pg_terminate_backend on everything pgkeeper holds: the run still ends `failed`
    (written on a new session), with pg_dump's own error first, and nothing is left in the bucket."""
    import threading
    import time

    killed: list[int] = []

    def terminate_all_once_pg_dump_copies() -> None:
        with psycopg.connect(db_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed:
                rows = watcher.execute(
                    "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'pgkeeper/%%' "
                    "AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgkeeper/backup/pg_dump' "
                    "AND query LIKE 'COPY%%' AND datname = current_database())").fetchall()
                killed.extend(pid for _, pid in rows)
                time.sleep(0.005)

    watcher = threading.Thread(target=terminate_all_once_pg_dump_copies)
    watcher.start()
    try:
        with pytest.raises(BackupError) as err:
            _run()
    finally:
        watcher.join()
    assert len(killed) >= 3  # the main session, the snapshot's and pg_dump's
    assert "pg_dump" in str(err.value)
    [(status, error)] = pg.execute("SELECT status, error FROM pgkeeper.runs").fetchall()
    assert status == "failed"
    assert error.startswith("BackupError: pg_dump failed"), error  # not the snapshot's AdminShutdown
    assert _bucket_keys(s3) == [] and _multipart_uploads(s3) == []


# --- restore drill ------------------------------------------------------------------------------

def test_a_restore_drill_proves_the_newest_backup_restorable_and_records_it(seeded, plan, s3, pg, admin_url):
    backup = _run()
    drill = _run({"drill": True})

    report = drill["report"]
    assert drill["status"] == "succeeded" and report["drill"] is True
    assert report["key"] == backup["report"]["key"] and report["rows"] == backup["report"]["rows"]
    assert report["tables"] == backup["report"]["tables"] and report["throughput_mb_s"] > 0
    assert report["alarm_window"] == "drill"  # the last proven restore: pgkeeper status and its alarm
    row = pg.execute("SELECT alarm_window FROM pgkeeper.runs WHERE run_id::text = %s", [drill["run_id"]]).fetchone()
    assert row == ("drill",)
    with psycopg.connect(admin_url) as c:  # the scratch database is gone
        assert c.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                         [scratch_prefix(drill["run_id"]) + "%"]).fetchone() == (0,)
    assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 2  # a drill uploads nothing


def test_a_drill_fails_naming_the_table_whose_rows_differ_from_the_manifest(seeded, plan, s3):
    backup = _run()["report"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=backup["manifest_key"])["Body"].read())
    tampered = next(t for t in manifest["tables"] if t["name"] == "users")
    tampered["rows"] += 1  # what a manifest altered after upload, or a dump missing rows, would say
    s3.put_object(Bucket=BUCKET, Key=backup["manifest_key"], Body=json.dumps(manifest).encode())

    with pytest.raises(VerificationError) as err:  # a failed run, its error naming the table
        _run({"drill": True})
    assert "restored row counts differ from the manifest: public.users: manifest" in str(err.value)


def test_a_drill_without_any_backup_says_so(seeded, plan):
    with pytest.raises(PgkeeperError, match="no complete backups under s3://pgk-backups/"):
        _run({"drill": True})


def test_a_backup_too_large_for_the_invocation_is_reported_not_half_restored(seeded, plan, s3, admin_url,
                                                                            monkeypatch):
    _run()
    import pgkeeper.backup.job as backup_job

    monkeypatch.setattr(backup_job, "DRILL_MIN_BYTES_PER_S", 1000)  # as slow as a huge database would be
    with pytest.raises(VerificationError) as err:
        _run({"drill": True}, LocalContext(60))
    assert "cannot be restored within this invocation" in str(err.value) and "nothing was proven" in str(err.value)


def test_drill_runs_alone():
    with pytest.raises(EventError, match="drill runs alone"):
        runner.validate_options(JOB, {"drill": True, "label": "x"})


# --- parallel restore -----------------------------------------------------------------------------

def test_parallel_restore_gives_the_same_rows_as_one_stream(seeded, plan, s3, make_database, capsys):
    _run()
    capsys.readouterr()  # the backup's own log lines
    serial, parallel = make_database(), make_database()
    assert cli(["restore", "--latest", "--to", serial, "--database", _dbname(seeded), "--jobs", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert cli(["restore", "--latest", "--to", parallel, "--database", _dbname(seeded), "--jobs", "3", "--json"]) == 0
    three = json.loads(capsys.readouterr().out)
    assert (one["jobs"], three["jobs"]) == (1, 3)
    assert one["rows"] == three["rows"] and one["mismatches"] == three["mismatches"] == []
    with psycopg.connect(serial) as a, psycopg.connect(parallel) as b, psycopg.connect(seeded) as src:
        for table in TABLES:
            assert _content(b, table) == _content(a, table) == _content(src, table), table
        indexes = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        assert b.execute(indexes).fetchall() == a.execute(indexes).fetchall()


def test_parallel_restore_of_a_tampered_object_restores_nothing_and_leaves_no_file(seeded, plan, s3, make_database,
                                                                                   capsys, tmp_path, monkeypatch):
    report = _run()["report"]
    _recompress(s3, report["key"])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the archive file goes (TMPDIR, read once)
    target = make_database()
    rc = cli(["restore", "--key", report["key"], "--to", target, "--bucket", BUCKET, "--database", _dbname(seeded),
              "--jobs", "2"])
    assert rc == 2 and "SHA-256 of the object is" in capsys.readouterr().err
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0
    assert list(scratch.iterdir()) == []  # the decompressed archive is gone


def test_a_drill_drops_the_scratch_databases_of_runs_that_ended_and_leaves_the_others(seeded, plan, s3, pg,
                                                                                      admin_url):
    """A run killed by the Lambda timeout never reaches its own DROP; the next drill sweeps what
    it left, but never a running run's scratch database nor one its history does not know."""
    _run()
    ended, running, unknown = (str(uuid.uuid4()) for _ in range(3))
    pg.execute("INSERT INTO pgkeeper.runs (run_id, job, trigger, status, options) VALUES "
               "(%s, 'backup', 'schedule', 'failed', '{}'), (%s, 'backup', 'schedule', 'running', '{}')",
               [ended, running])
    names = {run: scratch_prefix(run) + "abc123" for run in (ended, running, unknown)}
    with psycopg.connect(admin_url, autocommit=True) as c:
        for name in names.values():
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        assert _run({"drill": True})["status"] == "succeeded"
        with psycopg.connect(admin_url) as c:
            left = {r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                            [list(names.values())]).fetchall()}
        assert left == {names[running], names[unknown]}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            for name in names.values():
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# --- content checksums ----------------------------------------------------------------------------

def test_content_checksums_are_recorded_and_proven_by_drill_and_restore(seeded, plan, s3, make_database, capsys):
    plan(content_checksums=True)
    backup = _run()["report"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=backup["manifest_key"])["Body"].read())
    sums = {(t["schema"], t["name"]): t["checksum"] for t in manifest["tables"]}
    assert all(v.startswith("md5sum64:") for v in sums.values())
    assert sums[("public", "empty_table")] == "md5sum64:0"
    filled = [v for v in sums.values() if v != "md5sum64:0"]
    assert len(filled) >= len(TABLES) - 1 and len(set(filled)) == len(filled)

    drill = _run({"drill": True})
    assert drill["status"] == "succeeded"
    target = make_database()
    capsys.readouterr()
    assert cli(["restore", "--latest", "--to", target, "--database", _dbname(seeded), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["checksums"] is True
    assert "every row count and content checksum match" in captured.err


def test_a_drill_fails_naming_the_table_whose_contents_differ_though_its_rows_match(seeded, plan, s3, pg):
    plan(content_checksums=True)
    backup = _run()["report"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=backup["manifest_key"])["Body"].read())
    tampered = next(t for t in manifest["tables"] if t["name"] == "Session")
    tampered["checksum"] = "md5sum64:12345"  # same row count, different contents
    s3.put_object(Bucket=BUCKET, Key=backup["manifest_key"], Body=json.dumps(manifest).encode())

    with pytest.raises(VerificationError) as err:
        _run({"drill": True})
    assert 'restored contents (checksums) differ from the manifest: public."Session": manifest md5sum64:12345' \
        in str(err.value)


def test_without_content_checksums_the_manifest_has_no_checksum_keys(seeded, plan, s3):
    backup = _run()["report"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=backup["manifest_key"])["Body"].read())
    assert all(set(t) == {"schema", "name", "rows"} for t in manifest["tables"])
    assert "checksums_match" not in json.dumps(manifest)


def test_content_checksum_covers_the_whole_row_even_with_a_column_named_t(pg):
    from pgkeeper.backup.snapshot import measure_tables

    pg.execute("CREATE TABLE odd (id int, t text, other text)")
    pg.execute("INSERT INTO odd VALUES (1, 'same', 'before')")
    before = measure_tables(pg, [("public", "odd")], checksums=True)[("public", "odd")].checksum
    pg.execute("UPDATE odd SET other = 'after'")
    after = measure_tables(pg, [("public", "odd")], checksums=True)[("public", "odd")].checksum
    assert before != after


def test_a_restore_stopped_by_sigterm_exits_as_stopped_and_leaves_no_archive_behind(big, plan, s3, make_database,
                                                                                   tmp_path):
    """`timeout 600 pgkeeper restore --jobs 2`: the supervisor's SIGTERM unwinds the command, so the
    decompressed archive it was writing is removed and the target holds nothing."""
    import subprocess
    import sys
    import time

    _run()
    target = make_database()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("pgkeeper")), "restore", "--latest", "--to", target,
                             "--database", _dbname(big), "--bucket", BUCKET, "--jobs", "2"],
                            env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(scratch.glob("pgkeeper-restore-*/archive.pgdump")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    assert list(scratch.iterdir()) == []  # the temporary archive is gone
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'big'").fetchone()[0] == 0
