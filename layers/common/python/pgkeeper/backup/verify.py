"""Verification of a fresh backup, before its manifest is written and before retention runs.

`list`: read the whole object back and check its SHA-256 (the same bytes the pipeline decoded in
full while uploading: roundtrip.py), and compare the archive's table of contents (`pg_restore
--list`, fed from the object's head) with the tables counted in the snapshot.
`restore`: the object is also decompressed in full and restored into a scratch database, whose
size must equal pg_dump's output and whose row counts must equal the manifest's; the scratch
database is dropped afterwards.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import psycopg
from psycopg import sql

from ..db import Database
from ..idents import display
from ..log import logger
from ..plan.database import DatabaseSettings
from .encryption import header_stanzas
from .errors import ChecksumMismatchError, VerificationError
from .manifest import Decoded, Manifest, RestoreCheck, Verification
from .pgtools import Tool, fetch_server_version_num
from .restore import (
    READ_SIZE,
    Prefetcher,
    ScriptSink,
    Sink,
    list_sink,
    restore_sink,
    stream_archive,
    table_data_entries,
)
from .snapshot import Difference, compare, measure_tables

PURPOSE = "verify"
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
    body = s3.get_object(Bucket=bucket, Key=manifest.key)["Body"]
    if manifest.encryption is not None and not identities:
        if mode == "restore":
            raise VerificationError("a restore test of an encrypted backup needs an identity: set "
                                    "backup.age.identity_env")
        return _verify_sealed(body, manifest, started)
    sinks: list[Sink | ScriptSink] = [list_sink(pg_restore)]
    scratch: str | None = None
    scratch_db: Database | None = None
    admin: psycopg.Connection | None = None
    try:
        if mode == "restore":
            server = Database.for_url(server_conninfo, settings or DatabaseSettings(), "backup")
            admin = server.connect(autocommit=True, purpose=PURPOSE)
            if run_ended is not None:
                sweep_leftovers(admin, run_ended)
            scratch = f"{scratch_prefix(run_id)}{uuid.uuid4().hex[:6]}"
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
            scratch_db = server.on_database(scratch)
            version_num = fetch_server_version_num(admin)
            sinks.append(restore_sink(pg_restore, scratch_db.conninfo, server_version_num=version_num,
                                      purpose=f"backup/{PURPOSE}"))
        try:
            stats = stream_archive(body, sinks, expected_sha256=manifest.sha256, hold_back=mode == "restore",
                                   decode_all=mode == "restore",
                                   identities=identities if manifest.encryption is not None else None)
        except ChecksumMismatchError:
            raise
        except Exception as exc:
            raise VerificationError(f"reading the backup back failed: {exc}") from exc
        if mode == "restore" and stats.bytes_decompressed != manifest.bytes_in:
            raise VerificationError(f"the object decompresses to {stats.bytes_decompressed} bytes; pg_dump wrote "
                                    f"{manifest.bytes_in}")
        _check_toc(sinks[0].stdout_lines, manifest)
        restore: RestoreCheck | None = None
        if scratch_db is not None:
            with scratch_db.connect(autocommit=True, purpose=PURPOSE) as conn:
                restored = measure_tables(conn, manifest.table_names(), checksums=manifest.has_checksums())
            differences = compare(manifest.table_counts(), restored)
            if differences:
                raise VerificationError(describe_differences(differences))
            restore = RestoreCheck(rows_match=True, rows=sum(m.rows for m in restored.values()),
                                   checksums_match=True if manifest.has_checksums() else None)
        return Verification(
            mode=mode, ok=True, sha256="match", bytes_read=stats.bytes_compressed,
            # Where the full decode happened: in the pipeline (the same bytes, by the SHA-256) or here.
            decoded=Decoded(bytes=manifest.bytes_in, where="read-back" if mode == "restore" else "upload"),
            tables=len(manifest.tables), restore=restore, duration_s=round(time.monotonic() - started, 3))
    except BaseException:
        # stream_archive kills its sinks on failure, but not when it was never reached (the scratch
        # database or the restore sink failed): pg_restore --list would wait on its stdin forever.
        for sink in sinks:
            sink.kill()
        raise
    finally:
        if admin is not None:
            if scratch is not None:
                try:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
                except psycopg.Error as exc:
                    logger.warning("could not drop the scratch database", extra={"database": scratch,
                                                                                  "error": str(exc)[:300]})
            admin.close()


def describe_differences(differences: list[Difference]) -> str:
    """`restored row counts differ from the manifest: public.users: manifest 3, restored 2; ...`, the
    first differing table first."""
    rows = [d for d in differences if d.what == "rows"]
    what = "row counts" if rows else "contents (checksums)"
    return (f"restored {what} differ from the manifest: "
            + "; ".join(f"{display(d.schema, d.name)}: manifest {d.manifest}, restored {d.restored}"
                        for d in (rows or differences)[:10]))


def _verify_sealed(body: Any, manifest: Manifest, started: float) -> Verification:
    """An encrypted backup checked without its key: every stored byte read back against the SHA-256,
    and the head is an age header sealed to exactly the manifest's recipients."""
    assert manifest.encryption is not None
    reader = Prefetcher(body)
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
    if digest != manifest.sha256:
        raise ChecksumMismatchError(f"SHA-256 of the object is {digest}, the pipeline computed {manifest.sha256}")
    stanzas = header_stanzas(bytes(head))
    want = len(manifest.encryption.recipients)
    if stanzas != want:
        raise VerificationError(f"the object's age header has {stanzas} recipient stanza(s), the plan names {want}"
                                if stanzas is not None else "the object does not start with an age header")
    return Verification(mode="list", ok=True, sha256="match", bytes_read=reader.bytes,
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
