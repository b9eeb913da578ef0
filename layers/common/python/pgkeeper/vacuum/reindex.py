"""Optional rebuild of invalid indexes (a failed CREATE INDEX CONCURRENTLY leaves one behind).

`REINDEX INDEX CONCURRENTLY` never blocks writes. When it fails (the duplicate rows that broke the
original build are still there, the deadline, a lock) it leaves a new invalid `<name>_ccnew` index of
its own; we drop exactly the indexes that appeared during our attempt, so a failed rebuild leaves the
database as it found it. Indexes named `*_ccnew` / `*_ccold` are leftovers of someone else's
interrupted REINDEX CONCURRENTLY: the documented fix is DROP INDEX, which we report, not do.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from ..budget import Budget
from ..catalog_rules import reindex_leftover
from ..db import Database, bound
from ..idents import display
from ..log import logger
from ..plan.vacuum import VacuumPlan

INVALID_SQL = """
SELECT n.nspname, ct.relname AS table_name, ci.relname AS index_name, i.indexrelid, i.indrelid,
       EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p WHERE p.relid = i.indrelid) AS being_built
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
  JOIN pg_catalog.pg_class ct ON ct.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = ci.relnamespace
 WHERE NOT i.indisvalid
   AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
   AND n.nspname !~ '^pg_(toast|temp_)'
   AND (pg_catalog.cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY (%(schemas)s::text[]))
   AND n.nspname <> ALL (%(exclude_schemas)s::text[])
 ORDER BY n.nspname, ct.relname, ci.relname
"""

_INVALID_ON_TABLE = "SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = %s AND NOT indisvalid"


def invalid_indexes(conn: psycopg.Connection, plan: VacuumPlan) -> list[dict[str, Any]]:
    rows = conn.execute(
        INVALID_SQL, {"schemas": list(plan.schemas), "exclude_schemas": list(plan.exclude_schemas)}
    ).fetchall()
    keys = ("schema", "table", "index", "indexrelid", "indrelid", "being_built")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def rebuild_invalid(db: Database, main: psycopg.Connection, budget: Budget, plan: VacuumPlan,
                    *, dry_run: bool) -> list[dict[str, Any]]:
    """Rebuild every invalid index in scope, in time; one report item per index."""
    found = invalid_indexes(main, plan)
    if not found:
        return []
    items: list[dict[str, Any]] = []
    work = None if dry_run else db.connect(autocommit=True, purpose="reindex")
    try:
        for idx in found:
            name = display(idx["schema"], idx["index"])
            item: dict[str, Any] = {"index": name, "table": display(idx["schema"], idx["table"])}
            items.append(item)
            if idx["being_built"]:
                item.update(outcome="skipped", why="an index build is in progress on this table")
            elif reindex_leftover(idx["index"]):
                item.update(outcome="skipped", why="left by an interrupted REINDEX CONCURRENTLY: drop it "
                                                   "with DROP INDEX CONCURRENTLY")
            elif dry_run:
                item.update(outcome="planned")
            elif budget.exhausted(plan.min_seconds_per_table):
                item.update(outcome="left", why="deadline: no time left for this rebuild")
            else:
                assert work is not None  # opened unless dry_run
                _rebuild(work, budget, idx, item)
    finally:
        if work is not None:
            work.close()
    return items


def _rebuild(work: psycopg.Connection, budget: Budget, idx: dict[str, Any], item: dict[str, Any]) -> None:
    before = {r[0] for r in work.execute(_INVALID_ON_TABLE, [idx["indrelid"]]).fetchall()}
    bound(work, budget, local=False)
    started = time.monotonic()
    try:
        work.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(idx["schema"], idx["index"])))
    except (psycopg.IntegrityError, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable,
            psycopg.errors.DeadlockDetected) as exc:
        item.update(outcome="failed", duration_s=round(time.monotonic() - started, 3),
                    why=f"{exc.sqlstate}: {exc.diag.message_primary}" + (
                        f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""))
        item["dropped_leftovers"] = _drop_new_invalid(work, budget, idx["indrelid"], before)
        logger.warning(f"rebuild of {item['index']} failed", extra={"why": item["why"]})
        return
    item.update(outcome="rebuilt", duration_s=round(time.monotonic() - started, 3))
    logger.info(f"rebuilt invalid index {item['index']} in {item['duration_s']}s")


def _drop_new_invalid(work: psycopg.Connection, budget: Budget, indrelid: int, before: set[int]) -> list[str]:
    """Drop the transient `_ccnew` index(es) our failed attempt created, and nothing else."""
    rows = work.execute(
        "SELECT i.indexrelid, n.nspname, c.relname FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.indrelid = %s AND NOT i.indisvalid",
        [indrelid],
    ).fetchall()
    dropped = []
    # Cleaning up after ourselves matters more than the reserve: allow at least a few seconds.
    bound(work, budget, floor_ms=5000, local=False)
    for oid, schema, name in rows:
        if oid in before:
            continue
        work.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
        dropped.append(display(schema, name))
    return dropped
