"""One snapshot, many workers: a backup dumped by several pg_dump streams in the same snapshot.

The coordinator (the backup run) exports its snapshot as for one stream, measures the tables,
and splits their data into shards balanced by size (longest first, each to the lightest shard).
Parts, each its own custom-format archive, zstd stream and multipart upload under the backup's stem:

    <stem>.pgdump.zst[.age]          pre-data: every definition (the key listing and pairing use)
    <stem>.sNN.pgshard.zst[.age]     data of shard NN (shard 00 also: sequences, large objects, and
                                     every table no other shard holds)
    <stem>.post.pgshard.zst[.age]    post-data: indexes, constraints, triggers, view refreshes
    <stem>.<part>.part.json          each part's record (SHA-256, sizes), written when it uploaded
    <stem>.manifest.json             written last, listing every part: only then does the backup exist

Data shards run in workers: asynchronous invocations of this function (`shard_workers:
invocations`, each with its own timeout: what takes a database past one invocation's 15 minutes)
or threads of this one (`threads`). Every worker's pg_dump imports the exported snapshot; the
coordinator commits its transaction as soon as all have (seen in pg_stat_activity: their backend
holds the snapshot's xmin), so no transaction stays open longer than the last import. Counts are
taken in the snapshot before that. A worker that fails writes a `failed` record; one that dies
writes nothing and the coordinator gives up at its own deadline: either way it aborts every
multipart upload and deletes every part of the backup, so nothing of it remains visible.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import psycopg
from pydantic import BaseModel

from ..log import logger
from .encryption import Encryptor, parse_recipients
from .errors import BackupError
from .pgtools import Tool, child_env, libpq_target
from .pipeline import MultipartUpload, UploadResult, dump_to_s3
from .snapshot import dump_pattern

SHARD_SUFFIX = ".pgshard.zst"
RECORD_SUFFIX = ".part.json"
RECORDS_POLL_S = 0.2
"""How often the run lists the parts' markers and records (one LIST each time)."""
IMPORT_WAIT_S = 120.0
"""How long the coordinator waits for every worker's pg_dump to import the snapshot (cold starts)."""
CANCEL_CHECK_S = 5.0
"""How often a worker looks for its run's `cancelled` marker."""
WORKER_RESERVE_S = 5.0
"""A worker invocation stops dumping this long before it ends (a tenth of a short one), to abort its
upload and write its failed record."""

Section = Literal["pre-data", "data", "post-data"]


class ShardSpec(BaseModel):
    """What one worker dumps: carried in the worker's event (`{"job": "backup", "shard": ...}`)."""

    run_id: str
    name: str
    """`pre`, `sNN`, `post`: names the part's key and record."""
    section: Section
    key: str
    bucket: str
    stem: str
    snapshot_id: str
    tables: list[tuple[str, str]] = []
    """A data shard's tables (its `--table` list; shard 00's are reported, it dumps all but `exclude_data`)."""
    takes_rest: bool = False
    """Shard 00: the data of everything no other shard holds (sequences, large objects, its tables)."""
    exclude_data: list[tuple[str, str]] = []
    """Shard 00: the other shards' tables, whose data it leaves out."""
    selection_args: list[str] = []
    level: int
    threads: int
    part_size: int
    upload_concurrency: int
    recipients: list[str] | None = None
    lock_wait_timeout_ms: int
    database: str | None = None
    """The fleet member the backup is of (the worker's plan resolves the same database)."""


class PartRecord(BaseModel):
    name: str
    section: Section
    key: str
    sha256: str
    bytes_in: int
    bytes_out: int
    parts: int
    dump_s: float
    tables: list[tuple[str, str]]


class FailedRecord(BaseModel):
    name: str
    error: str


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def application_name(run_id: str, name: str) -> str:
    """What a worker's pg_dump calls itself: how the coordinator sees it import the snapshot."""
    return f"pgkeeper/backup/shard/{run_id.replace('-', '')[:12]}/{name}"


def record_key(stem: str, name: str) -> str:
    return f"{stem}.{name}{RECORD_SUFFIX}"


def cancelled_key(stem: str) -> str:
    """Written first when the run gives up: workers still dumping (other invocations) stop at it."""
    return f"{stem}.cancelled"


