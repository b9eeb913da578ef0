"""One table walked batch by batch: each batch one short autocommit DELETE (or count, for a dry run).

- The full condition is in every DELETE, so under READ COMMITTED a row changed by the app while we
  wait for it is re-checked (EvalPlanQual) against its new version: an expiry extended concurrently
  makes the row stop matching, and it is not deleted.
- A row the app holds makes the plain DELETE wait at most `lock_timeout`; the same range is then
  retried as `ctid = ANY(ARRAY(SELECT ctid ... FOR UPDATE SKIP LOCKED))`, which deletes everything
  else and skips locked rows. Locking before deleting writes every row twice, so this variant is
  only the retry, never the default.
- `statement_timeout` is the hard cap of a transaction: a batch that would run longer (the table
  got denser, the machine slower) is cancelled, which costs nothing but the time, and retried smaller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
from psycopg import sql

from ..budget import Budget
from ..log import logger
from .predicate import Predicate
from .resolve import Heap
from .sizing import Sizer
from .walkers import Range

MAX_LOCK_FAILURES = 12
"""Consecutive lock timeouts after which the table is left for the next run, whatever holds the locks."""
MAX_CANCELS = 12


class Walk(Protocol):
    unit: str
    initial: int
    maximum: int

    def next_range(self, conn: psycopg.Connection, size: int) -> Range | None: ...
    def advance(self, rng: Range) -> None: ...
    def unprocessed(self) -> tuple[sql.Composable, tuple[Any, ...]]: ...
    def progress(self) -> dict[str, int]: ...


WalkStop = Literal["done", "counted", "budget", "blocked", "limit"]
"""Why a walk stopped: every range walked, every row counted at the start gone, the deadline near,
the table locked by another session, or more rows gone than the safety rail allows."""


class BatchError(Exception):
    """A batch cannot be made to fit the transaction cap."""


@dataclass
class Totals:
    rows: int = 0
    transactions: int = 0
    aborted: int = 0
    longest_ms: float = 0.0
    skipped_locked: int = 0
    lock_retries: int = 0
    cancelled: int = 0

    def txn(self, ms: float, *, ok: bool) -> None:
        self.transactions += ok
        self.aborted += not ok
        self.longest_ms = max(self.longest_ms, ms)


@dataclass
class Settings:
    target_ms: int
    cap_ms: int
    budget: Budget
    dry_run: bool = False
    limit_rows: int | None = None
    """Stop once more rows than this are gone (the safety rail's second line)."""
    expected_rows: int | None = None
    """Every matching row of the heap, counted at the start: the walk may stop once they are all gone."""

    @property
    def need_s(self) -> float:
        """Time a batch needs left in the budget before it may start: it may run up to the cap."""
        return self.cap_ms / 1000 + 0.1


def delete_statement(heap: Heap, rng: Range, pred: Predicate, *, skip_locked: bool) -> tuple[sql.Composed, tuple]:
    if not skip_locked:
        query = sql.SQL("DELETE FROM ONLY {rel} WHERE {range} AND {cond}").format(
            rel=heap.ident, range=rng.where, cond=pred.sql)
        return query, (*rng.params, *pred.params)
    query = sql.SQL(
        "DELETE FROM ONLY {rel} WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM ONLY {rel} WHERE {range} AND {cond} FOR UPDATE SKIP LOCKED)) AND {cond}"
    ).format(rel=heap.ident, range=rng.where, cond=pred.sql)
    return query, (*rng.params, *pred.params, *pred.params)


def count_statement(heap: Heap, rng: Range | None, pred: Predicate) -> tuple[sql.Composed, tuple]:
    where, params = (rng.where, rng.params) if rng else (sql.SQL("true"), ())
    query = sql.SQL("SELECT count(*) FROM ONLY {rel} WHERE {range} AND {cond}").format(
        rel=heap.ident, range=where, cond=pred.sql)
    return query, (*params, *pred.params)


WHOLE_TABLE = Range(sql.SQL("true"), (), 0, None, "whole table")

INDEX_PATH_ROWS_PER_MS = 50
"""Few enough matching rows per ms of the target (5,000 at 100 ms) to try one DELETE through an index."""


def plan_nodes(conn: psycopg.Connection, query: sql.Composed, params: tuple) -> list[dict]:
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()
    assert row is not None  # EXPLAIN (FORMAT JSON) returns its plan as one row
    plan = row[0]

    def nodes(node: dict) -> Any:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    return list(nodes(plan[0]["Plan"]))


def index_path(conn: psycopg.Connection, heap: Heap, pred: Predicate, settings: Settings, totals: Totals,
               expected: int | None) -> bool:
    """The steady state of an hourly cleanup: a few rows just expired, an index on the expiry column.

    One DELETE through the index then touches only those rows, where a walk would read the whole
    table. It is tried only when the planner picks an index and few rows are expected, and it is
    bounded by the same cap as a batch; if it would run longer, meets a locked row, or would take
    the target past the safety rail's `limit_rows` (both estimates can miss rows), it is cancelled or
    rolled back (nothing deleted) and the walk does the job. Returns True when it did.
    """
    limit = INDEX_PATH_ROWS_PER_MS * settings.target_ms
    if settings.dry_run:
        query, params = count_statement(heap, None, pred)
    else:
        query, params = delete_statement(heap, WHOLE_TABLE, pred, skip_locked=False)
    started = time.perf_counter()
    rows: int | None
    try:
        scans = [n for n in plan_nodes(conn, query, params)
                 if n.get("Relation Name") == heap.name and n["Node Type"].endswith("Scan")]
        if not scans or any(n["Node Type"] not in ("Index Scan", "Bitmap Heap Scan", "Index Only Scan")
                            for n in scans):
            return False
        estimated = max(int(n.get("Plan Rows", 0)) for n in scans)
        if max(estimated, expected or 0) > limit:
            return False
        started = time.perf_counter()
        if settings.dry_run:
            rows = _count(conn.execute(query, params))
        else:
            most = None if settings.limit_rows is None else settings.limit_rows - totals.rows
            rows = _delete_at_most(conn, query, params, most)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.QueryCanceled):
        rows = None
    if rows is None:
        totals.txn((time.perf_counter() - started) * 1000, ok=False)
        return False
    totals.txn((time.perf_counter() - started) * 1000, ok=True)
    totals.rows += max(0, rows)
    return True


