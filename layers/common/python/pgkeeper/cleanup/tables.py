"""One table target from start to report: safety rail, the walk over each heap, ANALYZE, remaining."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from .. import db
from ..budget import Budget
from ..jobs import SparseModel
from ..log import logger
from ..plan.base import column_ident
from ..plan.cleanup import CleanupPlan, CleanupTarget
from . import estimate, predicate
from .batches import BatchError, Settings, Totals, WalkStop, index_path, walk
from .resolve import Heap, TableTarget, TargetProblems
from .walkers import KeysetWalk, TidRangeWalk

TID_RANGE_MIN_VERSION = 140000
PHASE_FLOOR_MS = 1000
CAP_STATEMENT_SHARE = 0.8
"""statement_timeout is this share of max_transaction_ms: commit, the round trip and a busy client's
scheduling delays must fit in the rest, so no transaction the app could see runs past the cap."""


TargetOutcome = Literal["done", "dry_run", "partial", "blocked", "not_started", "failed", "refused", "not_run"]
"""How one target ended: `dry_run` a dry run's, `partial` stopped at the deadline, `blocked` its table
locked by another session, `not_started` left by the deadline, `refused` by the safety rail, `not_run`
not even tried because the plan has problems."""

Method = Literal["tid_range", "keyset"]
"""How a table is walked: TID ranges (PostgreSQL >= 14) or primary-key ranges."""


class TargetResult(SparseModel):
    """A target in the report: just how it ended, for one that was not (or could not be) cleaned;
    the table and function reports say more. `rows_deleted` and `error` only when known."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SPARSE: ClassVar[frozenset[str]] = frozenset({"rows_deleted", "error", "would_delete"})

    target: str
    outcome: TargetOutcome
    rows_deleted: int | None = None
    error: str | None = None
    would_delete: int | None = None
    """Dry runs of tables and functions only."""


class SampleEstimate(BaseModel):
    """The block sample's figures (exact when the sample read the whole table)."""

    model_config = ConfigDict(extra="forbid")

    table_rows: int
    matching: int
    exact: bool


class WalkPosition(SparseModel):
    """Where a walk over a heap was: blocks of a TID walk, keys of a keyset walk."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"blocks_walked", "blocks", "keys_walked"})

    table: str
    blocks_walked: int | None = None
    blocks: int | None = None
    keys_walked: int | None = None


class StoppedEarly(WalkPosition):
    """A heap whose walk stopped once every row counted at its start was gone."""

    matching_at_start: int | None
    why: str


class Retried(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lock_timeouts: int
    cancelled_at_cap: int


class TableTargetReport(TargetResult):
    """A table target's report, serialised as the dict it replaced: the optional keys only when the run
    got that far (`remaining` also as null when the walk stopped and the rest could not be sampled),
    `would_delete` in dry runs, `checked_ms` once the run finished without raising."""

    SPARSE: ClassVar[frozenset[str]] = frozenset({
        "error", "cutoff", "estimate", "safety_rail", "stopped_early", "stopped_at", "remaining", "analyze",
        "analyze_ms", "retried", "would_delete", "checked_ms"})
    ORDER: ClassVar[tuple[str, ...]] = (
        "target", "kind", "table", "condition", "method", "dry_run", "cutoff", "estimate", "safety_rail",
        "stopped_early", "stopped_at", "remaining", "outcome", "error", "analyze", "analyze_ms", "rows_deleted",
        "transactions", "longest_transaction_ms", "duration_ms", "skipped_locked", "retried", "would_delete",
        "checked_ms")

    kind: Literal["table"] = "table"
    table: str
    condition: str
    method: Method | Literal["index"]
    """`index`: every heap was cleaned by one DELETE through the expiry index."""
    dry_run: bool
    outcome: TargetOutcome = "failed"
    """Set by the run; a run cut short by an exception failed."""
    cutoff: str | None = None
    estimate: SampleEstimate | None = None
    safety_rail: str | None = None
    """Dry runs: what the safety rail would say."""
    stopped_early: list[StoppedEarly] | None = None
    stopped_at: WalkPosition | None = None
    remaining: int | None = None
    analyze: str | None = None
    analyze_ms: float | None = None
    rows_deleted: int = 0
    transactions: int = 0
    longest_transaction_ms: float = 0.0
    duration_ms: float = 0.0
    skipped_locked: int = 0
    retried: Retried | None = None
    checked_ms: float | None = None

    def _keeps(self, key: str, value: Any) -> bool:
        if key == "remaining" and self.stopped_at is not None:
            return True  # null: the rows left could not be sampled
        return super()._keeps(key, value)


def choose_method(requested: Method | Literal["auto"], server_version: int) -> Method:
    if requested == "auto":
        return "tid_range" if server_version >= TID_RANGE_MIN_VERSION else "keyset"
    return requested


def method_problems(target: TableTarget, method: Method, server_version: int) -> list[str]:
    if method == "tid_range" and server_version < TID_RANGE_MIN_VERSION:
        return [f"method tid_range needs PostgreSQL 14 or later (this server is {server_version // 10000})"]
    if method == "keyset":
        return [f"{h.display} has no primary key: the keyset batches used on PostgreSQL < 14 need one"
                for h in target.heaps if not h.pk]
    return []


def set_timeouts(conn: psycopg.Connection, statement_ms: int, lock_ms: int) -> None:
    """The delete session's timeouts, for the session (its transactions are the batches)."""
    db.set_timeouts(conn, statement_ms, lock_ms, local=False)