def started_key(stem: str, name: str) -> str:
    """Written when the part's pg_dump sent its first bytes: it imported the snapshot before that."""
    return f"{stem}.{name}.started"


def failed_key(stem: str, name: str) -> str:
    return f"{stem}.{name}.failed.json"


def balance(sizes: dict[tuple[str, str], int], shards: int) -> list[list[tuple[str, str]]]:
    """Tables into `shards` groups of near-equal total size: largest first, each to the lightest group."""
    groups: list[list[tuple[str, str]]] = [[] for _ in range(shards)]
    totals = [0] * shards
    for table, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        lightest = min(range(shards), key=lambda i: (totals[i], i))
        groups[lightest].append(table)
        totals[lightest] += size
    return groups


def table_sizes(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Each table's size on disk (heap and TOAST: what pg_dump reads), in the snapshot's session."""
    if not tables:
        return {}
    rows = conn.execute(
        "SELECT t.s, t.n, pg_catalog.pg_table_size(c.oid) "
        "FROM ROWS FROM (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[])) AS t(s, n) "
        "JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.s "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n",
        [[s for s, _ in tables], [n for _, n in tables]]).fetchall()
    return {(s, n): int(size or 0) for s, n, size in rows}


def pg_dump_argv(pg_dump: Tool, spec: ShardSpec, target: str) -> list[str]:
    argv = [pg_dump.path, "--format=custom", "--compress=0", "--no-password", f"--snapshot={spec.snapshot_id}",
            f"--lock-wait-timeout={spec.lock_wait_timeout_ms}", f"--section={spec.section}", *spec.selection_args]
    if spec.section == "data" and not spec.takes_rest:
        argv += [f"--table={dump_pattern(s, n)}" for s, n in spec.tables]
    if spec.section == "data" and spec.takes_rest:
        argv += [f"--exclude-table-data={dump_pattern(s, n)}" for s, n in spec.exclude_data]
    return [*argv, "--dbname", target]


def dump_shard(spec: ShardSpec, conninfo: str, s3: Any, pg_dump: Tool, time_left: Callable[[], float],
               stop: threading.Event | None = None, reserve_s: float = WORKER_RESERVE_S) -> PartRecord:
    """Dump one part into its own multipart upload and write its record; on failure, a failed record
    (the coordinator stops waiting) and the error raised. Never writes the backup's manifest.
    `stop`: the coordinator gave up (its thread workers stop at the next chunk, writing nothing).
    `reserve_s`: how long before `time_left()` runs out the dump gives up (to abort and say so)."""
    started = time.monotonic()
    first = [True]
    checked = [time.monotonic()]

    def deadline(_progress: Any) -> bool:
        if first[0]:  # pg_dump's first bytes: the coordinator may end its transaction as far as we go
            first[0] = False
            s3.put_object(Bucket=spec.bucket, Key=started_key(spec.stem, spec.name), Body=b"")
        if stop is not None and stop.is_set():
            return True
        if time.monotonic() - checked[0] > CANCEL_CHECK_S:  # the run gave up (another invocation's)
            checked[0] = time.monotonic()
            if _exists(s3, spec.bucket, cancelled_key(spec.stem)):
                raise BackupError(f"part {spec.name}: the backup's run gave up; stopping")
        return time_left() < reserve_s

    try:
        target, env = libpq_target(conninfo, application_name(spec.run_id, spec.name))
        upload = MultipartUpload(s3, spec.bucket, spec.key, concurrency=spec.upload_concurrency,
                                 metadata={"pgkeeper-run-id": spec.run_id, "pgkeeper-part": spec.name},
                                 time_left=lambda: time_left() - reserve_s,
                                 content_type="application/age" if spec.recipients else "application/zstd")
        result: UploadResult = dump_to_s3(
            pg_dump_argv(pg_dump, spec, target), child_env(pg_dump, env), upload, level=spec.level,
            threads=spec.threads, part_size=spec.part_size, deadline=deadline,
            encryptor=Encryptor(parse_recipients(spec.recipients)) if spec.recipients else None)
        record = PartRecord(name=spec.name, section=spec.section, key=spec.key, sha256=result.sha256,
                            bytes_in=result.bytes_in, bytes_out=result.bytes_out, parts=result.parts,
                            dump_s=round(time.monotonic() - started, 3), tables=spec.tables)
        s3.put_object(Bucket=spec.bucket, Key=record_key(spec.stem, spec.name), ContentType="application/json",
                      Body=record.model_dump_json().encode())
    except BaseException as exc:
        error = f"part {spec.name}: {exc}"
        if stop is not None and stop.is_set():
            raise  # the coordinator is removing every part: nothing more to write
        _write_failed(s3, spec.bucket, spec.stem, spec.name, error)
        raise
    logger.info("backup part uploaded", extra={"part": spec.name, "bytes_in": result.bytes_in,
                                               "seconds": record.dump_s})
    return record


def wait_for_imports(conn: psycopg.Connection, snapshot_pid: int, run_id: str, records: Records, *,
                     timeout_s: float) -> float:
    """Block until every part's pg_dump holds the snapshot (its backend's xmin is that of the
    snapshot's session `snapshot_pid`) or is past it (`records`: it started streaming or is done),
    watching from `conn`; seconds waited. A part that failed ends the wait with its error."""
    started = time.monotonic()
    wanted = {application_name(run_id, n) for n in records.names}
    mine = conn.execute("SELECT backend_xmin FROM pg_catalog.pg_stat_activity WHERE pid = %s",
                        [snapshot_pid]).fetchone()
    if mine is None or mine[0] is None:
        raise BackupError("the snapshot's session holds no snapshot: it ended before the workers could import it")
    holding: set[str] = set()  # seen holding it once is enough: a short part's session may be gone by now
    listed_at = 0.0
    while True:
        rows = conn.execute("SELECT application_name FROM pg_catalog.pg_stat_activity "
                            "WHERE application_name = ANY(%s) AND backend_xmin = %s",
                            [sorted(wanted), mine[0]]).fetchall()
        holding |= {r[0] for r in rows}
        if holding >= wanted:
            return time.monotonic() - started
        if time.monotonic() - listed_at >= RECORDS_POLL_S:  # S3 less often than the database: LISTs cost
            listed_at = time.monotonic()
            records.poll()
            holding |= {application_name(run_id, n) for n in records.past_import()}
            if holding >= wanted:
                return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            missing = sorted(wanted - holding)
            raise BackupError(f"{len(missing)} worker(s) did not import the snapshot within {timeout_s:.0f} s "
                              f"({', '.join(m.rsplit('/', 1)[1] for m in missing[:5])}): nothing was kept")
        time.sleep(0.02)


class Records:
    """The parts' markers and records in S3: one LIST per `poll()`, each record read once; raises the
    first failed part's error as soon as a poll sees it."""

    def __init__(self, s3: Any, bucket: str, stem: str, names: list[str]) -> None:
        self.s3, self.bucket, self.stem, self.names = s3, bucket, stem, names
        self.done: dict[str, PartRecord] = {}
        self._keys: set[str] = set()

    def bytes_out(self) -> int:
        """What the parts recorded so far hold in S3 (to plan their read-back)."""
        return sum(r.bytes_out for r in self.done.values())

    def poll(self) -> None:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.stem + ".")
        self._keys = {o["Key"] for o in listed.get("Contents", [])}
        for name in self.names:
            if name not in self.done and record_key(self.stem, name) in self._keys:
                body = self.s3.get_object(Bucket=self.bucket, Key=record_key(self.stem, name))["Body"].read()
                self.done[name] = PartRecord.model_validate_json(body)
        failed = next((n for n in self.names if failed_key(self.stem, n) in self._keys), None)
        if failed is not None:
            body = self.s3.get_object(Bucket=self.bucket, Key=failed_key(self.stem, failed))["Body"].read()
            raise BackupError(FailedRecord.model_validate_json(body).error)

    def past_import(self) -> set[str]:
        """Parts that started streaming (their marker) or are done (their record), as of the last poll."""
        return {n for n in self.names if n in self.done or started_key(self.stem, n) in self._keys}

    def wait(self, time_left: Callable[[], float]) -> list[PartRecord]:
        while True:
            self.poll()
            if len(self.done) == len(self.names):
                return [self.done[n] for n in self.names]
            if time_left() <= 0:
                missing = [n for n in self.names if n not in self.done]
                raise BackupError(f"part(s) {', '.join(missing[:5])} did not finish before this run's deadline "
                                  "(a worker that timed out or crashed): nothing was kept")
            time.sleep(RECORDS_POLL_S)


