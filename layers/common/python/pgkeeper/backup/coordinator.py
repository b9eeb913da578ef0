"""The backup run's side of a sharded backup (sharding.py says what the parts are and why)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from ..jobs import JobContext
from ..log import logger
from ..plan.backup import BackupPlan
from ..webhooks.dispatch import get_invoker, self_function_name
from . import pgtools
from .errors import BackupError
from .manifest import ShardRef
from .pipeline import UploadResult
from .sharding import (
    IMPORT_WAIT_S,
    SHARD_SUFFIX,
    Records,
    ShardSpec,
    ThreadWorkers,
    balance,
    discard,
    dump_shard,
    table_sizes,
    tidy,
    wait_for_imports,
    worker_event,
)
from .snapshot import Selection, Snapshot, TableCount
from .store import AGE_SUFFIX, dump_stem

GB = 1e9
READ_BACK_BYTES_PER_S = 100e6
"""What the parts' read-back is planned at (four parts at a time at about 25 MB/s each)."""


def shard_groups(plan: BackupPlan, conn: psycopg.Connection, tables: list[tuple[str, str]]
                 ) -> list[list[tuple[str, str]]]:
    """The data shards' tables ([] for one stream): `backup.shards` of them, or with `auto` one per
    `shard_target_gb` of table size; never more shards than tables."""
    if plan.shards == 1 or len(tables) < 2:
        return []
    sizes = table_sizes(conn, tables)
    count = math.ceil(sum(sizes.values()) / (plan.shard_target_gb * GB)) if plan.shards == "auto" else plan.shards
    count = min(count, len(tables), 64)
    if count < 2:
        return []
    return balance({t: sizes.get(t, 0) for t in tables}, count)


def dump_sharded(ctx: JobContext, s3: Any, bucket: str, snap: Snapshot, selection: Selection,
                 groups: list[list[tuple[str, str]]], key: str, pg_dump: pgtools.Tool, recipients: list[str] | None,
                 timings: dict[str, float], reserve_s: float) -> tuple[UploadResult, list[TableCount], list[ShardRef]]:
    """Dump pre-data and post-data here and the data shards in workers, all in `snap`; commit the
    snapshot once every worker imported it and the rows are counted; wait for every part's record.
    Any failure removes every part (no upload left open) and raises."""
    plan = ctx.plan.backup
    stem = dump_stem(key) or key
    suffix = SHARD_SUFFIX + (AGE_SUFFIX if recipients else "")
    common: dict[str, Any] = dict(
        run_id=ctx.run_id, bucket=bucket, stem=stem, snapshot_id=snap.snapshot_id,
        selection_args=selection.pg_dump_args, level=plan.compression_level, threads=plan.compression_threads,
        part_size=plan.part_size_mib * 1024 * 1024, upload_concurrency=plan.upload_concurrency,
        recipients=recipients, lock_wait_timeout_ms=ctx.db.settings.lock_timeout_ms, database=ctx.member)
    rest = [t for group in groups[1:] for t in group]
    data = [ShardSpec(name=f"s{i:02d}", section="data", key=f"{stem}.s{i:02d}{suffix}", tables=group,
                      takes_rest=i == 0, exclude_data=rest if i == 0 else [], **common)
            for i, group in enumerate(groups)]
    pre = ShardSpec(name="pre", section="pre-data", key=key, **common)
    post = ShardSpec(name="post", section="post-data", key=f"{stem}.post{suffix}", **common)
    specs = [pre, *data, post]
    names = [spec.name for spec in specs]
    logger.info("sharded backup started", extra={"key": key, "shards": len(data), "workers": plan.shard_workers,
                                                 "tables": len(selection.tables)})
    # Parts dumped here end when the run must verify: the same reserve as one stream's.
    local = ThreadWorkers(lambda spec, stop: dump_shard(spec, ctx.db.conninfo, s3, pg_dump, ctx.budget.remaining,
                                                        stop, reserve_s),
                          len(specs) if plan.shard_workers == "threads" else 2)
    records = Records(s3, bucket, stem, names)
    started = time.monotonic()
    try:
        local.start(pre)
        local.start(post)
        for spec in data:
            if plan.shard_workers == "threads":
                local.start(spec)
            else:
                get_invoker().invoke_async(self_function_name(ctx.invocation), worker_event(spec, {}, s3))
        assert snap.conn is not None
        snapshot_pid = snap.conn.info.backend_pid
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgkeeper-count") as pool:
            counting = pool.submit(snap.count_rows, selection.tables, checksums=plan.content_checksums)
            try:
                with ctx.db.connect(autocommit=True, purpose="shards") as watch:
                    timings["imports_s"] = wait_for_imports(watch, snapshot_pid, ctx.run_id, records,
                                                            timeout_s=min(IMPORT_WAIT_S, ctx.budget.remaining()))
                counts = counting.result()
            except BaseException:
                # Stop a count still scanning, so the parts are removed now, not after a full scan.
                counting.cancel()
                snap.cancel_count()
                raise
        timings["count_s"] = time.monotonic() - started
        snap.release()  # every worker holds the snapshot now: no transaction of ours stays open
        logger.info("every worker imported the snapshot; its transaction is closed",
                    extra={"seconds": round(timings["imports_s"], 3)})
        # Keep the time to read every part back (in parallel, verify.py) as the parts come in.
        done = records.wait(lambda: ctx.budget.remaining() - reserve_s - records.bytes_out() / READ_BACK_BYTES_PER_S)
        read_back_s = records.bytes_out() / READ_BACK_BYTES_PER_S
        if ctx.budget.remaining() - reserve_s < read_back_s:
            raise BackupError(f"every part uploaded, but reading them back (about {read_back_s:.0f} s) no longer fits "
                              "in this invocation: nothing was kept; use more shards or a longer timeout")
    except BaseException:
        local.stop()
        discard(s3, bucket, stem)
        local.close()
        discard(s3, bucket, stem)  # a part that completed while the first pass ran
        raise
    local.close()
    timings["parts_s"] = time.monotonic() - started
    tidy(s3, bucket, stem, names)
    refs = [ShardRef(name=r.name, section=r.section, key=r.key, sha256=r.sha256, bytes_in=r.bytes_in,
                     bytes_out=r.bytes_out, tables=[f"{s}.{n}" for s, n in r.tables]) for r in done]
    first = done[0]
    total = UploadResult(key=key, bytes_in=sum(r.bytes_in for r in done), bytes_out=sum(r.bytes_out for r in done),
                         sha256=first.sha256, parts=sum(r.parts for r in done), dump_s=time.monotonic() - started,
                         part_size=plan.part_size_mib * 1024 * 1024)
    timings["max_worker_s"] = max(r.dump_s for r in done if r.section == "data")
    return total, counts, refs