def rail_limit(spec: CleanupTarget, plan: CleanupPlan) -> tuple[float, int | None] | None:
    """The safety rail of a table target: (max_fraction, max_rows), None when `allow_large`."""
    if spec.allow_large:
        return None
    fraction = spec.max_fraction if spec.max_fraction is not None else plan.max_fraction
    rows = spec.max_rows if spec.max_rows is not None else plan.max_rows
    return fraction, rows


def rail_allowed(limit: tuple[float, int | None], table_rows: int) -> int:
    """How many matching rows the rail allows in a table of `table_rows` rows."""
    fraction, rows = limit
    allowed = math.floor(fraction * table_rows)
    return min(allowed, rows) if rows is not None else allowed


def rail_refusal(shown: str, est: estimate.Estimate, allowed: int, limit: tuple[float, int | None] | None,
                 *, ran: bool = True) -> str:
    """Why the rail refuses a target whose condition matches `est.matching` rows of `shown` (`ran`: said
    by a run, which tells that nothing was deleted; `pgkeeper plan check` deletes nothing anyway)."""
    how = "counted" if est.exact else "estimated from a block sample"
    fraction, rows = limit or (1.0, None)
    rail = f"max_fraction {fraction:g}" + (f", max_rows {rows}" if rows is not None else "")
    return (f"safety rail: the condition matches {est.matching} of {est.rows} rows "
            f"({est.fraction:.0%}, {how}) of {shown}, more than allowed ({allowed}; {rail}). "
            + (f"Nothing was deleted from {shown}. " if ran else "")
            + "If this is intended, set allow_large: true "
            "on the target (or raise max_fraction / max_rows).")