def tidy(s3: Any, bucket: str, stem: str, names: list[str]) -> None:
    """Remove the parts' markers and records once collected: the manifest says the same, and a backup
    is its parts and its manifest only."""
    for name in names:
        for key in (started_key(stem, name), record_key(stem, name)):
            try:
                s3.delete_object(Bucket=bucket, Key=key)
            except Exception as exc:  # deleted with the backup by retention, whatever is left
                logger.warning("could not remove a part's record", extra={"key": key, "error": str(exc)[:200]})


def discard(s3: Any, bucket: str, stem: str) -> None:
    """Tell workers to stop (the `cancelled` marker, swept a day later with the other strays), then
    abort every multipart upload and delete every other object of the backup `stem` (best effort)."""
    try:
        s3.put_object(Bucket=bucket, Key=cancelled_key(stem), Body=b"")
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=stem + ".").get("Uploads", [])
        for upload in uploads:
            try:
                s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except Exception as exc:
                logger.warning("could not abort a part's upload", extra={"key": upload["Key"], "error": str(exc)[:200]})
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=stem + ".").get("Contents", []):
            if obj["Key"] != cancelled_key(stem):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
    except Exception as exc:
        logger.warning("could not remove the parts of a failed backup (the lifecycle rule will)",
                       extra={"stem": stem, "error": str(exc)[:300]})