def _delete_at_most(conn: psycopg.Connection, query: sql.Composed, params: tuple, most: int | None) -> int | None:
    """Run the DELETE; when it removes more than `most` rows, roll it back and return None."""
    if most is None:
        return conn.execute(query, params).rowcount
    with conn.transaction() as tx:
        rows = conn.execute(query, params).rowcount
        if rows > most:
            raise psycopg.Rollback(tx)
    return rows if rows <= most else None


def uses_tid_range(conn: psycopg.Connection, query: sql.Composed, params: tuple) -> bool:
    """Whether the planner scans the range with a TID Range Scan (not an index over the whole table)."""
    return any(n.get("Node Type") == "Tid Range Scan" for n in plan_nodes(conn, query, params))


def walk(conn: psycopg.Connection, heap: Heap, walker: Walk, pred: Predicate, settings: Settings,
         totals: Totals) -> WalkStop:
    """Delete (or count) every matching row of `heap`; why it stopped."""
    sizer = Sizer(settings.target_ms, walker.initial, walker.maximum)
    skip_locked = False
    lock_failures = cancels = 0
    checked = 0
    trusted = 0 if walker.unit == "blocks" else walker.maximum
    walked = found = 0
    while True:
        if settings.budget.exhausted(settings.need_s):
            return "budget"
        size = sizer.size
        if settings.expected_rows is not None and found and walker.unit == "blocks":
            # The rows still to find are known: at the density met so far they fill this many
            # blocks. Rows inserted in time order are contiguous, so a range about that wide (not
            # a full-size one reaching into the live tail) most likely finishes the job.
            left = settings.expected_rows - totals.rows - totals.skipped_locked
            size = min(size, max(int(2 * left * walked / found) + 1, size // 4))
        rng: Range | None = None
        started = time.perf_counter()
        try:
            # Everything that touches the table is in here: a migration's ACCESS EXCLUSIVE lock
            # blocks even reading its size or planning the DELETE.
            rng = walker.next_range(conn, size)
            if rng is None:
                return "done"
            if settings.dry_run:
                query, params = count_statement(heap, rng, pred)
            else:
                query, params = delete_statement(heap, rng, pred, skip_locked=skip_locked)
            if rng.size > trusted and rng.size * 50 >= getattr(walker, "nblocks", 0):
                # A range wide enough may tempt the planner into an index scan over the whole expiry
                # index (re-reading it every batch): check new widths, stay below one that does.
                # The choice is monotonic in the width, so a width that passed vouches for twice it;
                # a width under 2% of the table is far from any such crossover.
                if uses_tid_range(conn, query, params):
                    checked, trusted = rng.size, rng.size * 2
                elif checked:
                    sizer.maximum = sizer.size = trusted = checked
                    continue
                else:
                    logger.warning("no TID Range Scan for the first batch; walking anyway",
                                   extra={"table": heap.display})
                    trusted = walker.maximum
            started = time.perf_counter()
            cur = conn.execute(query, params)
            rows = _count(cur) if settings.dry_run else cur.rowcount
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            totals.txn((time.perf_counter() - started) * 1000, ok=False)
            totals.lock_retries += 1
            lock_failures += 1
            if lock_failures >= MAX_LOCK_FAILURES or _table_locked(conn, heap):
                return "blocked"
            if rng is None:
                continue
            if skip_locked and not sizer.cancelled(rng.size):
                # Even the smallest range cannot be locked around (a cascade into rows the app
                # holds): leave it for the next run and go on.
                totals.skipped_locked += _still_matching(conn, heap, rng, pred)
                walker.advance(rng)
                skip_locked = False
            else:
                skip_locked = True
            continue
        except psycopg.errors.QueryCanceled:
            totals.txn((time.perf_counter() - started) * 1000, ok=False)
            totals.cancelled += 1
            cancels += 1
            size = rng.size if rng is not None else sizer.size
            if cancels > MAX_CANCELS or not sizer.cancelled(size):
                raise BatchError(
                    f"a batch of {size} {walker.unit} of {heap.display} still takes longer than "
                    f"max_transaction_ms ({settings.cap_ms} ms); triggers or cascades on delete may be slow"
                ) from None
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        totals.txn(elapsed_ms, ok=True)
        totals.rows += max(0, rows)
        lock_failures = cancels = 0
        if skip_locked:
            totals.skipped_locked += _still_matching(conn, heap, rng, pred)
            skip_locked = False
        walker.advance(rng)
        walked += rng.size
        found += max(0, rows)
        sizer.record(rng.size, elapsed_ms, rows)
        logger.debug("batch", extra={"table": heap.display, "range": rng.label, "size": rng.size,
                                     "rows": rows, "ms": round(elapsed_ms, 2), "next_size": sizer.size})
        if settings.limit_rows is not None and totals.rows > settings.limit_rows:
            return "limit"
        if settings.expected_rows is not None and totals.rows + totals.skipped_locked >= settings.expected_rows:
            # Every row that matched at the start is gone or skipped: the rest of the heap, read
            # block by block, could only yield rows that started matching after the count (an
            # app inserting already-expired rows), which the next run deletes.
            return "counted"


def _table_locked(conn: psycopg.Connection, heap: Heap) -> bool:
    """Whether the table itself is locked against deletes (a migration), rather than some rows."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ROW EXCLUSIVE MODE NOWAIT").format(heap.ident))
    except psycopg.errors.LockNotAvailable:
        return True
    return False


def _still_matching(conn: psycopg.Connection, heap: Heap, rng: Range, pred: Predicate) -> int:
    """Rows of a finished range that still match: the ones the app held locked."""
    query, params = count_statement(heap, rng, pred)
    return _count(conn.execute(query, params))


def _count(cur: psycopg.Cursor) -> int:
    """The result of a `count_statement()`."""
    row = cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY: always one row
    return int(row[0])
