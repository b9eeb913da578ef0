"""The refresh job: bring the plan's materialized views up to date, repairing the ones that drifted.

For each view, in dependency order (a view built on another refreshes after it):
1. missing, or its stored definition differs from its definition file (compared as Postgres
   deparses both, see `refresh.drift`), or `repair` asked for → recreate it and the views built on
   it in one transaction (`refresh.repair`); the new view is built with its data.
2. otherwise REFRESH ... CONCURRENTLY when it can (populated, a valid unique index on plain
   columns, no WHERE), else a plain REFRESH under lock_timeout;
3. a refresh that fails because something it reads changed (SQLSTATE: undefined column, table,
   function...) gets one repair from its definition file.
One view failing never stops the others. Each unit of work is its own short transaction on a
connection of its own, bounded by the Lambda deadline; views not reached are reported `not_done`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import cache
from ..budget import Budget
from ..cache import CacheReport, NothingToClear
from ..errors import EventError, PgkeeperError, first_line
from ..idents import QualifiedName, display, qualify
from ..jobs import JobContext, JobOutcome, JobReport, JobSpec, Options, TerseModel
from ..log import logger, metrics
from ..metric_names import AlarmWindow
from ..plan import Plan, ViewSpec
from ..plan.base import SqlName
from .catalog import (
    Catalog,
    Relation,
    concurrent_keys,
    key_has_nulls,
    relkind,
    schema_exists,
    unique_index_hint,
)
from .definitions import Definition, DefinitionError, load_definition
from .drift import Drift, IndexCarry, ScratchUnavailable, compare, compare_on, try_definition
from .repair import DependantNotRecreatable, RepairPlan, RepairStepError, plan_repair, repair
from .session import DeadlineReached, Session

MIN_START_S = 1.0
"""Don't start another view with less than this left (the run still has to be recorded)."""

# A refresh failing with one of these means something the view reads changed shape since it was
# created: recreating it from its definition file may fix it, so one repair is tried.
SCHEMA_CHANGED = (
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedObject,
    psycopg.errors.DatatypeMismatch,
    psycopg.errors.WrongObjectType,
    psycopg.errors.CannotCoerce,
)


class RefreshOptions(Options):
    views: list[SqlName] | None = Field(None, description="refresh only these (names as in the plan)")
    repair: bool = Field(False, description="recreate every selected view that has a definition file")
    clear_cache: bool = Field(False, description="only clear the plan's cache keys; refresh nothing")

    @model_validator(mode="after")
    def _clear_cache_runs_alone(self) -> RefreshOptions:
        if self.clear_cache and (self.views or self.repair or self.dry_run):
            raise ValueError("clear_cache runs alone: it cannot be combined with views, repair or dry_run")
        return self


@dataclass
class ViewTarget(QualifiedName):
    schema: str
    name: str
    spec: ViewSpec
    definition: Definition | None = None
    definition_error: str | None = None


ViewOutcome = Literal["refreshed", "repaired", "failed", "skipped", "not_done"]
"""How one view ended: `skipped` is a dry run's, `not_done` a view the deadline left for next time."""

RefreshMode = Literal["concurrent", "plain"]
ViewMode = Literal["concurrent", "plain", "repaired"]


class IndexNotCarried(BaseModel):
    """An index of the old view that could not be re-created on the repaired one (it was dropped with
    the old view): `ddl` re-creates it once the reason is dealt with."""

    model_config = ConfigDict(extra="forbid")

    name: str
    ddl: str
    why: str


