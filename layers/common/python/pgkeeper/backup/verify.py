"""Verification of a fresh backup, before its manifest is written and before retention runs.

`list`: read the whole object back and check its SHA-256 (the same bytes the pipeline decoded in
full while uploading: roundtrip.py), and compare the archive's table of contents (`pg_restore
--list`, fed from the object's head) with the tables counted in the snapshot.
`restore`: the object is also decompressed in full and restored into a scratch database, whose
size must equal pg_dump's output and whose row counts must equal the manifest's; the scratch
database is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import psycopg
from psycopg import sql

from ..db import Database
from ..errors import PgkeeperError
from ..idents import display
from ..log import logger
from ..plan.database import DatabaseSettings
from .encryption import header_stanzas
from .errors import ChecksumMismatchError, VerificationError
from .manifest import Decoded, Manifest, RestoreCheck, ShardRef, Verification
from .pgtools import Tool, fetch_server_version_num
from .restore import (
    READ_SIZE,
    Prefetcher,
    ScriptSink,
    Sink,
    StreamStats,
    list_sink,
    restore_parts,
    restore_sink,
    stream_archive,
    table_data_entries,
)
from .snapshot import Difference, compare, measure_tables

PURPOSE = "verify"
PARALLEL_READS = 4
HEAD_BYTES = 64 * 1024
"""Enough for an age header with many recipients."""



def scratch_prefix(run_id: str) -> str:
    """How every scratch database of run `run_id` is named: a leftover names the run that made it."""
    return f"pgkeeper_verify_{run_id.replace('-', '')[:12]}_"

_SCRATCH = re.compile(r"^pgkeeper_verify_([0-9a-f]{12})_[0-9a-f]{6}$")


def sweep_leftovers(admin: psycopg.Connection, run_ended: Callable[[str], bool]) -> list[str]:
    """Drop the scratch databases of runs that have ended (a run killed by the Lambda timeout never
    reached its own DROP). `run_ended(prefix)` answers from the run history for a run-id prefix; a
    scratch database of a run it does not know (another database's) or of a running one is left."""
    dropped = []
    for (name,) in admin.execute("SELECT datname FROM pg_catalog.pg_database "
                                 "WHERE datname LIKE 'pgkeeper\\_verify\\_%'").fetchall():
        m = _SCRATCH.match(name)
        if m and run_ended(m.group(1)):
            try:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                dropped.append(name)
            except psycopg.Error as exc:
                logger.warning("could not drop a leftover scratch database", extra={"database": name,
                                                                                     "error": str(exc)[:300]})
    if dropped:
        logger.info("dropped leftover scratch databases", extra={"databases": dropped})
    return dropped


def verify_backup(
    s3: Any,
    bucket: str,
    manifest: Manifest,
    pg_restore: Tool,
    *,
    mode: Literal["list", "restore"],
    server_conninfo: str,
    run_id: str,
    settings: DatabaseSettings | None = None,
    run_ended: Callable[[str], bool] | None = None,
    identities: Sequence[Any] | None = None,
) -> Verification:
    """Raise VerificationError (ChecksumMismatchError) unless the object reads back as written.

    An encrypted backup is read through `identities`; without them (the backup function holds only
    public keys) only `list` mode can run, and it checks what can be checked sealed (`_verify_sealed`).

    `restore` mode works on `server_conninfo` with `settings` (the plan's `database`; their defaults
    if not given): the timeouts of every pgkeeper connection, `pgkeeper/backup/verify`.
    """
    started = time.monotonic()
    if manifest.encryption is not None and not identities:
        if mode == "restore":
            raise VerificationError("a restore test of an encrypted backup needs an identity: set "
                                    "backup.age.identity_env")
        return _verify_sealed(s3, bucket, manifest, started)
    if manifest.shards is not None:
        return _verify_parts(s3, bucket, manifest, pg_restore, mode=mode, server_conninfo=server_conninfo,
                             run_id=run_id, settings=settings, run_ended=run_ended, identities=identities,
                             started=started)
    body = s3.get_object(Bucket=bucket, Key=manifest.key)["Body"]
    sinks: list[Sink | ScriptSink] = [list_sink(pg_restore)]
    with contextlib.ExitStack() as stack:
        try:
            scratch_db: Database | None = None
            if mode == "restore":
                scratch_db, version_num = stack.enter_context(
                    _scratch(server_conninfo, settings, run_id, run_ended))
                sinks.append(restore_sink(pg_restore, scratch_db.conninfo, server_version_num=version_num,
                                          purpose=f"backup/{PURPOSE}"))
            stats = _read_back(body, sinks, manifest.sha256, restore=mode == "restore",
                               identities=identities if manifest.encryption is not None else None)
            if mode == "restore" and stats.bytes_decompressed != manifest.bytes_in:
                raise VerificationError(f"the object decompresses to {stats.bytes_decompressed} bytes; pg_dump "
                                        f"wrote {manifest.bytes_in}")
            _check_toc(sinks[0].stdout_lines, manifest)
            restore = _compare_restored(scratch_db, manifest) if scratch_db is not None else None
        except BaseException:
            # stream_archive kills its sinks on failure, but not when it was never reached (the scratch
            # database or the restore sink failed): pg_restore --list would wait on its stdin forever.
            for sink in sinks:
                sink.kill()
            raise
    return Verification(
        mode=mode, ok=True, sha256="match", bytes_read=stats.bytes_compressed,
        # Where the full decode happened: in the pipeline (the same bytes, by the SHA-256) or here.
        decoded=Decoded(bytes=manifest.bytes_in, where="read-back" if mode == "restore" else "upload"),
        tables=len(manifest.tables), restore=restore, duration_s=round(time.monotonic() - started, 3))


def _read_back(body: Any, sinks: Sequence[Sink | ScriptSink], sha256: str, *, restore: bool,
               identities: Sequence[Any] | None) -> StreamStats:
    try:
        return stream_archive(body, sinks, expected_sha256=sha256, hold_back=restore, decode_all=restore,
                              identities=identities)
    except ChecksumMismatchError:
        raise
    except Exception as exc:
        raise VerificationError(f"reading the backup back failed: {exc}") from exc


@contextlib.contextmanager
def _scratch(server_conninfo: str, settings: DatabaseSettings | None, run_id: str,
             run_ended: Callable[[str], bool] | None) -> Iterator[tuple[Database, int]]:
    """A scratch database on the restore-test server (leftovers of ended runs swept first), dropped after."""
    server = Database.for_url(server_conninfo, settings or DatabaseSettings(), "backup")
    admin = server.connect(autocommit=True, purpose=PURPOSE)
    scratch: str | None = None
    try:
        if run_ended is not None:
            sweep_leftovers(admin, run_ended)
        scratch = f"{scratch_prefix(run_id)}{uuid.uuid4().hex[:6]}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        yield server.on_database(scratch), fetch_server_version_num(admin)
    finally:
        if scratch is not None:
            try:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
            except psycopg.Error as exc:
                logger.warning("could not drop the scratch database", extra={"database": scratch,
                                                                              "error": str(exc)[:300]})
        admin.close()


def _compare_restored(scratch_db: Database, manifest: Manifest) -> RestoreCheck:
    with scratch_db.connect(autocommit=True, purpose=PURPOSE) as conn:
        restored = measure_tables(conn, manifest.table_names(), checksums=manifest.has_checksums())
    differences = compare(manifest.table_counts(), restored)
    if differences:
        raise VerificationError(describe_differences(differences))
    return RestoreCheck(rows_match=True, rows=sum(m.rows for m in restored.values()),
                        checksums_match=True if manifest.has_checksums() else None)


def _verify_parts(s3: Any, bucket: str, manifest: Manifest, pg_restore: Tool, *, mode: Literal["list", "restore"],
                  server_conninfo: str, run_id: str, settings: DatabaseSettings | None,
                  run_ended: Callable[[str], bool] | None, identities: Sequence[Any] | None,
                  started: float) -> Verification:
    """A sharded backup: every part read back whole against its SHA-256, the data parts' tables of
    contents together against the manifest's tables; `restore` also restores every part into a
    scratch database and compares the rows."""
    assert manifest.shards is not None
    sealed_ids = identities if manifest.encryption is not None else None

    def read_part(part: ShardRef) -> tuple[int, list[str]]:
        sink = list_sink(pg_restore)
        try:
            body = s3.get_object(Bucket=bucket, Key=part.key)["Body"]
            stats = _read_back(body, [sink], part.sha256, restore=False, identities=sealed_ids)
        except BaseException:
            sink.kill()
            raise
        return stats.bytes_compressed, sink.stdout_lines if part.section == "data" else []

    # Four parts at a time: a sharded backup is large, and the run waited for its slowest worker.
    pool = ThreadPoolExecutor(max_workers=PARALLEL_READS, thread_name_prefix="pgkeeper-verify")
    try:
        results = list(pool.map(read_part, manifest.shards))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # the parts not yet read never are: fail now
        raise
    finally:
        pool.shutdown(wait=True)
    read = sum(n for n, _ in results)
    _check_toc([line for _, lines in results for line in lines], manifest)
    restore = None
    if mode == "restore":
        with _scratch(server_conninfo, settings, run_id, run_ended) as (scratch_db, version_num):
            try:
                restore_parts(s3, bucket, manifest, scratch_db.conninfo, pg_restore, server_version_num=version_num,
                              identities=sealed_ids, jobs=2, purpose=f"backup/{PURPOSE}")
            except PgkeeperError as exc:
                raise VerificationError(f"restoring the parts failed: {exc}") from exc
            restore = _compare_restored(scratch_db, manifest)
    return Verification(mode=mode, ok=True, sha256="match", bytes_read=read,
                        decoded=Decoded(bytes=manifest.bytes_in, where="read-back" if mode == "restore" else "upload"),
                        tables=len(manifest.tables), restore=restore,
                        duration_s=round(time.monotonic() - started, 3))


def describe_differences(differences: list[Difference]) -> str:
    """`restored row counts differ from the manifest: public.users: manifest 3, restored 2; ...`, the
    first differing table first."""
    rows = [d for d in differences if d.what == "rows"]
    what = "row counts" if rows else "contents (checksums)"
    return (f"restored {what} differ from the manifest: "
            + "; ".join(f"{display(d.schema, d.name)}: manifest {d.manifest}, restored {d.restored}"
                        for d in (rows or differences)[:10]))


def _verify_sealed(s3: Any, bucket: str, manifest: Manifest, started: float) -> Verification:
    """An encrypted backup checked without its key: every stored byte of every part read back against
    its SHA-256, and each starts with an age header sealed to exactly the manifest's recipients."""
    assert manifest.encryption is not None
    want = len(manifest.encryption.recipients)
    parts = [(p.key, p.sha256) for p in manifest.shards] if manifest.shards else [(manifest.key, manifest.sha256)]
    read = 0
    for key, sha256 in parts:
        reader = Prefetcher(s3.get_object(Bucket=bucket, Key=key)["Body"])
        head = bytearray()
        try:
            while chunk := reader.read(READ_SIZE):
                if len(head) < HEAD_BYTES:
                    head += chunk[:HEAD_BYTES - len(head)]
        except Exception as exc:
            raise VerificationError(f"reading the backup back failed: {exc}") from exc
        finally:
            reader.close()
        digest = reader.sha.hexdigest()
        if digest != sha256:
            raise ChecksumMismatchError(f"SHA-256 of the object is {digest}, the pipeline computed {sha256}")
        stanzas = header_stanzas(bytes(head))
        if stanzas is None:
            raise VerificationError("the object does not start with an age header")
        if stanzas != want:
            raise VerificationError(f"the object's age header has {stanzas} recipient stanza(s), the plan names {want}")
        read += reader.bytes
    return Verification(mode="list", ok=True, sha256="match", bytes_read=read,
                        decoded=Decoded(bytes=manifest.bytes_in, where="upload"), sealed=True,
                        duration_s=round(time.monotonic() - started, 3))


def _check_toc(lines: list[str], manifest: Manifest) -> None:
    entries = table_data_entries(lines)
    if not lines:
        raise VerificationError("pg_restore --list printed nothing: the archive has no table of contents")
    missing = []
    remaining = list(entries)
    for schema, name in manifest.table_names():
        head = f"{schema} {name} "
        hit = next((e for e in remaining if e.startswith(head)), None)
        if hit is None:
            missing.append(display(schema, name))
        else:
            remaining.remove(hit)
    allowed = {f"{t.schema_name} {t.name} " for t in manifest.extension_tables}
    extra = [e for e in remaining if not any(e.startswith(a) for a in allowed)]
    if missing:
        raise VerificationError(f"the archive lacks data for {len(missing)} counted table(s): "
                                + ", ".join(missing[:10]))
    if extra:
        raise VerificationError(f"the archive has data for {len(extra)} table(s) the manifest does not count: "
                                + ", ".join(e.rsplit(" ", 1)[0] for e in extra[:10]))
