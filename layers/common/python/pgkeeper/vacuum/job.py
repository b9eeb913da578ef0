"""The vacuum job: VACUUM / ANALYZE / proactive FREEZE where it is needed, most urgent first, in time.

Modes: `vacuum` (weekly: every need, plus optional rebuild of invalid indexes), `analyze` (frequent:
the plan's hot tables that changed), `health` (read-only: the health report, see pgkeeper.health).
Tables a run could not finish are carried over (pgkeeper.vacuum_backlog) and go first next time.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..errors import EventError
from ..health import HealthReport, build_report
from ..idents import display
from ..jobs import JobContext, JobSpec, Options, SparseModel, SparseReport
from ..log import logger, metrics
from ..metric_names import AlarmWindow
from ..plan import Plan
from ..plan.base import SqlName, column_ident, split_name
from . import backlog, reindex, worker
from .selection import Action, Selection, permitted_sql, select
from .worker import TableItem, TableOutcome


class VacuumOptions(Options):
    mode: Literal["vacuum", "analyze", "health"] = "vacuum"
    tables: list[SqlName] | None = Field(
        None, min_length=1, description="exactly these tables, needed or not (e.g. after a bulk import)"
    )
    reindex_invalid: bool | None = Field(None, description="override the plan's vacuum.reindex_invalid")


def preflight(plan: Plan, opts: VacuumOptions, conn: psycopg.Connection) -> None:
    """`options.tables` must exist (tables or materialized views): a 400 before the run is recorded."""
    if not opts.tables:
        return
    wanted = [split_name(t) for t in opts.tables]
    found = set(conn.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
        "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        [[s for s, _ in wanted], [t for _, t in wanted]]).fetchall())
    missing = sorted(display(*k) for k in wanted if k not in found)
    if missing:
        raise EventError(f"vacuum: tables not found: {', '.join(missing)}", reason="unknown_tables")


class IndexItem(SparseModel):
    """One invalid index in the report (reindex.rebuild_invalid's dicts, validated here)."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"table", "duration_s", "why", "dropped_leftovers"})

    index: str
    table: str | None = None
    outcome: Literal["planned", "rebuilt", "failed", "skipped", "left"]
    duration_s: float | None = None
    why: str | None = None
    dropped_leftovers: list[str] | None = None
    """The transient `_ccnew` indexes a failed rebuild left and we dropped."""


class OutcomeCounts(BaseModel):
    """Tables by how they ended (`planned`, a dry run's, is not counted)."""

    model_config = ConfigDict(extra="forbid")

    frozen: int
    vacuumed: int
    analyzed: int
    skipped: int
    left: int
    gone: int


class UnfinishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str
    outcome: TableOutcome
    why: str | None


class NotPermitted(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: list[str]
    why: str


class VacuumReport(SparseReport):
    """The report of a `vacuum` or `analyze` run; the last four keys only when there is something to say."""

    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "stopped", "invalid_indexes", "not_permitted",
                                                  "not_found"})

    mode: Literal["vacuum", "analyze"]
    dry_run: bool
    considered: int
    selected: int
    counts: OutcomeCounts
    tables: list[TableItem]
    unfinished: list[UnfinishedTable]
    stopped: str | None = None
    invalid_indexes: list[IndexItem] | None = None
    not_permitted: NotPermitted | None = None
    not_found: list[str] | None = None


class HealthModeReport(SparseReport):
    """The report of a `health` run: the health report as it is."""

    mode: Literal["health"] = "health"
    health: HealthReport


def run(ctx: JobContext) -> VacuumReport | HealthModeReport:
    opts: VacuumOptions = ctx.options
    if opts.mode == "health":
        return HealthModeReport(status="succeeded", health=build_report(ctx.db.conn, ctx.plan))
    plan = ctx.plan.vacuum
    main = ctx.db.conn
    only = [split_name(t) for t in opts.tables] if opts.tables else None
    include = [split_name(t) for t in plan.analyze] if opts.mode == "analyze" else []
    entries = backlog.load(main) if only is None else {}
    carried: dict[tuple[str, str], Action] = {
        k: e.action for k, e in entries.items() if opts.mode == "vacuum" or e.action == "analyze"}
    selection = select(main, plan, mode=opts.mode, include=include, only=only, carried=carried)
    if only is not None and selection.not_found:
        raise EventError(f"vacuum: tables not found: {', '.join(selection.not_found)}", reason="unknown_tables")
    for name in selection.not_found:
        logger.warning(f"vacuum.analyze names {name}, which does not exist (run `pgkeeper plan check`)")

    targets = selection.targets
    if opts.dry_run:
        outcome = worker.Outcome(items=[worker.item_for(t) for t in targets])
    else:
        backlog.enqueue(main, ctx.run_id, targets)
        outcome = worker.process(ctx.db, ctx.budget, plan, targets)

    do_reindex = plan.reindex_invalid if opts.reindex_invalid is None else opts.reindex_invalid
    indexes: list[IndexItem] = []
    if opts.mode == "vacuum" and do_reindex:
        if outcome.stopped is None:
            # After a long pass the idle main session may be gone: on_main carries on with a fresh one.
            rebuilt = ctx.db.on_main(lambda c: reindex.rebuild_invalid(ctx.db, c, ctx.budget, plan,
                                                                       dry_run=opts.dry_run))
            indexes = [IndexItem.model_validate(i) for i in rebuilt]
        else:
            indexes = [IndexItem(index=display(i["schema"], i["index"]), outcome="left", why=outcome.stopped)
                       for i in ctx.db.on_main(lambda c: reindex.invalid_indexes(c, plan))]
    return _report(opts, selection, outcome, indexes, attempts={display(*k): e.attempts for k, e in entries.items()})