class ViewReport(TerseModel):
    """One view in the report; `repaired_because`, `planned` and the repair's details only when there
    is something to say."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SPARSE: ClassVar[frozenset[str]] = frozenset({"repaired_because", "planned", "indexes_carried_over",
                                                  "indexes_not_carried", "views_recreated", "repair_blocked"})

    name: str
    mode: ViewMode | None = None
    """What was used, or in a dry run what would be."""
    duration_ms: int | None = None
    rows: int | None = None
    outcome: ViewOutcome = "not_done"
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    repaired_because: str | None = None
    planned: str | None = None
    """Dry runs: what a real run would do."""
    indexes_carried_over: list[str] = Field(default_factory=list)
    """Indexes of the old view not in its definition file (added by hand), re-created on the new one."""
    indexes_not_carried: list[IndexNotCarried] = Field(default_factory=list)
    """Such indexes that could not be (e.g. their column is gone): by name and DDL, never lost silently."""
    views_recreated: list[str] = Field(default_factory=list)
    """Plain views built on it, recreated from their stored definitions with it."""
    repair_blocked: str | None = None
    """It needs a repair that cannot be made: why, and what to run; it was refreshed as it is."""


class CacheNotRun(BaseModel):
    """`report.cache` when invalidation could not even start (e.g. the cache's secret unreadable)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["failed"] = "failed"
    error: str


class RefreshReport(JobReport, TerseModel):
    """A refresh run's report, serialised as the dict it replaced: `stopped_at_deadline` only when it
    did, `duration_s` only once the runner adds the run's own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "stopped_at_deadline"})
    ORDER: ClassVar[tuple[str, ...]] = ("status", "dry_run", "views", "refreshed", "repaired", "failed",
                                        "not_done", "errors", "cache", "stopped_at_deadline")

    dry_run: bool
    views: list[ViewReport]
    """In processing order: views rebuilt together with another one follow it; views not reached last."""
    refreshed: int
    repaired: int
    failed: int
    not_done: list[str]
    cache: CacheReport | CacheNotRun | None = None
    """None: no view that refreshed names cache keys (or a dry run)."""
    stopped_at_deadline: bool = False


def preflight(plan: Plan, opts: RefreshOptions, conn: psycopg.Connection) -> None:
    """`options.views` must name views the run would refresh: the plan's list, else the matviews in
    the plan's schemas (one catalog read). Checked before the run is recorded."""
    if not opts.views:
        return
    if plan.refresh.views:
        known = {qualify(v.name): v.name for v in plan.refresh.views}
        where = "the plan's refresh.views"
    else:
        rows = conn.execute(
            "SELECT schemaname, matviewname FROM pg_catalog.pg_matviews WHERE schemaname = ANY(%s) "
            "ORDER BY 1, 2", [plan.refresh.schema_names]).fetchall()
        known = {(s, n): display(s, n) for s, n in rows}
        where = f"schemas {', '.join(plan.refresh.schema_names)}"
    unknown = [v for v in opts.views if qualify(v) not in known]
    if unknown:
        raise EventError(f"options.views names views that are not in {where}: {', '.join(unknown)} "
                         f"(known: {', '.join(known.values()) or 'none'})", reason="unknown_views")


def run(ctx: JobContext) -> RefreshReport | CacheReport | NothingToClear:
    opts: RefreshOptions = ctx.options
    if opts.clear_cache:
        return cache.clear_all(ctx.plan, ctx.budget)  # its report carries the status
    # Views are refreshed on a budget that keeps back what invalidating their cache keys needs, so
    # a view that refreshed never keeps stale keys because the next view used up the time.
    views_budget = ctx.budget.sooner(0 if opts.dry_run else cache.reserve_s(ctx.plan))
    session = Session(ctx.db, views_budget)
    try:
        return _Refresh(ctx, session, views_budget).run()
    finally:
        session.close()


class _Refresh:
    def __init__(self, ctx: JobContext, session: Session, views_budget: Budget) -> None:
        self.plan = ctx.plan
        self.opts: RefreshOptions = ctx.options
        self.budget = views_budget
        self.cache_budget = ctx.budget
        self.session = session
        self.results: dict[tuple[str, str], ViewReport] = {}
        self.specs: dict[tuple[str, str], ViewSpec] = {}
        self.definitions: dict[tuple[str, str], Definition] = {}
        self.drifts: dict[tuple[str, str], Drift] = {}
        self.catalog = Catalog()

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> RefreshReport:
        self.catalog = Catalog.load(self.session.conn)
        order = self._ordered(self._targets())
        stopped = False
        for t in order:
            if t.key in self.results:
                continue  # already rebuilt together with a view it is built on
            if self.budget.exhausted(MIN_START_S):
                stopped = True
                break
            try:
                self._one(t)
            except DeadlineReached:
                self.results[t.key] = ViewReport(name=t.display, error="stopped at the deadline")
                stopped = True
                break
            if self.results[t.key].outcome == "not_done":
                stopped = True
                break
        for t in order:
            self.results.setdefault(t.key, ViewReport(name=t.display))
        return self._report(stopped)

    def _targets(self) -> list[ViewTarget]:
        views = self.plan.refresh.views
        if views:
            every = [self._target(spec) for spec in views]
        else:
            every = [ViewTarget(r.schema, r.name, ViewSpec(name=r.display))
                     for r in self.catalog.matviews_in(self.plan.refresh.schema_names)]
        for t in every:
            self.specs[t.key] = t.spec
            if t.definition is not None:
                self.definitions[t.key] = t.definition
        if not self.opts.views:
            return every
        wanted = [qualify(v) for v in self.opts.views]
        known = {t.key for t in every}
        unknown = [v for v, key in zip(self.opts.views, wanted, strict=True) if key not in known]
        if unknown:
            where = "the plan's refresh.views" if views else f"schemas {', '.join(self.plan.refresh.schema_names)}"
            raise EventError(f"options.views names views that are not in {where}: {', '.join(unknown)} "
                             f"(known: {', '.join(t.display for t in every) or 'none'})", reason="unknown_views")
        return [t for t in every if t.key in set(wanted)]

    def _target(self, spec: ViewSpec) -> ViewTarget:
        schema, name = qualify(spec.name)
        t = ViewTarget(schema, name, spec)
        if spec.definition is not None:
            try:
                t.definition = load_definition(spec.definition, schema, name)
            except DefinitionError as exc:
                t.definition_error = f"{spec.definition.name}: {exc}"
        return t

    def _ordered(self, targets: list[ViewTarget]) -> list[ViewTarget]:
        """Existing views in dependency order; missing ones (to be created) after them, as listed."""
        by_oid: dict[int, ViewTarget] = {}
        missing: list[ViewTarget] = []
        for t in targets:
            rel = self.catalog.find(t.schema, t.name)
            if rel is not None:
                by_oid[rel.oid] = t
            else:
                missing.append(t)
        return [by_oid[o] for o in self.catalog.order(list(by_oid))] + missing

    # -- one view --------------------------------------------------------------------------------

    def _one(self, t: ViewTarget) -> None:
        conn = self.session.conn
        rel = self.catalog.find(t.schema, t.name)
        report = ViewReport(name=t.display)
        self.results[t.key] = report
        if t.definition_error:
            report.warnings.append(f"definition file unusable: {t.definition_error}")
        reason: str | None = None
        if rel is not None and rel.kind != "m":
            return self._fail(report, f"{t.display} is a view, not a materialized view: nothing to refresh")
        if rel is None:
            kind = relkind(conn, t.schema, t.name)
            if kind is not None:
                return self._fail(report, f"{t.display} is a {kind}, not a materialized view")
            if t.definition is None:
                return self._fail(report, f"{t.display} does not exist and has no definition file to create it from")
            reason = "it did not exist"
        elif t.definition is not None:
            reason = "repair requested" if self.opts.repair else self._drift(t, rel, report)
            if report.error is not None:  # the check itself failed (lock, timeout, deadline)
                return None
        elif self.opts.repair:
            report.warnings.append("repair requested, but it has no definition file: refreshed as it is")

        if reason is not None:
            return self._repair(t, reason)
        assert rel is not None
        return self._refresh(t, rel, report)

    def _drift(self, t: ViewTarget, rel: Relation, report: ViewReport) -> str | None:
        """Why the stored view must be recreated from its file, or None."""
        assert t.definition is not None
        try:
            drift = compare(self.session, rel, t.definition)
        except ScratchUnavailable as exc:
            report.warnings.append(f"cannot compare it with its definition file ({exc}: pgkeeper needs CREATE on "
                                   "the database for a scratch schema); refreshed as it is")
            return None
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            report.outcome, report.error = self._classify(exc, t.display, "the check of its definition")
            return None
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            # The file no longer applies (e.g. written for a migration not yet run): keep the
            # stored view working and say so; `pgkeeper plan check` shows the same problem.
            report.warnings.append(f"{t.definition.path.name} does not apply to the current schema "
                                   f"({_pg_message(exc)}); refreshed with its stored definition")
            return None
        self.drifts[t.key] = drift
        return "; ".join(drift.reasons) if drift.drifted else None

    def _refresh(self, t: ViewTarget, rel: Relation, report: ViewReport, may_repair: bool = True) -> None:
        conn = self.session.conn
        keys = concurrent_keys(conn, rel.oid) if t.spec.concurrently is not False else []
        mode, error = self._mode(t, rel, keys, report)
        report.mode = mode
        if error:
            return self._fail(report, error)
        if mode == "concurrent" and self._nulls_in_key(rel, keys[0]):
            report.warnings.append(
                f"unique key {keys[0].index} ({', '.join(keys[0].columns)}) holds NULLs: those rows never match "
                "and are rewritten on every concurrent refresh; make the key columns non-null in the query")
        if self.opts.dry_run:
            report.outcome = "skipped"
            report.planned = f"refresh {'concurrently' if mode == 'concurrent' else '(plain, blocks readers)'}"
            return None
        started = time.monotonic()
        statement = sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
            sql.SQL("CONCURRENTLY ") if mode == "concurrent" else sql.SQL(""), rel.ident)
        try:
            with self.session.transaction():
                conn.execute(statement)
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            report.duration_ms = _ms(started)
            if isinstance(exc, SCHEMA_CHANGED) and t.definition is not None and may_repair:
                logger.warning("refresh failed on a changed schema; repairing", extra={"view": t.display})
                return self._repair(t, f"its refresh failed: {_pg_message(exc)}", first_error=_pg_message(exc))
            report.outcome, report.error = self._classify(exc, t.display, f"{mode} refresh")
            return None
        report.duration_ms = _ms(started)
        report.outcome = "refreshed"
        report.rows = self._count(rel)
        return None

    def _mode(self, t: ViewTarget, rel: Relation, keys: list,
              report: ViewReport) -> tuple[RefreshMode | None, str | None]:
        """CONCURRENTLY when possible; `concurrently: true` on a view that cannot is an error, not a
        silent blocking refresh: the plan promised its readers would never wait."""
        if t.spec.concurrently is False:
            return "plain", None
        if not rel.populated:
            report.warnings.append("not populated yet: its first refresh is a plain one "
                                   "(CONCURRENTLY needs existing data to compare against)")
            return "plain", None
        if keys:
            return "concurrent", None
        if t.spec.concurrently:
            return None, concurrently_ineligible(self.session.conn, rel)
        report.warnings.append(f"plain REFRESH (blocks readers while it runs): {NO_KEY}; "
                               "set concurrently: false to accept that and silence this warning")
        return "plain", None

    def _nulls_in_key(self, rel: Relation, key: Any) -> bool:
        """Only for a warning: if the question cannot be answered (a lock, a timeout) the refresh
        itself goes ahead and reports whatever stops it."""
        try:
            with self.session.transaction() as conn:
                return key_has_nulls(conn, rel, key)
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            return False

    def _count(self, rel: Relation) -> int | None:
        """Rows after the refresh, counted after its commit (a plain refresh's lock is gone by then)."""
        try:
            with self.session.transaction() as conn:
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(rel.ident)).fetchone()
                return int(row[0]) if row else None
        except DeadlineReached:
            return None
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            return None

    def _repair(self, t: ViewTarget, reason: str, first_error: str | None = None) -> None:
        report = self.results[t.key]
        plan = plan_repair(self.catalog, t.schema, t.name, self.definitions)
        others = [m.display for m in plan.members[1:] if not m.plain_view]
        views = [m.display for m in plan.members if m.plain_view]
        if plan.blockers:
            also = "".join(f"; {v} (view: would be recreated from its stored definition)" for v in views)
            message = (f"needs repair ({reason}) but it cannot be recreated without dropping "
                       f"{', '.join(plan.blockers)}; give them definition files in refresh.views (pgkeeper never "
                       f"drops a view it cannot recreate){also}")
            self._blocked(t, report, message)
            if report.outcome != "not_done":  # refreshed as it is meanwhile, but the plan must change
                self._fail(report, message + (" (refreshed with its stored definition meanwhile)"
                                              if report.outcome == "refreshed" else ""))
            return None
        if self.opts.dry_run:
            report.mode, report.outcome, report.repaired_because = "repaired", "skipped", reason
            report.planned = "recreate from its definition file" + (f" with {', '.join(others)}" if others else "")
            if views:
                report.planned += f"; recreate the views {', '.join(views)} from their stored definitions"
            self._predict_indexes(report, plan.members[0])
            for m in plan.members[1:]:
                if m.plain_view:
                    continue
                dep = self.results.setdefault(m.key, ViewReport(
                    name=m.display, mode="repaired", outcome="skipped",
                    repaired_because=f"it is built on {t.display}, which would be repaired",
                    planned=f"recreate from its definition file with {t.display}"))
                self._predict_indexes(dep, m)
            return None
        try:
            result = repair(self.session, plan)
        except DependantNotRecreatable as exc:
            return self._blocked(t, report, (
                f"needs repair ({reason}) but the view {exc.view} built on it cannot be recreated from its stored "
                f"definition ({exc.why}); nothing was changed. To finish the repair: save its definition "
                f"(SELECT pg_get_viewdef('{exc.view}'::regclass, true)), DROP VIEW {exc.view}; run the refresh "
                f"job (it repairs {t.display}), then re-create {exc.view} for the new columns"), partial=True)
        except RepairStepError as exc:
            return self._repair_failed(report, exc.cause, f"repair ({exc.step})", first_error, plan)
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            return self._repair_failed(report, exc, "repair", first_error, plan)
        for i, m in enumerate(plan.members):
            if m.plain_view:
                continue
            not_carried = [IndexNotCarried(name=n.name, ddl=n.ddl, why=n.why)
                           for n in result.not_carried.get(m.key, [])]
            self.results[m.key] = ViewReport(
                name=m.display, mode="repaired", outcome="repaired", rows=result.rows.get(m.key),
                duration_ms=result.duration_ms if i == 0 else None,
                warnings=(report.warnings if i == 0 else []) + result.warnings.get(m.key, [])
                + [_not_carried_warning(n) for n in not_carried],
                repaired_because=reason if i == 0 else f"it is built on {t.display}, which was repaired",
                indexes_carried_over=result.carried.get(m.key, []), indexes_not_carried=not_carried,
                views_recreated=views if i == 0 else [],
            )
        logger.info("repaired", extra={"view": t.display, "with": others + views, "because": reason})
        self.catalog = Catalog.load(self.session.conn)
        return None

    def _blocked(self, t: ViewTarget, report: ViewReport, message: str, partial: bool = False) -> None:
        """The repair cannot be made: refresh the view with its stored definition so it is never left
        stale, and say why and what to run (`repair_blocked` makes the run partial)."""
        report.repair_blocked = message
        rel = self.catalog.find(t.schema, t.name)
        if rel is None:
            return self._fail(report, message)
        logger.warning("repair blocked; refreshing with the stored definition", extra={"view": t.display})
        self._refresh(t, rel, report, may_repair=False)
        return None

    def _predict_indexes(self, report: ViewReport, m: Any) -> None:
        """Dry runs: the hand-added indexes a repair would carry over, or could not."""
        if m.old is None or m.definition is None:
            return
        drift = self.drifts.get(m.key)
        if drift is None:
            try:
                drift = compare(self.session, m.old, m.definition)
            except (ScratchUnavailable, DeadlineReached):
                return
            except psycopg.Error as exc:
                if exc.sqlstate is None:
                    raise
                return
        _apply_carry(report, drift.indexes)
        if drift.indexes.carried:
            report.planned = f"{report.planned}; carry over the indexes {', '.join(drift.indexes.carried)}"
        if drift.indexes.not_carried:
            report.planned = (f"{report.planned}; the indexes {', '.join(n.name for n in drift.indexes.not_carried)} "
                              "cannot be carried over (see indexes_not_carried)")

    def _repair_failed(self, report: ViewReport, exc: psycopg.Error, doing: str, first_error: str | None,
                       plan: RepairPlan) -> None:
        """The repair's transaction rolled back: nothing was dropped or created."""
        outcome, message = self._classify(exc, report.name, doing)
        if first_error:
            message = f"refresh failed ({first_error}); repair from its definition file failed too: {message}"
        if outcome == "failed":
            message += "; the old view is unchanged" if plan.members[0].old else "; nothing was created"
        report.mode, report.outcome, report.error = "repaired", outcome, message

    # -- outcomes --------------------------------------------------------------------------------

    def _fail(self, report: ViewReport, error: str) -> None:
        report.outcome, report.error = "failed", error

    def _classify(self, exc: psycopg.Error, view: str, doing: str) -> tuple[Literal["failed", "not_done"], str]:
        """(outcome, message) for a server error, decided by SQLSTATE."""
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return "failed", (f"lock not granted within {self.session.lock_timeout_ms} ms during {doing}: another "
                              f"session holds a conflicting lock on {view} or on a table it reads (SQLSTATE 55P03)")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            if self.session.bounded_by_deadline:
                return "not_done", f"stopped at the deadline during {doing}: not enough time left in this invocation"
            return "failed", (f"statement_timeout ({self.session.plan_statement_ms // 1000} s, "
                              f"database.statement_timeout_s) reached during {doing}")
        return "failed", f"{doing} failed: {_pg_message(exc)}"

    def _report(self, stopped: bool) -> RefreshReport:
        # Processing order: views rebuilt together with another one follow it; views not reached last.
        reports = list(self.results.values())
        failed = [r for r in reports if r.outcome == "failed"]
        not_done = [r.name for r in reports if r.outcome == "not_done"]
        errors = [f"{r.name}: {r.error}" for r in failed]
        cache_report: CacheReport | CacheNotRun | None = None
        if not self.opts.dry_run:
            done = [self.specs.get(key) or ViewSpec(name=r.name)
                    for key, r in self.results.items() if r.outcome in ("refreshed", "repaired")]
            if done:
                cache_report = self._invalidate(done)
            self._metrics(reports)
        status: JobOutcome = "succeeded"
        if not_done:
            status = "partial"
            errors.append(f"stopped before the deadline; not done: {', '.join(not_done)}")
        if cache_report is not None and cache_report.status == "failed":
            status = "partial"
            detail = cache_report.error if isinstance(cache_report, CacheNotRun) else cache_report.errors
            errors.append("views refreshed, but cache invalidation failed: " + str(detail or "see report.cache"))
        blocked = [r for r in reports if r.repair_blocked and r.outcome != "failed"]
        if blocked:
            status = "partial"
            errors += [f"{r.name}: repair blocked: {r.repair_blocked}" for r in blocked]
        if failed:
            status = "failed"
        return RefreshReport(
            status=status,
            dry_run=self.opts.dry_run,
            views=reports,
            refreshed=sum(r.outcome == "refreshed" for r in reports),
            repaired=sum(r.outcome == "repaired" for r in reports),
            failed=len(failed),
            not_done=not_done,
            errors=errors,
            cache=cache_report,
            stopped_at_deadline=stopped,
        )

    def _invalidate(self, views: list[ViewSpec]) -> CacheReport | CacheNotRun | None:
        try:
            return cache.invalidate_after_refresh(self.plan, views, self.cache_budget)
        except PgkeeperError as exc:
            # The refresh is done and recorded; an unreachable cache makes the run partial, not lost.
            logger.warning("cache invalidation failed", extra={"error": str(exc)})
            return CacheNotRun(error=f"{exc.reason}: {exc}")

    def _metrics(self, reports: list[ViewReport]) -> None:
        for name, outcome in (("ViewsRefreshed", "refreshed"), ("ViewsRepaired", "repaired"),
                              ("ViewsFailed", "failed")):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=sum(r.outcome == outcome for r in reports))