class ThreadWorkers:
    """Workers as threads of this invocation (pre-data and post-data always; data with `threads`)."""

    def __init__(self, run: Callable[[ShardSpec, threading.Event], PartRecord], count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, count), thread_name_prefix="pgkeeper-shard")
        self._run = run
        self._stop = threading.Event()

    def start(self, spec: ShardSpec) -> None:
        self._pool.submit(self._quiet, spec)

    def _quiet(self, spec: ShardSpec) -> None:
        try:
            self._run(spec, self._stop)
        except BaseException as exc:  # recorded as the part's failed record; the coordinator reports it
            logger.warning("backup part failed", extra={"part": spec.name, "error": str(exc)[:300]})

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


SPEC_INLINE_MAX = 100_000
"""A worker's spec larger than this (thousands of tables) goes through S3: an asynchronous invoke's
payload is limited to 256 KB."""


def worker_event(spec: ShardSpec, options: dict[str, Any], s3: Any) -> dict[str, Any]:
    text = spec.model_dump_json()
    shard: dict[str, Any] = json.loads(text)
    if len(text) > SPEC_INLINE_MAX:
        key = f"{spec.stem}.{spec.name}.spec.json"
        s3.put_object(Bucket=spec.bucket, Key=key, ContentType="application/json", Body=text.encode())
        shard = {"spec_key": key, "bucket": spec.bucket, "stem": spec.stem, "name": spec.name}
    event: dict[str, Any] = {"job": "backup", "options": options, "trigger": "async", "shard": shard}
    if spec.database:
        event["database"] = spec.database
    return event


def load_spec(shard: dict[str, Any], s3: Any) -> ShardSpec:
    """The worker's spec from its event, inline or (a large one) from S3."""
    if "spec_key" in shard:
        body = s3.get_object(Bucket=shard["bucket"], Key=shard["spec_key"])["Body"].read()
        return ShardSpec.model_validate_json(body)
    return ShardSpec.model_validate(shard)


def record_failure(s3: Any, shard: dict[str, Any], error: str) -> None:
    """A failed record for a worker that failed before dumping (its spec or database unusable), so
    the run stops waiting for it now rather than at its import timeout."""
    bucket, stem, name = shard.get("bucket"), shard.get("stem"), shard.get("name")
    if isinstance(bucket, str) and isinstance(stem, str) and isinstance(name, str):
        _write_failed(s3, bucket, stem, name, f"part {name}: {error}")


def _write_failed(s3: Any, bucket: str, stem: str, name: str, error: str) -> None:
    """The part's failed record: the run reads it and stops waiting (best effort: else it waits until
    its own deadline)."""
    try:
        s3.put_object(Bucket=bucket, Key=failed_key(stem, name), ContentType="application/json",
                      Body=FailedRecord(name=name, error=error[:4000]).model_dump_json().encode())
    except Exception as exc:
        logger.warning("could not record the failed part", extra={"part": name, "error": str(exc)[:300]})