class TableRun:
    """Cleans one table target; `run()` returns the report of what happened."""

    def __init__(self, conn: psycopg.Connection, target: TableTarget, plan: CleanupPlan, *, method: Method,
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
        self.stats: dict[int, estimate.HeapStats] = {}
        self.report = TableTargetReport(target=self.spec.key, table=target.display,
                                        condition=predicate.describe(self.spec), method=method, dry_run=dry_run)

    def _phase_timeouts(self) -> None:
        """Catalog reads, samples, ANALYZE: the plan's timeouts, never past the deadline.

        The budget keeps a reserve past its own zero, so a short read still fits when it is spent.
        """
        db.bound(self.conn, self.budget, cap_ms=self.statement_timeout_ms, floor_ms=PHASE_FLOOR_MS, local=False,
                 lock_timeout_ms=self.lock_timeout_ms)

    def run(self) -> TableTargetReport:
        started = time.perf_counter()
        try:
            self._run()
        finally:
            t, r = self.totals, self.report
            r.rows_deleted = 0 if self.dry_run else t.rows
            r.transactions = t.transactions
            r.longest_transaction_ms = round(t.longest_ms, 1)
            r.duration_ms = round((time.perf_counter() - started) * 1000, 1)
            r.skipped_locked = t.skipped_locked
            if t.aborted:
                r.retried = Retried(lock_timeouts=t.lock_retries, cancelled_at_cap=t.cancelled)
            if self.dry_run:
                r.would_delete = t.rows
        return self.report

    def _run(self) -> None:
        self._phase_timeouts()
        pred = predicate.build(self.spec, self.target.times or predicate.resolve_times(self.conn, self.spec))
        self.report.cutoff = pred.cutoff.isoformat()
        heaps = self.target.heaps
        self.stats = estimate.heap_stats(self.conn, heaps, column_ident(self.spec.expiry_column or ""))
        known = [self.stats[h.oid].rows for h in heaps]
        rows_before = None if None in known else sum(r or 0 for r in known)

        estimates: list[estimate.Estimate] = []
        in_flight_limit: int | None = None
        limit = self._limit()
        if limit is not None or self.dry_run:
            estimates = [estimate.sample(self.conn, h, pred) for h in heaps]
            est = sum(estimates, estimate.Estimate())
            rows_before = est.rows
            self.report.estimate = SampleEstimate(table_rows=est.rows, matching=est.matching, exact=est.exact)
            if limit is not None:
                allowed = self._allowed(limit, est.rows)
                if est.matching > allowed:
                    message = self._refusal(est, allowed)
                    if not self.dry_run:
                        self.report.outcome, self.report.error = "refused", message
                        self.report.remaining = est.matching
                        return
                    self.report.safety_rail = "would refuse: " + message
                if not self.dry_run:
                    # The sample can be wrong: never let the run go far beyond what the rail allows.
                    in_flight_limit = allowed if est.exact else math.ceil(allowed * 1.25) + 100

        settings = Settings(self.plan.target_transaction_ms, self.plan.cap_ms, self.budget,
                            dry_run=self.dry_run, limit_rows=in_flight_limit)
        stop = self._walk_heaps(pred, heaps, estimates, settings)
        if stop is None:
            return
        self.report.outcome = "dry_run" if stop == "done" and self.dry_run else _OUTCOMES[stop]
        if stop == "blocked":
            self.report.error = ("the table is locked by another session (a migration?): "
                                 "deletes could not get their locks; the next run continues")
        if stop == "limit":
            self.report.error = (f"safety rail: stopped after deleting {self.totals.rows} rows, more than the "
                                 f"sample estimated and the rail allows; set allow_large: true if this is intended")
        if not self.dry_run:
            self._maybe_analyze(rows_before)

    def _walk_heaps(self, pred: predicate.Predicate, heaps: list[Heap], estimates: list[estimate.Estimate],
                    settings: Settings) -> WalkStop | None:
        """Each heap through the index path or the walk; why it stopped (None: a batch failed)."""
        by_index = 0
        for i, heap in enumerate(heaps):
            walker = self._walker(heap)
            set_timeouts(self.conn, int(self.plan.cap_ms * CAP_STATEMENT_SHARE),
                         self.plan.row_lock_timeout_ms(self.lock_timeout_ms))
            expected = estimates[i].matching if estimates else None
            try:
                if heap.expiry_indexed and index_path(self.conn, heap, pred, settings, self.totals, expected):
                    by_index += 1
                    continue
                counted = self._count_through_index(heap, pred)
                settings.expected_rows = None if counted is None else \
                    self.totals.rows + self.totals.skipped_locked + counted
                stop = walk(self.conn, heap, walker, pred, settings, self.totals)
            except BatchError as exc:
                self.report.outcome, self.report.error = "failed", str(exc)
                return None
            finally:
                self._phase_timeouts()
            if stop == "counted":
                self.report.stopped_early = [*(self.report.stopped_early or []), StoppedEarly.model_validate({
                    "table": heap.display, **walker.progress(), "matching_at_start": counted,
                    "why": "every row that matched at the start (counted through the expiry index) is gone"})]
            elif stop != "done":
                self.report.stopped_at = WalkPosition.model_validate({"table": heap.display, **walker.progress()})
                self.report.remaining = self._remaining(pred, walker, heaps[i + 1:])
                return stop
        self.report.remaining = self.totals.rows if self.dry_run else self.totals.skipped_locked
        if by_index == len(heaps):
            self.report.method = "index"
        return "done"

    def _count_through_index(self, heap: Heap, pred: predicate.Predicate) -> int | None:
        """Count the matching rows first when that is cheap and likely to let the walk stop early.

        Expired rows gathered at the start of the heap (expiry correlated with the physical order:
        rows inserted in time order) leave a tail of live blocks that a walk reads for nothing,
        where a single DELETE would use the expiry index to skip them. An Index Only Scan counts
        the matching rows for a fraction of that read; once that many are gone the walk stops.
        """
        spec = self.spec
        if self.method != "tid_range" or spec.or_if or spec.only_if or not heap.expiry_indexed:
            return None
        correlation = self.stats[heap.oid].correlation
        if correlation is None or correlation < estimate.CORRELATED:
            return None
        return estimate.index_count(self.conn, heap, pred)

    def _walker(self, heap: Heap) -> TidRangeWalk | KeysetWalk:
        if self.method == "keyset":
            return KeysetWalk(heap)
        return TidRangeWalk(heap, self.stats[heap.oid].blocks)

    def _limit(self) -> tuple[float, int | None] | None:
        return rail_limit(self.spec, self.plan)

    @staticmethod
    def _allowed(limit: tuple[float, int | None], table_rows: int) -> int:
        return rail_allowed(limit, table_rows)

    def _refusal(self, est: estimate.Estimate, allowed: int) -> str:
        return rail_refusal(self.target.display, est, allowed, self._limit())

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
            self.report.analyze = "skipped: no time left before the deadline"
            return
        started = time.perf_counter()
        try:
            self._phase_timeouts()
            if self.conn.info.server_version >= 150000:
                # The deletes' counters are still pending in this backend (flushed at most once a
                # second): flushed after ANALYZE, they would subtract the deleted rows from ANALYZE's
                # fresh live count (100,001 live read as 2) and make the next vacuum analyze again.
                self.conn.execute("SELECT pg_catalog.pg_stat_force_next_flush()")
            self.conn.execute(sql.SQL("ANALYZE {}").format(self.target.ident))
            self.report.analyze = "done"
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            # Statistics refresh is a courtesy: autovacuum will do it too. Never fail the run over it.
            self.report.analyze = f"skipped: {type(exc).__name__}"
            logger.warning("ANALYZE after cleanup skipped", extra={"table": self.target.display})
        self.report.analyze_ms = round((time.perf_counter() - started) * 1000, 1)


_OUTCOMES: dict[WalkStop, TargetOutcome] = {"done": "done", "budget": "partial", "blocked": "blocked",
                                            "limit": "failed"}
"""How a table target ended, by why its walk over the heaps stopped (a dry run that went through is
`dry_run`; a heap whose walk stopped `counted` is done and the walk goes on to the next)."""

__all__ = ["TableRun", "TableTargetReport", "TargetOutcome", "TargetProblems", "TargetResult", "choose_method",
           "method_problems"]
