"""The cleanup job: expired sessions and tokens deleted fast, in short transactions, never a wrong row.

Every target is validated against the live database before anything is deleted. Table targets
are then walked batch by batch (`pgkeeper.cleanup`); function targets are called once. The run is
`partial` when the deadline stopped it (the next run simply continues: deleting expired rows is
idempotent) or a table was locked, and `failed` when a target failed or the safety rail refused it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

import psycopg
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import ConfigDict, Field

from ..db import bound
from ..errors import EventError, first_line
from ..jobs import JobContext, JobOutcome, JobSpec, Options, SparseReport
from ..log import logger, metrics
from ..metric_names import AlarmWindow
from ..plan import Plan
from ..plan.cleanup import CleanupPlan, CleanupTarget
from . import estimate, functions, predicate
from .functions import FunctionTargetReport
from .resolve import TableTarget, TargetProblems, resolve_table
from .tables import (
    Method,
    TableRun,
    TableTargetReport,
    TargetOutcome,
    TargetResult,
    choose_method,
    method_problems,
    rail_allowed,
    rail_limit,
    rail_refusal,
)


class CleanupOptions(Options):
    targets: list[str] | None = Field(None, description="only these targets (by name); default all")
    method: Method | Literal["auto"] = Field(
        "auto", description="auto: TID ranges on PostgreSQL >= 14, primary-key ranges before; force one to compare"
    )


TargetReport = TableTargetReport | FunctionTargetReport | TargetResult
"""A target in the report: a table's or a function's, or just how it ended when it was not cleaned
(`not_run`, `not_started`, `blocked`, or `failed` before its work began)."""


class CleanupReport(SparseReport):
    """A cleanup run's report, serialised as the dict it replaced: `dry_run` and `summary` unless the run
    ended before any target was tried, `would_delete` in dry runs, `errors` only when there are some,
    `note` when the plan has no targets, `duration_s` only once the runner adds the run's own."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "dry_run", "would_delete", "summary", "note"})
    ORDER: ClassVar[tuple[str, ...]] = ("status", "dry_run", "rows_deleted", "targets", "would_delete", "summary",
                                        "errors", "note")

    dry_run: bool | None = None
    rows_deleted: int
    targets: list[TargetReport]
    """In the plan's order, except that targets blocked during their check come first."""
    would_delete: int | None = None
    summary: str | None = None
    note: str | None = None


ResolvedTarget = TableTarget | functions.FunctionTarget


