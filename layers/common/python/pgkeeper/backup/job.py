"""The backup job: a consistent, compressed, verified dump in S3, then retention.

Order matters, and each step happens only if the one before succeeded:
1. versions: pg_dump must be at least the server's major version (nothing uploaded otherwise);
2. snapshot: a REPEATABLE READ transaction exports its snapshot; exact row counts run in it
   while `pg_dump --snapshot` streams through zstd into an S3 multipart upload;
3. verification: the object is read back (SHA-256, size, table of contents; optionally a full
   restore into a scratch database with row counts compared);
4. the manifest is written: only now does the backup exist for any reader;
5. retention (grandfather-father-son) prunes older backups.
Any failure aborts the upload (or deletes the unverified object) and raises.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..db import runs
from ..db.dsn import redact, session_conninfo
from ..errors import ConfigError, PgkeeperError, first_line
from ..idents import display
from ..jobs import JobContext, JobSpec, Options, SparseReport
from ..log import logger, metrics
from ..metric_names import AlarmWindow
from ..plan import Plan
from ..plan.backup import BackupPlan
from ..plan.base import split_name
from . import manifest as mf
from . import pgtools
from .coordinator import dump_sharded, shard_groups
from .encryption import Encryptor, parse_identities, parse_recipients
from .errors import BackupError, VerificationError
from .manifest import Verification
from .pipeline import MultipartUpload, Progress, UploadResult, dump_to_s3
from .restore import dbname
from .retention import decide, lock_until
from .snapshot import Selection, Snapshot, TableCount, select_tables
from .store import BackupStore, DeferredClient, database_folder, s3_client
from .verify import verify_backup

ORPHAN_AGE = timedelta(hours=24)
"""A dump without a manifest this old is a leftover of a run that died after its upload."""


class BackupOptions(Options):
    dry_run: bool = Field(False, description="list backups and what retention would delete; upload nothing")
    label: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
                              description="added to the key, e.g. before-migration-42")
    verify: Literal["list", "restore"] | None = Field(None, description="override the plan's backup.verify")
    prune: bool = Field(True, description="apply retention after this backup verified")
    drill: bool = Field(False, description="restore drill: restore the newest backup into a scratch database, "
                                           "compare it with its manifest, drop it; back up nothing")

    @model_validator(mode="after")
    def _drill_runs_alone(self) -> BackupOptions:
        if self.drill and (self.dry_run or self.label or self.verify):
            raise ValueError("drill runs alone: it cannot be combined with dry_run, label or verify")
        return self


class DrillReport(SparseReport):
    """A restore drill: the newest backup restored into a scratch database and compared with its
    manifest (row counts per table, the SHA-256 of the stored object, the archive's contents)."""

    ORDER: ClassVar[tuple[str, ...]] = ("status", "drill", "key", "taken_at", "age_hours", "tables", "rows",
                                        "bytes_in", "restore_s", "throughput_mb_s", "server", "duration_s")

    drill: Literal[True] = True
    key: str
    taken_at: str
    age_hours: float
    tables: int
    rows: int
    bytes_in: int
    restore_s: float
    throughput_mb_s: float
    """pg_dump's bytes restored per second: the restore speed a recovery would see (RTO)."""
    server: str


class LockedBackup(BaseModel):
    key: str
    until: str


class BackupReport(SparseReport):
    """A backup that verified and whose manifest is written; `kept` only when retention ran."""

    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "kept", "locked"})
    ORDER: ClassVar[tuple[str, ...]] = (
        "status", "bucket", "key", "manifest_key", "bytes_in", "bytes_out", "ratio", "sha256", "tables", "rows",
        "pg_dump_version", "server_version", "dump_s", "throughput_mb_s", "verification", "pruned",
        "orphans_deleted", "duration_s", "kept", "locked")

    bucket: str
    key: str
    manifest_key: str
    bytes_in: int
    bytes_out: int
    ratio: float | None
    sha256: str
    tables: int
    rows: int
    pg_dump_version: str
    server_version: str
    dump_s: float
    throughput_mb_s: float | None
    verification: Verification
    pruned: list[str]
    """Keys of the backups retention deleted."""
    orphans_deleted: list[str]
    """Dumps left without a manifest (older than ORPHAN_AGE) that were swept."""
    kept: int | None = None
    locked: list[LockedBackup] | None = None
    """Backups retention would delete that S3 Object Lock still protects, and until when."""


