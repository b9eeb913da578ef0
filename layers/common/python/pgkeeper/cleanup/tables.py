"""One table target from start to report: safety rail, the walk over each heap, ANALYZE, remaining."""

from __future__ import annotations

import math
import time
from typing import Any

import psycopg
from psycopg import sql

from ..budget import Budget
from ..log import logger
from ..plan.cleanup import CleanupPlan
from . import estimate, predicate
from .batches import BatchError, Settings, Totals, index_path, walk
from .resolve import Heap, TableTarget, TargetProblems
from .walkers import KeysetWalk, TidRangeWalk, relation_blocks

TID_RANGE_MIN_VERSION = 140000
PHASE_FLOOR_MS = 1000


def choose_method(requested: str, server_version: int) -> str:
    if requested == "auto":
        return "tid_range" if server_version >= TID_RANGE_MIN_VERSION else "keyset"
    return requested


def method_problems(target: TableTarget, method: str, server_version: int) -> list[str]:
    if method == "tid_range" and server_version < TID_RANGE_MIN_VERSION:
        return [f"method tid_range needs PostgreSQL 14 or later (this server is {server_version // 10000})"]
    if method == "keyset":
        return [f"{h.display} has no primary key: the keyset batches used on PostgreSQL < 14 need one"
                for h in target.heaps if not h.pk]
    return []


def set_timeouts(conn: psycopg.Connection, statement_ms: int, lock_ms: int) -> None:
    conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false), "
                 "pg_catalog.set_config('lock_timeout', %s, false)", [str(max(1, statement_ms)), str(max(1, lock_ms))])