def _select(targets: list[CleanupTarget], names: list[str] | None) -> list[CleanupTarget]:
    if names is None:
        return list(targets)
    known = {t.key: t for t in targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EventError(f"unknown cleanup target(s) {unknown}; the plan has {sorted(known)}", reason="bad_options")
    return [known[n] for n in names]


def preflight(plan: Plan, opts: CleanupOptions, conn: psycopg.Connection) -> None:
    """Unknown target names are the caller's typo: a 400 before the run is recorded."""
    _select(plan.cleanup.targets, opts.targets)


def _resolve(conn: psycopg.Connection, spec: CleanupTarget) -> ResolvedTarget:
    if spec.function is not None:
        return functions.resolve_function(conn, spec)
    return resolve_table(conn, spec)


def _validate(conn: psycopg.Connection, specs: list[CleanupTarget], requested: Method | Literal["auto"],
              prefix: str = "") -> tuple[list[ResolvedTarget], list[str], dict[str, str]]:
    """Resolve every target: the resolved ones, all problems of all targets (each prefixed with the
    target's name), and the targets whose table could not be checked because it is locked (a
    migration holding ACCESS EXCLUSIVE): those are not the plan's fault, and must not stop the others."""
    version = conn.info.server_version
    resolved: list[ResolvedTarget] = []
    problems: list[str] = []
    blocked: dict[str, str] = {}
    for i, spec in enumerate(specs):
        where = f"{prefix}[{i}] ({spec.key})" if prefix else spec.key
        started = time.perf_counter()
        try:
            target = _resolve(conn, spec)
            target.checked_ms = round((time.perf_counter() - started) * 1000, 1)
        except TargetProblems as exc:
            problems += [f"{where}: {p}" for p in exc.problems]
            continue
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            blocked[spec.key] = (f"{spec.table or spec.function} is locked by another session (a migration?): "
                                 f"its check could not get a lock ({first_line(exc)}); the next run tries again")
            continue
        if isinstance(target, TableTarget):
            problems += [f"{where}: {p}" for p in method_problems(target, choose_method(requested, version), version)]
        resolved.append(target)
    return resolved, problems, blocked


def run(ctx: JobContext) -> CleanupReport:
    plan = ctx.plan.cleanup
    options: CleanupOptions = ctx.options
    specs = _select(plan.targets, options.targets)
    if not specs:
        return CleanupReport(status="succeeded", rows_deleted=0, targets=[], note="the plan has no cleanup targets")
    settings = ctx.plan.database
    statement_ms = settings.statement_timeout_s * 1000
    # One delete session, reopened (with its settings) if the server drops it between targets.
    work = ctx.db.session(purpose="delete", setup=lambda c: _session(c, plan.timezone, plan.async_commit))
    try:
        conn = work.conn
        resolved, problems, blocked = _validate(conn, specs, options.method)
        if problems:
            # Nothing is deleted unless every target checks out: a bad plan fails loudly, whole.
            return CleanupReport(status="failed", rows_deleted=0, errors=problems, dry_run=options.dry_run,
                                 targets=[TargetResult(target=s.key, outcome="not_run") for s in specs])
        method = choose_method(options.method, conn.info.server_version)
        results: list[TargetReport] = [
            TargetResult(target=key, outcome="blocked", rows_deleted=0, error=why) for key, why in blocked.items()]
        for key, why in blocked.items():
            logger.warning("cleanup target blocked", extra={"target": key, "error": why})
        for target in resolved:
            if ctx.budget.exhausted(plan.cap_ms / 1000 + 0.5):
                results.append(TargetResult(target=target.spec.key, outcome="not_started", rows_deleted=0))
                continue
            results.append(_clean(work.conn, target, ctx, method, statement_ms))
    finally:
        work.close()
    return _summary(results, options.dry_run)


def _session(conn: psycopg.Connection, timezone: str, async_commit: bool) -> None:
    """The delete session: how naive timestamps read, commit mode, and no parallel workers (a
    maintenance job keeps to one backend; the app keeps the other cores)."""
    conn.execute("SELECT pg_catalog.set_config('TimeZone', %s, false), "
                 "pg_catalog.set_config('synchronous_commit', %s, false), "
                 "pg_catalog.set_config('max_parallel_workers_per_gather', '0', false)",
                 [timezone, "off" if async_commit else "on"])


def _clean(conn: psycopg.Connection, target: ResolvedTarget, ctx: JobContext, method: Method,
           statement_ms: int) -> TargetReport:
    plan = ctx.plan.cleanup
    dry_run = ctx.options.dry_run
    lock_ms = ctx.plan.database.lock_timeout_ms
    table_run: TableRun | None = None
    result: TargetReport
    try:
        if isinstance(target, TableTarget):
            table_run = TableRun(conn, target, plan, method=method, budget=ctx.budget, dry_run=dry_run,
                                 statement_timeout_ms=statement_ms, lock_timeout_ms=lock_ms)
            result = table_run.run()
            result.checked_ms = target.checked_ms
        else:
            bound(conn, ctx.budget, cap_ms=statement_ms, lock_timeout_ms=lock_ms, local=False)
            result = functions.call(conn, target, dry_run=dry_run)
    except (psycopg.Error, TargetProblems) as exc:
        # One target failing does not stop the others; the run still ends `failed` and raises.
        message = f"{type(exc).__name__}: {first_line(exc)}" if isinstance(exc, psycopg.Error) else first_line(exc)
        logger.warning("cleanup target failed", extra={"target": target.spec.key, "error": message})
        if table_run is None:
            return TargetResult(target=target.spec.key, outcome="failed", rows_deleted=0, error=message)
        # The batches committed before the failure stay deleted: the report (filled in by run()'s
        # `finally`) says how many, and the metric counts them.
        result = table_run.report
        result.outcome, result.error = "failed", message
    if not dry_run and result.rows_deleted:
        _metric(target.spec.key, result.rows_deleted)
    logger.info("cleanup target finished", extra={"target": target.spec.key, "outcome": result.outcome,
                                                  "rows_deleted": result.rows_deleted})
    return result


def _metric(target: str, rows: int) -> None:
    """RowsDeleted per target (dimension `target`: as many values as the plan has targets) and in total."""
    metrics.add_metric(name="RowsDeleted", unit=MetricUnit.Count, value=rows)
    with single_metric(name="RowsDeleted", unit=MetricUnit.Count, value=rows) as metric:
        metric.add_dimension(name="job", value="cleanup")
        metric.add_dimension(name="target", value=target)


def _summary(results: list[TargetReport], dry_run: bool) -> CleanupReport:
    outcomes = [r.outcome for r in results]
    errors = [f"{r.target}: {r.error}" for r in results if r.outcome in ("failed", "refused")]
    status: JobOutcome
    if errors:
        status = "failed"
    elif any(o in ("partial", "blocked", "not_started") for o in outcomes):
        status = "partial"
    else:
        status = "succeeded"
    deleted = sum(r.rows_deleted or 0 for r in results)
    would_delete = sum(r.would_delete or 0 for r in results) if dry_run else None
    return CleanupReport(status=status, dry_run=dry_run, rows_deleted=deleted, targets=results,
                         would_delete=would_delete, summary=_describe_run(results, deleted, would_delete),
                         errors=errors)


_OUTCOME_WORDS: dict[TargetOutcome, str] = {"done": "done", "dry_run": "checked", "partial": "stopped at the deadline",
                  "blocked": "blocked by a lock", "not_started": "not started (deadline)", "failed": "failed",
                  "refused": "refused by the safety rail", "not_run": "not run (the plan has problems)"}


def _describe_run(results: list[TargetReport], deleted: int, would_delete: int | None) -> str:
    """What the whole run did, counted over every target: `deleted 500 rows; 2 targets: 1 done,
    1 refused by the safety rail` (never one target's "nothing was deleted" for the whole run)."""
    by_outcome: dict[TargetOutcome, int] = {}
    for r in results:
        by_outcome[r.outcome] = by_outcome.get(r.outcome, 0) + 1
    head = f"would delete {would_delete} rows" if would_delete is not None else f"deleted {deleted} rows"
    parts = ", ".join(f"{n} {_OUTCOME_WORDS[o]}" for o, n in by_outcome.items())
    return f"{head}; {len(results)} target{'s' if len(results) != 1 else ''}: {parts}"


def check(plan: Plan, conn: psycopg.Connection) -> list[str]:
    """`pgkeeper plan check`: every cleanup target against the live database."""
    return check_report(plan, conn)[0]


def check_report(plan: Plan, conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """`pgkeeper plan check`: the problems of every cleanup target against the live database (missing
    tables or columns, SELECT and DELETE lacking on a table or partition, values that do not fit,
    a table the safety rail would refuse), and notes on what the next run would do."""
    cp = plan.cleanup
    where = {spec.key: f"cleanup.targets[{i}] ({spec.key})" for i, spec in enumerate(cp.targets)}
    with _timezone(conn, cp.timezone):
        resolved, problems, blocked = _validate(conn, cp.targets, "auto", prefix="cleanup.targets")
        notes: list[str] = []
        for target in resolved:
            if isinstance(target, TableTarget):
                refusal, note = _rail_check(conn, cp, target)
                problems += [f"{where[target.spec.key]}: {refusal}"] if refusal else []
                notes += [f"{where[target.spec.key]}: {note}"] if note else []
    problems += [f"cleanup.targets ({key}): not checked: {why}" for key, why in blocked.items()]
    return problems, notes


@contextmanager
def _timezone(conn: psycopg.Connection, timezone: str) -> Iterator[None]:
    """The run's TimeZone while checking: naive timestamps compare as the run compares them."""
    row = conn.execute("SELECT pg_catalog.current_setting('TimeZone')").fetchone()
    assert row is not None
    conn.execute("SELECT pg_catalog.set_config('TimeZone', %s, false)", [timezone])
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_catalog.set_config('TimeZone', %s, false)", [row[0]])


def _rail_check(conn: psycopg.Connection, cp: CleanupPlan, target: TableTarget) -> tuple[str | None, str | None]:
    """The safety rail as the next run applies it (the same block sample, the same limits): why it
    would refuse the target, or a note of how many rows it would delete."""
    limit = rail_limit(target.spec, cp)
    try:
        pred = predicate.build(target.spec, target.times or predicate.resolve_times(conn, target.spec))
        est = sum((estimate.sample(conn, heap, pred) for heap in target.heaps), estimate.Estimate())
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
        return None, f"safety rail not estimated: {first_line(exc)}"
    how = "counted" if est.exact else "estimated from a block sample"
    if limit is None:
        return None, (f"would delete about {est.matching} of {est.rows} rows of {target.display} ({how}); "
                      f"allow_large: no safety rail")
    allowed = rail_allowed(limit, est.rows)
    if est.matching > allowed:
        return "would refuse: " + rail_refusal(target.display, est, allowed, limit, ran=False), None
    return None, (f"would delete about {est.matching} of {est.rows} rows of {target.display} ({how}); "
                  f"the safety rail allows {allowed}")


def alarm_window(opts: CleanupOptions) -> AlarmWindow | None:
    """A cleanup of every target proves the cleanup schedule alive; a dry run or a chosen few do not."""
    return None if opts.dry_run or opts.targets else "cleanup"


JOB = JobSpec(name="cleanup", options=CleanupOptions, run=run, check=check, preflight=preflight,
              alarm_window=alarm_window)