class KeptBackup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    why: list[str]
    """The retention rules that keep it (`newest`, `daily 2026-12-01`...)."""


class BackupDryRunReport(SparseReport):
    """What a real run would use and delete; `failed` (with `errors`) when pg_dump would not do."""

    ORDER: ClassVar[tuple[str, ...]] = ("status", "dry_run", "bucket", "prefix", "pg_dump_version", "backups",
                                        "would_keep", "would_delete", "orphans", "errors")

    dry_run: Literal[True] = True
    bucket: str
    prefix: str
    pg_dump_version: str | None
    """None: no usable pg_dump was found."""
    backups: int
    would_keep: list[KeptBackup]
    would_delete: list[str]
    orphans: list[str]


def run(ctx: JobContext) -> BackupReport | BackupDryRunReport | DrillReport:
    plan = ctx.plan.backup
    opts: BackupOptions = ctx.options
    bucket = plan.resolve_bucket()
    database = dbname(ctx.db.conninfo)
    if not database:
        raise ConfigError("the database URL names no database (…/dbname): pg_dump needs one")
    s3 = DeferredClient(lambda: s3_client(concurrency=plan.upload_concurrency))
    # A fleet member's backups live under its name: two members may hold databases of the same name.
    folder = ctx.member or database
    store = BackupStore(s3, bucket, plan.prefix, folder)
    if opts.dry_run:
        return _dry_run(ctx, store)
    if opts.drill:
        return _drill(ctx, store)

    started = time.monotonic()
    timings: dict[str, float] = {}
    # `--version` probes run while the snapshot is taken (each is a process start: tens of ms).
    tools = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgkeeper-tools")
    probes = [tools.submit(pgtools.find, name) for name in ("pg_dump", "pg_restore")]
    tools.shutdown(wait=False)
    mode = opts.verify or plan.verify
    # Resolved before anything is dumped: a misconfigured restore test must not cost a whole upload.
    verify_server = _verify_server(ctx, plan.verify_server_url_env) if mode == "restore" else ""
    recipients = plan.age_recipients()
    identities = _identities(plan) if recipients and mode == "restore" else None
    reserve_s = _verify_reserve(ctx)
    taken_at = datetime.now(UTC)
    key = store.new_key(taken_at, ctx.run_id, opts.label, encrypted=bool(recipients))
    upload = MultipartUpload(s3, bucket, key, concurrency=plan.upload_concurrency,
                             metadata={"pgkeeper-run-id": ctx.run_id,
                                       "pgkeeper-database": database_folder(folder).rstrip("/")},
                             time_left=lambda: ctx.budget.remaining() - reserve_s,
                             content_type="application/age" if recipients else "application/zstd")
    timeout_s = max(60.0, ctx.budget.remaining())

    with Snapshot(ctx.db, timeout_s=timeout_s) as snap:
        pg_dump, pg_restore = (probe.result() for probe in probes)
        pgtools.check_dump_version(pg_dump, snap.server_version_num)
        pgtools.check_restore_version(pg_restore, pg_dump.major)
        assert snap.conn is not None  # set by Snapshot.__enter__
        selection = select_tables(snap.conn, plan)
        timings["snapshot_s"] = time.monotonic() - started
        groups = shard_groups(plan, snap.conn, selection.tables)
        if groups:
            result, counts, shard_refs = dump_sharded(ctx, s3, bucket, snap, selection, groups, key, pg_dump,
                                                      recipients, timings, reserve_s)
        else:
            result, counts = _dump_one_stream(ctx, store, snap, selection, key, upload, pg_dump, recipients, timings,
                                              reserve_s)
            shard_refs = None
    timings["dump_s"] = result.dump_s

    manifest = mf.build(
        result=result, bucket=bucket, database=database, server=ctx.db.where,
        server_version=pgtools.format_server_version(snap.server_version_num), pg_dump_version=pg_dump.version,
        snapshot_id=snap.snapshot_id, started_at=snap.started_at, counts=counts,
        extension_tables=selection.extension_tables,
        excluded=mf.Excluded(schemas=list(plan.exclude_schemas), tables=list(plan.exclude_tables),
                             table_data=list(plan.exclude_table_data)),
        level=plan.compression_level, threads=plan.compression_threads, run_id=ctx.run_id, label=opts.label,
        timings=timings, recipients=recipients, shards=shard_refs,
    )
    try:
        verification = verify_backup(s3, bucket, manifest, pg_restore, mode=mode,
                                     server_conninfo=verify_server, settings=ctx.db.settings, identities=identities,
                                     run_id=ctx.run_id, run_ended=lambda prefix: runs.run_ended(ctx.db.conn, prefix))
    except PgkeeperError as exc:
        _discard(store, key, "verification failed")
        if isinstance(exc, VerificationError):
            raise
        raise VerificationError(f"verification could not run: {exc}") from exc
    except psycopg.Error as exc:
        _discard(store, key, "verification failed")
        raise VerificationError(f"verification could not run: {first_line(exc)}") from exc
    assert verification.duration_s is not None  # verify_backup always times itself
    timings["verify_s"] = verification.duration_s
    # The manifest is complete only now: what verified it, every phase's time, when it finished.
    manifest = manifest.model_copy(update={
        "verification": verification, "timings": {k: round(v, 3) for k, v in timings.items()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")})
    manifest_key = store.write_manifest(key, manifest)

    pruned: list[str] = []
    kept: int | None = None
    orphans: list[str] = []
    locked: list[LockedBackup] = []
    if opts.prune and plan.retention.enabled:
        pruned, kept, orphans, locked = _prune(store, plan.retention)

    _emit(result.bytes_out, time.monotonic() - started)
    mb = result.bytes_in / 1e6
    return BackupReport(
        status="succeeded", bucket=bucket, key=key, manifest_key=manifest_key, bytes_in=result.bytes_in,
        bytes_out=result.bytes_out, ratio=manifest.ratio, sha256=result.sha256, tables=len(counts),
        rows=manifest.rows, pg_dump_version=pg_dump.version, server_version=manifest.server_version,
        dump_s=round(result.dump_s, 3),
        throughput_mb_s=round(mb / result.dump_s, 1) if result.dump_s > 0 else None,
        verification=verification, pruned=pruned, orphans_deleted=orphans,
        duration_s=round(time.monotonic() - started, 3), kept=kept, locked=locked or None)


def _dump_one_stream(ctx: JobContext, store: BackupStore, snap: Snapshot, selection: Selection, key: str,
                     upload: MultipartUpload, pg_dump: pgtools.Tool, recipients: list[str] | None,
                     timings: dict[str, float], reserve_s: float) -> tuple[UploadResult, list[TableCount]]:
    """pg_dump of the whole selection in one stream into one object, counting rows in the snapshot meanwhile."""
    plan = ctx.plan.backup
    target, env = pgtools.libpq_target(ctx.db.conninfo, "pgkeeper/backup/pg_dump")
    argv = [pg_dump.path, "--format=custom", "--compress=0", "--no-password", f"--snapshot={snap.snapshot_id}",
            f"--lock-wait-timeout={ctx.db.settings.lock_timeout_ms}", *selection.pg_dump_args,
            "--dbname", target]
    logger.info("backup started", extra={"key": key, "database": ctx.db.where, "tables": len(selection.tables),
                                         "pg_dump": pg_dump.version})
    # Counting runs in the snapshot's own session while pg_dump streams on its session.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgkeeper-count") as pool:
        counting = pool.submit(_timed, lambda: snap.count_rows(selection.tables,
                                                               checksums=plan.content_checksums))
        try:
            result = dump_to_s3(
                argv, pgtools.child_env(pg_dump, env), upload,
                level=plan.compression_level, threads=plan.compression_threads,
                part_size=plan.part_size_mib * 1024 * 1024,
                deadline=lambda p: _out_of_time(ctx, p, reserve_s),
                on_part=ctx.extra.get("on_part"),
                encryptor=Encryptor(parse_recipients(recipients)) if recipients else None,
            )
        except BaseException:
            counting.cancel()
            snap.cancel_count()
            raise
        try:
            counts, timings["count_s"] = counting.result()
        except psycopg.Error as exc:
            _discard(store, key, "counting rows failed")
            raise BackupError(f"counting rows in the snapshot failed: {exc}") from exc
    return result, counts


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


VERIFY_RESERVE_S = 30.0
"""Time kept for verification, the manifest and retention after the upload; no wait on S3 during
the upload may eat into it (a stalled endpoint fails the run with that much time left to say so)."""
DRILL_MIN_BYTES_PER_S = 5e6
"""The slowest restore a drill plans for (pg_dump bytes per second): a backup that would need more
time than the invocation has left is reported as out of reach before anything is restored."""


def _verify_reserve(ctx: JobContext) -> float:
    """Seconds kept after the upload (see VERIFY_RESERVE_S); a quarter of a short invocation at most."""
    return min(VERIFY_RESERVE_S, ctx.budget.remaining() / 4)


def _out_of_time(ctx: JobContext, progress: Progress, reserve_s: float) -> bool:
    # Reading the object back costs roughly what uploading it did: keep that much, plus a margin.
    return ctx.budget.exhausted(reserve_s + progress.bytes_out / 50e6)


def _verify_server(ctx: JobContext, env_name: str | None) -> str:
    """The restore test's server. The URL is parsed here, once: libpq's parse errors quote the
    offending token (a password with a stray `%`), and none of that may reach a report or log."""
    if not env_name:
        return ctx.db.conninfo
    url = os.environ.get(env_name, "").strip()
    if not url:
        raise ConfigError(f"backup.verify_server_url_env names {env_name}, which is not set")
    try:
        return session_conninfo(url)
    except ConfigError:
        raise ConfigError(f"{env_name}: the URL cannot be parsed (check the quoting of the password)") from None


def _discard(store: BackupStore, key: str, why: str) -> None:
    """Remove an uploaded dump that will never get a manifest (it is invisible either way)."""
    try:
        store.delete_key(key)
        store.delete_stem(key)  # a sharded backup's other parts
    except Exception as exc:  # best effort: the orphan sweep of a later run removes it
        logger.warning(f"{why}; could not delete the unverified dump", extra={"key": key, "error": str(exc)[:300]})


def _prune(store: BackupStore, policy: Any, now: datetime | None = None) -> tuple[list[str], int, list[str],
                                                                                   list[LockedBackup]]:
    """Apply retention. With S3 Object Lock on the bucket, every kept backup's lock is extended to the
    end of its GFS slot (`lock_until`), and a backup retention would delete while still locked is
    left alone and reported (`locked`), never deleted: the lock decides, not the policy."""
    now = now or datetime.now(UTC)
    backups, orphans = store.scan()
    decision = decide(backups, policy)
    mode = store.object_lock_mode()
    listing = store.last_listing  # the scan's: one LIST for every part of every backup
    if mode:
        for ref in decision.keep:
            store.lock(ref, lock_until(ref.taken_at, decision.reasons[ref.key], policy, now), mode, listing)
    pruned, locked = [], []
    for ref in decision.delete:
        until = store.locked_until(ref.key) if mode else None
        if until is not None and until > now:
            locked.append(LockedBackup(key=ref.key, until=until.isoformat()))
            continue
        store.delete(ref, listing)
        pruned.append(ref.key)
    cutoff = now - ORPHAN_AGE
    swept = []
    for orphan in orphans:
        if orphan.last_modified < cutoff:
            until = store.locked_until(orphan.key) if mode else None
            if until is not None and until > now:
                continue  # an unverified dump under lock: S3 removes it once the lock ends (lifecycle)
            store.delete_key(orphan.key)
            store.delete_stem(orphan.key, listing)  # a sharded backup's other parts
            swept.append(orphan.key)
    for key in store.strays(cutoff, listing):
        try:
            store.delete_key(key)
        except Exception as exc:  # under Object Lock until its retention ends; the next run tries again
            logger.warning("could not delete a stray object", extra={"key": key, "error": str(exc)[:200]})
            continue
        swept.append(key)
    if pruned or swept or locked:
        logger.info("retention pruned backups", extra={"pruned": pruned, "orphans": swept,
                                                       "locked": [b.key for b in locked]})
    return pruned, len(decision.keep), swept, locked


def _drill(ctx: JobContext, store: BackupStore) -> DrillReport:
    """Prove the newest backup restorable: restore it into a scratch database on the restore-test
    server (backup.verify_server_url_env, else the database's own), compare every table's rows with
    the manifest, drop the scratch database. A difference fails the run naming the tables."""
    ref = store.latest()  # only backups whose manifest was written (verified) are listed
    manifest = store.read_manifest(ref)
    server = _verify_server(ctx, ctx.plan.backup.verify_server_url_env)
    pg_restore = pgtools.find("pg_restore")
    pgtools.check_restore_version(pg_restore, manifest.dump_major())
    needed = manifest.bytes_in / DRILL_MIN_BYTES_PER_S
    if needed > ctx.budget.remaining():
        raise VerificationError(
            f"the newest backup ({manifest.bytes_in / 1e6:.0f} MB) cannot be restored within this invocation "
            f"(about {needed:.0f} s at {DRILL_MIN_BYTES_PER_S / 1e6:.0f} MB/s, {ctx.budget.remaining():.0f} s left): "
            "nothing was proven; give the function a longer timeout or drill from a machine "
            "(`pgkeeper restore --verify`)")
    logger.info("restore drill started", extra={"key": ref.key, "bytes_in": manifest.bytes_in})
    identities = _identities(ctx.plan.backup) if manifest.encryption is not None else None
    verification = verify_backup(store.s3, store.bucket, manifest, pg_restore, mode="restore",
                                 server_conninfo=server, run_id=ctx.run_id, settings=ctx.db.settings,
                                 identities=identities,
                                 run_ended=lambda prefix: runs.run_ended(ctx.db.conn, prefix))
    seconds = verification.duration_s or 0.0
    assert verification.restore is not None  # restore mode always compares the rows
    return DrillReport(
        status="succeeded", key=ref.key, taken_at=ref.taken_at.isoformat(),
        age_hours=round((datetime.now(UTC) - ref.taken_at).total_seconds() / 3600, 2),
        tables=len(manifest.tables), rows=verification.restore.rows, bytes_in=manifest.bytes_in,
        restore_s=seconds, throughput_mb_s=round(manifest.bytes_in / 1e6 / seconds, 2) if seconds else 0.0,
        server=redact(server))


def _identities(plan: BackupPlan) -> list[Any]:
    """The age identity a restore test or drill decrypts with: backup.age.identity_env names an env var
    holding it, or holding the ARN of a Secrets Manager secret that does."""
    env_name = plan.age.identity_env if plan.age is not None else None
    if not env_name:
        raise ConfigError("restoring an encrypted backup in a run (verify: restore, drill) needs its identity: set "
                          "backup.age.identity_env (the backup function can otherwise not read its backups, "
                          "by design)")
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise ConfigError(f"backup.age.identity_env names {env_name}, which is not set")
    if value.startswith("arn:aws:secretsmanager:"):
        from ..secrets import get_secret

        return parse_identities(get_secret(value), f"the secret in {env_name}")
    return parse_identities(value, f"env {env_name}")


def _dry_run(ctx: JobContext, store: BackupStore) -> BackupDryRunReport:
    """What a real run would use and delete, without uploading or deleting anything."""
    plan = ctx.plan.backup
    problems: list[str] = []
    pg_dump_version = None
    try:
        pg_dump = pgtools.find("pg_dump")
        pg_dump_version = pg_dump.version
        pgtools.check_dump_version(pg_dump, pgtools.fetch_server_version_num(ctx.db.conn))
    except ConfigError as exc:
        problems.append(str(exc))
    backups, orphans = store.scan()
    decision = decide(backups, plan.retention)
    return BackupDryRunReport(
        status="failed" if problems else "succeeded", bucket=store.bucket, prefix=store.base,
        pg_dump_version=pg_dump_version, backups=len(backups),
        would_keep=[KeptBackup(key=b.key, why=decision.reasons[b.key]) for b in decision.keep],
        would_delete=[b.key for b in decision.delete] if plan.retention.enabled else [],
        orphans=[o.key for o in orphans], errors=problems)


def _emit(bytes_out: int, seconds: float) -> None:
    metrics.add_metric(name="BackupBytes", unit=MetricUnit.Bytes, value=bytes_out)
    metrics.add_metric(name="BackupSeconds", unit=MetricUnit.Seconds, value=round(seconds, 3))


def check(plan: Plan, conn: psycopg.Connection) -> list[str]:
    """`pgkeeper plan check`: the bucket is named, excluded objects exist, pg_dump is new enough."""
    bp = plan.backup
    problems: list[str] = []
    bucket: str | None = None
    try:
        bucket = bp.resolve_bucket()
    except ConfigError as exc:
        if "backup" in plan.model_fields_set:
            problems.append(f"backup: {exc}")
    if bucket is not None:
        # The bucket the run uploads to must answer HeadBucket (exists, and these credentials reach it).
        from botocore.exceptions import BotoCoreError, ClientError

        from ..aws import client, unreachable

        s3 = client("s3", attempts=1)
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
            why = {"404": "does not exist", "NoSuchBucket": "does not exist",
                   "403": "is not accessible with these credentials (403)"}.get(code, f"answered {code}")
            problems.append(f"backup: bucket {bucket} {why}")
        except BotoCoreError as exc:
            why = unreachable(exc, "s3") or f"cannot be reached: {first_line(exc)}"
            problems.append(f"backup: bucket {bucket}: {why}")
    for schema in bp.exclude_schemas:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone() is None:
            problems.append(f"backup.exclude_schemas: schema {schema!r} does not exist")
    for field_name in ("exclude_tables", "exclude_table_data"):
        for name in getattr(bp, field_name):
            schema, table = split_name(name)
            row = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, table]).fetchone()
            if row is None:
                problems.append(f"backup.{field_name}: table {display(schema, table)} does not exist")
    try:
        tool = pgtools.find("pg_dump")
        pgtools.check_dump_version(tool, pgtools.fetch_server_version_num(conn))
    except ConfigError as exc:
        problems.append(f"backup: {exc}")
    return problems


def alarm_window(opts: BackupOptions) -> AlarmWindow | None:
    """A succeeded backup is uploaded and verified (the manifest is written last): it proves the
    backup window alive, whatever triggered it; a dry run uploads nothing; a drill proves the newest
    backup restorable (its own window)."""
    if opts.drill:
        return "drill"
    return None if opts.dry_run else "backup"


def run_worker(plan: Plan, shard: dict[str, Any], budget: Any) -> dict[str, Any]:
    """A sharded backup's data shard, in an invocation of its own (coordinator.py invokes it). Its
    outcome is its record in S3, which the backup's run waits for; never raises (a retry could not
    import the snapshot any more)."""
    from ..db import Database
    from .sharding import WORKER_RESERVE_S, dump_shard, load_spec, record_failure

    name = str(shard.get("name", "?"))
    s3: Any = None
    started = False
    try:
        s3 = s3_client(concurrency=int(shard.get("upload_concurrency") or 4))
        spec = load_spec(shard, s3)
        logger.append_keys(part=spec.name, run_id=spec.run_id)
        db = Database.from_settings(plan.database, "backup")
        pg_dump = pgtools.find("pg_dump")
        started = True  # from here dump_shard records its own failure
        record = dump_shard(spec, db.conninfo, s3, pg_dump, budget.remaining,
                            reserve_s=min(WORKER_RESERVE_S, budget.remaining() / 10))
    except Exception as exc:
        logger.exception("backup part failed")
        error = f"{type(exc).__name__}: {first_line(exc)}"
        if not started and s3 is not None:
            record_failure(s3, shard, error)
        return {"status": "failed", "part": name, "error": error}
    return {"status": "succeeded", "part": name, "bytes_in": record.bytes_in, "bytes_out": record.bytes_out,
            "seconds": record.dump_s}


JOB = JobSpec(name="backup", options=BackupOptions, run=run, long_running=True, check=check,
              alarm_window=alarm_window, worker=run_worker)
