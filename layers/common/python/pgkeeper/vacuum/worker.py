"""Carrying out the selection: one statement per table, on its own autocommit connection, in time.

VACUUM cannot run inside a transaction block, so the work connection is autocommit. Every statement
gets `statement_timeout` = the time the Lambda has left, so a VACUUM cut off at the deadline is
cancelled by the server rather than killed with the function (which would leave no report).
`SKIP_LOCKED` never waits behind another session's lock: the server then emits a WARNING with
SQLSTATE 55P03 instead of vacuuming, which we catch through the notice handler (by SQLSTATE, not by
message text) and report together with who holds the lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import psycopg
from psycopg import sql
from pydantic import ConfigDict

from ..budget import Budget
from ..db import Database, bound, time_left
from ..jobs import SparseModel
from ..log import logger
from ..plan.vacuum import VacuumPlan
from . import backlog
from .selection import Action, VacuumTarget, table_stats

TableOutcome = Literal["planned", "frozen", "vacuumed", "analyzed", "skipped", "left", "gone"]
"""`planned` (a dry run), done (`frozen`, `vacuumed`, `analyzed`), `skipped` behind another session's
lock, `left` for lack of time (both carried over to the next run), `gone` (dropped meanwhile)."""

LOCK_NOT_AVAILABLE = "55P03"
DONE: dict[Action, TableOutcome] = {"freeze": "frozen", "vacuum": "vacuumed", "analyze": "analyzed"}

# Lock modes that conflict with VACUUM's / ANALYZE's SHARE UPDATE EXCLUSIVE.
_HOLDERS_SQL = """
SELECT l.pid, l.mode, coalesce(a.application_name, '') AS application_name, coalesce(a.state, '') AS state
  FROM pg_catalog.pg_locks l
  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'relation' AND l.relation = %s AND l.granted
   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
   AND l.pid <> pg_catalog.pg_backend_pid()
   AND l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                  'AccessExclusiveLock')
 ORDER BY l.pid
"""


class TableItem(SparseModel):
    """One selected table in the report: what it needed and why, and how it ended."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "why", "earlier_attempts"})
    AFTER: ClassVar[frozenset[str]] = frozenset({"dead_tuples_after", "xid_age_after", "mxid_age_after"})
    """The counters after the statement: reported (even when null) for a table that was done, only."""

    table: str
    action: Action
    reasons: list[str]
    carried_over: bool
    outcome: TableOutcome = "planned"
    dead_tuples_before: int | None
    xid_age_before: int | None
    mxid_age_before: int | None
    duration_s: float | None = None
    why: str | None = None
    dead_tuples_after: int | None = None
    xid_age_after: int | None = None
    mxid_age_after: int | None = None
    earlier_attempts: int | None = None
    """Runs that had this table and did not finish it (carried-over tables only)."""

    def _keeps(self, key: str, value: Any) -> bool:
        if key in self.AFTER:
            return self.outcome in DONE.values()
        return super()._keeps(key, value)


@dataclass
class Outcome:
    items: list[TableItem] = field(default_factory=list)
    stopped: str | None = None

    def count(self, outcome: TableOutcome) -> int:
        return sum(1 for i in self.items if i.outcome == outcome)


def statement(target: VacuumTarget) -> sql.Composed:
    """The cheapest statement that meets the table's need (see selection.py for FREEZE's reasons)."""
    ident = sql.Identifier(target.schema, target.name)
    if target.action == "analyze":
        return sql.SQL("ANALYZE (SKIP_LOCKED) {}").format(ident)
    options = ["SKIP_LOCKED"]
    if target.action == "freeze":
        options.append("FREEZE")
    if target.with_analyze:
        options.append("ANALYZE")
    return sql.SQL("VACUUM ({}) {}").format(sql.SQL(", ").join(sql.SQL(o) for o in options), ident)


def item_for(target: VacuumTarget) -> TableItem:
    return TableItem(
        table=target.display,
        action=target.action,
        reasons=target.reasons,
        carried_over=target.carried_over,
        dead_tuples_before=target.stats.get("n_dead_tup"),
        xid_age_before=target.stats.get("xid_age"),
        mxid_age_before=target.stats.get("mxid_age"),
    )