NO_KEY = "it has no valid unique index on plain columns without WHERE, which CONCURRENTLY needs"


def concurrently_ineligible(conn: psycopg.Connection, rel: Relation) -> str:
    """The error for `concurrently: true` on a view without a key (the run's and `plan check`'s)."""
    return (f"concurrently: true, but {NO_KEY}; add one to its definition file (e.g. "
            f"{unique_index_hint(conn, rel)}), or set concurrently: false to accept a refresh that blocks readers")


def _apply_carry(report: ViewReport, carry: IndexCarry) -> None:
    report.indexes_carried_over = list(carry.carried)
    report.indexes_not_carried = [IndexNotCarried(name=n.name, ddl=n.ddl, why=n.why) for n in carry.not_carried]


def _not_carried_warning(n: IndexNotCarried) -> str:
    return f"index {n.name} was not carried over ({n.why}); it was: {n.ddl}"


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _pg_message(exc: psycopg.Error) -> str:
    primary = first_line(exc)
    return f"{primary} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else primary


# -- pgkeeper plan check ---------------------------------------------------------------------------


def check(plan: Plan, conn: psycopg.Connection) -> list[str]:
    """`check_report`'s problems (the JobSpec's check)."""
    return check_report(plan, conn)[0]


def check_report(plan: Plan, conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """The refresh section against a live database: schemas exist, each view exists or can be created,
    every definition file applies (tried in a transaction that is rolled back), a stored view that
    drifted from its file (and what its repair would change), and `concurrently: true` on a view
    with no unique key, judged as the run judges them (`drift.compare`, `catalog.concurrent_keys`)."""
    problems: list[str] = []
    notes: list[str] = []
    catalog = Catalog.load(conn)
    definitions: dict[tuple[str, str], Definition] = {}
    for spec in plan.refresh.views:
        if spec.definition is not None:
            with contextlib.suppress(DefinitionError):  # reported below, view by view
                definitions[qualify(spec.name)] = load_definition(spec.definition, *qualify(spec.name))
    for i, schema in enumerate(plan.refresh.schema_names):
        if not plan.refresh.views and not schema_exists(conn, schema):
            problems.append(f"refresh.schemas[{i}]: schema {schema!r} does not exist")
    for i, spec in enumerate(plan.refresh.views):
        schema, name = qualify(spec.name)
        where = f"refresh.views[{i}] ({display(schema, name)})"
        if not schema_exists(conn, schema):
            problems.append(f"{where}: schema {schema!r} does not exist")
            continue
        kind = relkind(conn, schema, name)
        if kind not in (None, "materialized view"):
            problems.append(f"{where}: is a {kind}, not a materialized view")
            continue
        rel = catalog.find(schema, name)
        if spec.definition is None:
            if kind is None:
                problems.append(f"{where}: does not exist and has no definition file to create it from")
            elif rel is not None and spec.concurrently and not concurrent_keys(conn, rel.oid):
                problems.append(f"{where}: {concurrently_ineligible(conn, rel)}")
            continue
        try:
            definition = load_definition(spec.definition, schema, name)
        except DefinitionError as exc:
            problems.append(f"{where}.definition: {spec.definition.name}: {exc}")
            continue
        try:
            if rel is None:
                try_definition(conn, definition, schema, name)
            else:
                found, said = _check_drift(conn, catalog, rel, spec, definition, definitions, where)
                problems += found
                notes += said
        except ScratchUnavailable as exc:
            problems.append(f"{where}.definition: cannot be tried ({exc}): pgkeeper's role needs CREATE on the "
                            "database for a scratch schema")
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            problems.append(f"{where}.definition: {spec.definition.name} does not apply: {_pg_message(exc)}")
    return problems + cache.check(plan), notes  # views naming cache keys need a cache that answers


def _check_drift(conn: psycopg.Connection, catalog: Catalog, rel: Relation, spec: ViewSpec, definition: Definition,
                 definitions: dict[tuple[str, str], Definition], where: str) -> tuple[list[str], list[str]]:
    """Drift of a stored view from its file, what its repair would change, and CONCURRENTLY
    eligibility (of the view as it is, or as a repair would build it). A drift the next run repairs
    losing nothing is a note; one whose repair would lose an index or is blocked is a problem."""
    problems: list[str] = []
    notes: list[str] = []
    drift = compare_on(conn, rel, definition)
    keys = drift.keys_after if drift.drifted else concurrent_keys(conn, rel.oid)
    if drift.drifted:
        repair_plan = plan_repair(catalog, rel.schema, rel.name, definitions)
        changes = [f"drifted from {definition.path.name} ({'; '.join(drift.reasons)}): the next refresh repairs "
                   "it (recreates it from its definition file)"]
        with_it = [m.display for m in repair_plan.members[1:] if not m.plain_view]
        views = [m.display for m in repair_plan.members if m.plain_view]
        if with_it:
            changes.append(f"with {', '.join(with_it)}")
        if views:
            changes.append(f"recreating the views {', '.join(views)} from their stored definitions")
        if drift.indexes.carried:
            changes.append(f"carrying over the indexes {', '.join(drift.indexes.carried)}")
        changes += [f"index {n.name} cannot be carried over ({n.why}): {n.ddl}" for n in drift.indexes.not_carried]
        if repair_plan.blockers:
            changes.append(f"but the repair is blocked by {', '.join(repair_plan.blockers)}: it would be refreshed "
                           "with its stored definition instead")
        hazard = bool(drift.indexes.not_carried or repair_plan.blockers)
        (problems if hazard else notes).append(f"{where}: " + "; ".join(changes))
    if spec.concurrently and not keys:
        problems.append(f"{where}: {concurrently_ineligible(conn, rel)}"
                        + (" (as its definition file would build it)" if drift.drifted else ""))
    return problems, notes


def alarm_window(opts: RefreshOptions) -> AlarmWindow | None:
    """A refresh of the plan's views proves the refresh schedule alive; a dry run or a cache-only run does not."""
    return None if opts.dry_run or opts.clear_cache else "refresh"


JOB = JobSpec(name="refresh", options=RefreshOptions, run=run, check=check, preflight=preflight,
              alarm_window=alarm_window)