class TableRun:
    """Cleans one table target; `report()` says what happened."""

    def __init__(self, conn: psycopg.Connection, target: TableTarget, plan: CleanupPlan, *, method: str,
                 budget: Budget, dry_run: bool, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self.conn = conn
        self.target = target
        self.spec = target.spec
        self.plan = plan
        self.method = method
        self.budget = budget
        self.dry_run = dry_run
        self.statement_timeout_ms = statement_timeout_ms
        self.lock_timeout_ms = lock_timeout_ms
        self.totals = Totals()
        self.report: dict[str, Any] = {
            "target": self.spec.key, "kind": "table", "table": target.display,
            "condition": predicate.describe(self.spec), "method": method, "dry_run": dry_run,
        }

    def _phase_timeouts(self) -> None:
        """Catalog reads, samples, ANALYZE: the plan's timeouts, never past the deadline.

        The budget keeps a reserve past its own zero, so a short read still fits when it is spent.
        """
        statement_ms = max(PHASE_FLOOR_MS, min(self.statement_timeout_ms, self.budget.remaining_ms()))
        set_timeouts(self.conn, statement_ms, self.lock_timeout_ms)

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            self._run()
        finally:
            t = self.totals
            self.report.update({
                "rows_deleted": 0 if self.dry_run else t.rows,
                "transactions": t.transactions,
                "longest_transaction_ms": round(t.longest_ms, 1),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "skipped_locked": t.skipped_locked,
            })
            if t.aborted:
                self.report["retried"] = {"lock_timeouts": t.lock_retries, "cancelled_at_cap": t.cancelled}
            if self.dry_run:
                self.report["would_delete"] = t.rows
        return self.report

    def _run(self) -> None:
        self._phase_timeouts()
        times = predicate.resolve_times(self.conn, self.spec)
        pred = predicate.build(self.spec, times)
        self.report["cutoff"] = pred.cutoff.isoformat()
        heaps = self.target.heaps

        limit = self._limit()
        rows_before = estimate.planner_rows(self.conn, heaps)
        in_flight_limit: int | None = None
        estimates: list[estimate.Estimate] = []
        if limit is not None or self.dry_run:
            estimates = [estimate.sample(self.conn, h, pred) for h in heaps]
            est = sum(estimates, estimate.Estimate())
            rows_before = est.rows
            self.report["estimate"] = {"table_rows": est.rows, "matching": est.matching, "exact": est.exact}
            if limit is not None:
                allowed = self._allowed(limit, est.rows)
                if est.matching > allowed:
                    message = self._refusal(est, allowed)
                    if not self.dry_run:
                        self.report.update(outcome="refused", error=message, remaining=est.matching)
                        return
                    self.report["safety_rail"] = "would refuse: " + message
                if not self.dry_run:
                    # The sample can be wrong: never let the run go far beyond what the rail allows.
                    in_flight_limit = allowed if est.exact else math.ceil(allowed * 1.25) + 100

        settings = Settings(self.plan.target_transaction_ms, self.plan.cap_ms, self.budget,
                            dry_run=self.dry_run, limit_rows=in_flight_limit)
        stop = "done"
        by_index = 0
        for i, heap in enumerate(heaps):
            walker = self._walker(heap)
            set_timeouts(self.conn, int(self.plan.cap_ms * 0.9), self.plan.row_lock_timeout_ms(self.lock_timeout_ms))
            expected = estimates[i].matching if estimates else None
            try:
                if index_path(self.conn, heap, pred, settings, self.totals, expected):
                    by_index += 1
                    continue
                stop = walk(self.conn, heap, walker, pred, settings, self.totals)
            except BatchError as exc:
                self.report.update(outcome="failed", error=str(exc))
                return
            finally:
                self._phase_timeouts()
            if stop != "done":
                self.report["stopped_at"] = {"table": heap.display, **walker.progress()}
                self.report["remaining"] = self._remaining(pred, walker, heaps[i + 1:])
                break
        else:
            self.report["remaining"] = self.totals.rows if self.dry_run else self.totals.skipped_locked
        if by_index == len(heaps):
            self.report["method"] = "index"

        self.report["outcome"] = {
            "done": "dry_run" if self.dry_run else "done",
            "budget": "partial",
            "blocked": "blocked",
            "limit": "failed",
        }[stop]
        if stop == "blocked":
            self.report["error"] = ("the table is locked by another session (a migration?): "
                                    "deletes could not get their locks; the next run continues")
        if stop == "limit":
            self.report["error"] = (f"safety rail: stopped after deleting {self.totals.rows} rows, more than the "
                                    f"sample estimated and the rail allows; set allow_large: true if this is intended")
        if not self.dry_run:
            self._maybe_analyze(rows_before)

    def _walker(self, heap: Heap) -> TidRangeWalk | KeysetWalk:
        if self.method == "keyset":
            return KeysetWalk(heap)
        return TidRangeWalk(heap, relation_blocks(self.conn, heap.oid))

    def _limit(self) -> tuple[float, int | None] | None:
        if self.spec.allow_large:
            return None
        fraction = self.spec.max_fraction if self.spec.max_fraction is not None else self.plan.max_fraction
        rows = self.spec.max_rows if self.spec.max_rows is not None else self.plan.max_rows
        return fraction, rows

    @staticmethod
    def _allowed(limit: tuple[float, int | None], table_rows: int) -> int:
        fraction, rows = limit
        allowed = math.floor(fraction * table_rows)
        return min(allowed, rows) if rows is not None else allowed

    def _refusal(self, est: estimate.Estimate, allowed: int) -> str:
        how = "counted" if est.exact else "estimated from a block sample"
        fraction, rows = self._limit() or (1.0, None)
        rail = f"max_fraction {fraction:g}" + (f", max_rows {rows}" if rows is not None else "")
        return (f"safety rail: the condition matches {est.matching} of {est.rows} rows "
                f"({est.fraction:.0%}, {how}) of {self.target.display}, more than allowed ({allowed}; {rail}). "
                f"Nothing was deleted. If this is intended, set allow_large: true on the target "
                f"(or raise max_fraction / max_rows).")

    def _remaining(self, pred: predicate.Predicate, walker: TidRangeWalk | KeysetWalk, rest: list[Heap]) -> int | None:
        """Matching rows the walk has not reached (sampled) plus those it skipped."""
        self._phase_timeouts()
        try:
            left = estimate.sample(self.conn, walker.heap, pred, walker.unprocessed())
            for other in rest:
                left = left + estimate.sample(self.conn, other, pred)
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
            return None
        return left.matching + self.totals.skipped_locked

    def _maybe_analyze(self, rows_before: int | None) -> None:
        deleted = self.totals.rows
        fraction = self.plan.analyze_fraction
        if not deleted or fraction is None:
            return
        if rows_before and deleted < fraction * rows_before:
            return
        if self.budget.exhausted(1.0):
            self.report["analyze"] = "skipped: no time left before the deadline"
            return
        started = time.perf_counter()
        try:
            self._phase_timeouts()
            self.conn.execute(sql.SQL("ANALYZE {}").format(self.target.ident))
            self.report["analyze"] = "done"
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            # Statistics refresh is a courtesy: autovacuum will do it too. Never fail the run over it.
            self.report["analyze"] = f"skipped: {type(exc).__name__}"
            logger.warning("ANALYZE after cleanup skipped", extra={"table": self.target.display})
        self.report["analyze_ms"] = round((time.perf_counter() - started) * 1000, 1)


__all__ = ["TableRun", "TargetProblems", "choose_method", "method_problems"]