def process(db: Database, budget: Budget, plan: VacuumPlan, targets: list[VacuumTarget]) -> Outcome:
    """Work through `targets` in order until done or out of time; every table ends with an outcome.

    The bookkeeping after each table (its statistics, the backlog) is written on the work connection,
    which has just proven alive, never on the job's idle main session: that one may have been dropped
    during a long VACUUM (a pooler's idle timeout, an operator), and a finished VACUUM must be recorded.
    """
    out = Outcome()
    if not targets:
        return out
    notices: list[tuple[str | None, str | None]] = []
    work = db.connect(autocommit=True, statement_timeout_ms=time_left(budget).statement_ms, purpose="vacuum")
    # A Diagnostic is only valid inside the callback: keep its SQLSTATE and text, not the object.
    work.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
    try:
        for target in targets:
            item = item_for(target)
            out.items.append(item)
            if out.stopped is None and budget.exhausted(plan.min_seconds_per_table):
                out.stopped = (f"deadline: less than {plan.min_seconds_per_table:g}s of the run's time left "
                               "to start another table")
            if out.stopped is not None:
                _left(work, target, item, out.stopped)
                continue
            _one(work, budget, target, item, notices, out)
    finally:
        work.close()
    return out


def _one(work: psycopg.Connection, budget: Budget, target: VacuumTarget, item: TableItem,
         notices: list[tuple[str | None, str | None]], out: Outcome) -> None:
    timeout_ms = bound(work, budget, local=False).statement_ms
    notices.clear()
    started = time.monotonic()
    try:
        work.execute(statement(target))
    except psycopg.errors.QueryCanceled:
        # statement_timeout (our deadline) or a cancel from an operator: either way, stop here politely.
        item.duration_s = round(time.monotonic() - started, 3)
        out.stopped = (f"deadline: {target.display} did not finish within the {timeout_ms / 1000:.1f}s left "
                       "(statement_timeout)")
        _left(work, target, item, out.stopped + "; it goes first next run")
        logger.warning(f"{target.action} of {target.display} cancelled", extra={"after_s": item.duration_s})
        return
    except psycopg.errors.UndefinedTable:
        item.outcome, item.why = "gone", "the table was dropped after it was selected"
        backlog.done(work, target, "freeze")
        return
    except psycopg.errors.LockNotAvailable as exc:
        _skipped(work, target, item, f"lock not available ({exc.diag.message_primary})")
        return
    item.duration_s = round(time.monotonic() - started, 3)
    if any(sqlstate == LOCK_NOT_AVAILABLE for sqlstate, _ in notices):
        _skipped(work, target, item, "locked by another session: " + _holders(work, target.oid))
        return
    after = table_stats(work, target.oid)
    item.outcome = DONE[target.action]
    item.dead_tuples_after = after.get("n_dead_tup")
    item.xid_age_after = after.get("xid_age")
    item.mxid_age_after = after.get("mxid_age")
    backlog.done(work, target, target.action)
    logger.info(
        f"{item.outcome} {target.display} in {item.duration_s}s",
        extra={"dead_tuples": [item.dead_tuples_before, item.dead_tuples_after],
               "xid_age": [item.xid_age_before, item.xid_age_after]},
    )


def _skipped(conn: psycopg.Connection, target: VacuumTarget, item: TableItem, why: str) -> None:
    item.outcome, item.why = "skipped", why + "; it goes first next run"
    backlog.left(conn, target, why)
    logger.warning(f"skipped {target.display}: {why}")


def _left(conn: psycopg.Connection, target: VacuumTarget, item: TableItem, why: str) -> None:
    item.outcome, item.why = "left", why
    backlog.left(conn, target, why)


def _holders(conn: psycopg.Connection, oid: int) -> str:
    rows = conn.execute(_HOLDERS_SQL, [oid]).fetchall()
    if not rows:
        return "the lock was released right after"
    return ", ".join(f"pid {pid} ({app or 'no application_name'}, {state or 'state hidden'}) holds {mode}"
                     for pid, mode, app, state in rows)