def _report(opts: VacuumOptions, selection: Selection, outcome: worker.Outcome, indexes: list[IndexItem],
            attempts: dict[str, int]) -> VacuumReport:
    assert opts.mode != "health"
    for item in outcome.items:
        if item.carried_over:
            item.earlier_attempts = attempts.get(item.table, 0)
    counts = OutcomeCounts(frozen=outcome.count("frozen"), vacuumed=outcome.count("vacuumed"),
                           analyzed=outcome.count("analyzed"), skipped=outcome.count("skipped"),
                           left=outcome.count("left"), gone=outcome.count("gone"))
    unfinished = [UnfinishedTable(table=i.table, outcome=i.outcome, why=i.why)
                  for i in outcome.items if i.outcome in ("skipped", "left")]
    failed_indexes = [i for i in indexes if i.outcome in ("failed", "left")]
    report = VacuumReport(
        status="partial" if unfinished or failed_indexes else "succeeded",
        mode=opts.mode,
        dry_run=opts.dry_run,
        considered=selection.considered,
        selected=len(selection.targets),
        counts=counts,
        tables=outcome.items,
        unfinished=unfinished,
        stopped=outcome.stopped or None,
        invalid_indexes=indexes or None,
        not_permitted=NotPermitted(
            tables=selection.not_permitted,
            why="only the table's owner, the database owner or a superuser can vacuum it; "
                "exclude them in vacuum.exclude_tables or run pgkeeper as their owner",
        ) if selection.not_permitted else None,
        not_found=selection.not_found or None,
    )
    if not opts.dry_run:
        _metrics(counts, len(unfinished))
    return report


def _metrics(counts: OutcomeCounts, unfinished: int) -> None:
    done = counts.frozen + counts.vacuumed
    metrics.add_metric(name="TablesVacuumed", unit=MetricUnit.Count, value=done)
    metrics.add_metric(name="TablesAnalyzed", unit=MetricUnit.Count, value=counts.analyzed)
    metrics.add_metric(name="TablesLeftForNextRun", unit=MetricUnit.Count, value=unfinished)


def check(plan: Plan, conn: psycopg.Connection) -> list[str]:
    """The vacuum section against a live database: schemas, hot tables, expected indexes' tables and
    columns, and the tables it names that the database user may not vacuum (the run would skip them)."""
    vac = plan.vacuum
    problems: list[str] = []
    schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_catalog.pg_namespace").fetchall()}
    for i, s in enumerate(vac.schemas):
        if s not in schemas:
            problems.append(f"vacuum.schemas[{i}]: schema {s!r} not found")
    names = [("analyze", i, t) for i, t in enumerate(vac.analyze)]
    names += [("exclude_tables", i, t) for i, t in enumerate(vac.exclude_tables)]
    names += [("expected_indexes", i, e.table) for i, e in enumerate(vac.expected_indexes)]
    wanted = {split_name(t) for _, _, t in names}
    rows = conn.execute(
        sql.SQL("SELECT n.nspname, c.relname, a.attname, {permitted}, pg_catalog.pg_get_userbyid(c.relowner) "
        "FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database() "
        "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relkind IN ('r', 'm', 'p') "
        "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))").format(
            permitted=sql.SQL(permitted_sql("c.relowner", "d.datdba"))),
        [[s for s, _ in wanted], [t for _, t in wanted]],
    ).fetchall()
    columns: dict[tuple[str, str], set[str]] = {}
    owners: dict[tuple[str, str], str | None] = {}
    for s, t, a, permitted, owner in rows:
        columns.setdefault((s, t), set()).add(a)
        owners[(s, t)] = None if permitted else owner
    for section, i, table in names:
        key = split_name(table)
        if key not in columns:
            problems.append(f"vacuum.{section}[{i}]: table {display(*key)} not found")
            continue
        if section == "expected_indexes":
            for j, col in enumerate(vac.expected_indexes[i].columns):
                if column_ident(col) not in columns[key]:
                    problems.append(f"vacuum.expected_indexes[{i}].columns[{j}]: column {col} not found in "
                                    f"{display(*key)}")
        owner = owners[key]
        if owner is not None and (section == "analyze" or (section == "expected_indexes" and vac.reindex_invalid)):
            what = "analyze" if section == "analyze" else "reindex"
            problems.append(f"vacuum.{section}[{i}]: the database user may not {what} {display(*key)}: it is "
                            f"not the table's owner ({owner}), the database's owner, a member of either or a "
                            f"superuser; the run skips it (GRANT {owner} TO <pgkeeper's user>, or change the "
                            f"table's owner)")
    return problems


def alarm_window(opts: VacuumOptions) -> AlarmWindow | None:
    """The weekly VACUUM and the hourly ANALYZE are separate windows (one function, two schedules);
    a dry run, a health-only run or a run of chosen tables proves neither."""
    if opts.dry_run or opts.tables or opts.mode == "health":
        return None
    return "analyze" if opts.mode == "analyze" else "vacuum"


JOB = JobSpec(name="vacuum", options=VacuumOptions, run=run, long_running=True, check=check,
              preflight=preflight, alarm_window=alarm_window)
