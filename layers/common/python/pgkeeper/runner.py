"""Runs one job: options validated, run recorded, advisory lock held, metrics emitted.

Failures are recorded first and then raised, so Lambda's retries, DLQs and alarms all work.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import ValidationError

from . import heartbeat
from .budget import Budget
from .config import get_plan
from .db import Database, locks, runs
from .errors import EventError, JobFailedError, PgkeeperError, first_line
from .events import JobEvent
from .jobs import JobContext, JobReport, JobSpec, as_dict
from .log import logger, metrics
from .metric_names import NAMESPACE, SERVICE, WORK_PROVEN, AlarmWindow
from .plan import Plan, format_errors

# The statuses a job may report, each with its metric; `skipped` is the runner's alone (lock held).
_OUTCOME_METRICS = {"succeeded": "JobSucceeded", "partial": "JobPartial", "failed": "JobFailed"}


def validate_options(spec: JobSpec, options: dict[str, Any]) -> Any:
    try:
        return spec.options.model_validate(options)
    except ValidationError as exc:
        problems = format_errors(exc)
        raise EventError(f"invalid options for {spec.name}: " + "; ".join(problems), reason="bad_options") from None


def preflight(spec: JobSpec, plan: Plan, options: Any, conn: psycopg.Connection) -> None:
    """The caller's options against the plan (and catalog) before any lock, row or metric."""
    if spec.preflight is not None:
        spec.preflight(plan, options, conn)


def execute(spec: JobSpec, request: JobEvent, context: Any = None, *, budget: Budget | None = None) -> dict:
    """Run `spec` for `request`; returns {run_id, job, status, report} or raises.

    preflight -> lock -> run record (a conditional transition) -> job -> outcome -> metrics.
    """
    plan = get_plan()
    options = validate_options(spec, request.options)
    budget = budget or Budget.from_context(context)
    # A fleet member pings only a heartbeat of its own: the plan's is the fan-out's (fleet_outcome),
    # else every member's success would mark the check healthy whatever the others did.
    own_heartbeat = request.database is None or (
        plan.fleet is not None and (m := plan.fleet.member(request.database)) is not None and m.heartbeat is not None)
    if request.database is not None:
        plan = plan.for_database(request.database)  # one fleet member: its own database and overrides
        logger.append_keys(database=request.database)
    if request.shard is not None:
        if spec.worker is None:
            raise EventError(f"{spec.name} has no workers; the event's `shard` is not for it")
        return spec.worker(plan, request.shard, budget)
    if request.database is None and plan.fleet is not None:
        from . import fleet

        return fleet.fan_out(spec, request, plan, options, context, budget)
    run_id = request.run_id or runs.new_run_id()
    logger.append_keys(job=spec.name, run_id=run_id, trigger=request.trigger)
    opts_json = options.model_dump(mode="json", exclude_defaults=True)

    db = Database.from_settings(plan.database, spec.name)
    started = time.monotonic()
    try:
        conn = db.conn
        runs.ensure_schema(conn, cache_key=db.conninfo)
        if request.run_id is not None:
            current = runs.status_of(conn, run_id)
            if current is not None and current not in runs.STARTABLE:
                return _already(spec, run_id, current)
        preflight(spec, plan, options, conn)
        if spec.needs_lock and not locks.try_lock(conn, spec.name):
            reason = f"another {spec.name} run holds the lock on this database"
            runs.record_skipped(conn, run_id, spec.name, request.trigger, request.request_id, opts_json, reason)
            logger.info("skipped: " + reason)
            _count("JobSkipped", spec.name)
            return {"run_id": run_id, "job": spec.name, "status": "skipped", "report": {"reason": reason}}
        try:
            current = runs.start(conn, run_id, spec.name, request.trigger, request.request_id, opts_json,
                                 deadline_s=budget.seconds_to_end())
            if current is not None:
                return _already(spec, run_id, current)
            logger.info("job started", extra={"database": db.where, "options": opts_json})
            window = spec.alarm_window(options) if spec.alarm_window else None
            beat = heartbeat.for_window(plan.heartbeat, window) if own_heartbeat else None
            if beat:
                beat.ping("start", seconds_left=budget.remaining())
            ctx = JobContext(plan=plan, db=db, budget=budget, options=options, run_id=run_id,
                             trigger=request.trigger, member=request.database, invocation=context)
            try:
                report = as_dict(spec.run(ctx))
            except Exception as exc:
                _record_failure(db, run_id, exc)
                _count("JobFailed", spec.name)
                if beat:
                    beat.ping("fail", _describe(exc), seconds_left=budget.remaining())
                if isinstance(exc, PgkeeperError):
                    raise  # its own status and reason code
                raise JobFailedError(f"{spec.name} failed: {_describe(exc)}", run_id=run_id) from exc
        finally:
            if spec.needs_lock:
                locks.unlock(conn, spec.name)  # the session that took it, never a reopened one
        report.setdefault("duration_s", round(time.monotonic() - started, 3))
        try:
            status = JobReport.model_validate(report).status
        except ValidationError:
            message = f"{spec.name} returned unknown status {report.get('status')!r}"
            db.on_main(lambda c: runs.finish(c, run_id, "failed", report, error=message))
            _count("JobFailed", spec.name)
            raise JobFailedError(message, report=report, run_id=run_id) from None
        proven = window if status == "succeeded" else None
        if proven is not None:
            report["alarm_window"] = proven
        db.on_main(lambda c: runs.finish(c, run_id, status, report, alarm_window=proven))
        _count(_OUTCOME_METRICS[status], spec.name)
        if proven is not None:
            _prove(proven, request.database)
        if beat:  # last: the run is recorded and proven whatever the ping service does
            if status == "succeeded":
                beat.ping("success", str(report.get("summary") or f"{spec.name} succeeded"),
                          seconds_left=budget.remaining())
            else:
                beat.ping("fail", _failure_summary(spec.name, report), seconds_left=budget.remaining())
            report["heartbeat"] = beat.outcomes  # in the result and the log line; the row has the run's own
        logger.info(f"job {status}", extra={"report": report})
        _prune(db, plan.database.run_history_days)
        if status == "failed":
            raise JobFailedError(_failure_summary(spec.name, report), report=report, run_id=run_id)
        return {"run_id": run_id, "job": spec.name, "status": status, "report": report}
    finally:
        db.close()


def _already(spec: JobSpec, run_id: str, status: runs.RunStatus) -> dict:
    """A redelivered event (Lambda delivers asynchronous events at least once) for a run that is
    running or finished: nothing is done, nothing is counted, the row is left as it is."""
    logger.info(f"run {run_id} is already {status}: this delivery does nothing",
                extra={"run_status": str(status)})
    return {"run_id": run_id, "job": spec.name, "status": str(status),
            "report": {"duplicate": True, "reason": f"run {run_id} is already {status}; nothing was done"}}


def _prune(db: Database, keep_days: int) -> None:
    try:
        db.on_main(lambda c: runs.prune(c, keep_days))
    except psycopg.Error as exc:  # housekeeping never changes a run's outcome
        logger.warning("could not prune the run history", extra={"error": first_line(exc)})


def _record_failure(db: Database, run_id: str, exc: BaseException) -> None:
    logger.exception("job failed")
    try:
        db.on_main(lambda c: runs.finish(c, run_id, "failed", None, error=_describe(exc)[:4000]))
    except (PgkeeperError, psycopg.Error) as exc_recording:
        # The job's own error is the one to raise; this one must not replace it.
        logger.warning("could not record the failed run", extra={"error": _describe(exc_recording)})


def _describe(exc: BaseException) -> str:
    """`UniqueViolation: duplicate key value ...`: the server's primary message, never its DETAIL,
    which quotes row data into run history, the Lambda error and alarms."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def _failure_summary(job: str, report: dict) -> str:
    """`cleanup failed: deleted 500 rows; 2 targets: 1 done, 1 refused ...: <first errors>`: what the
    run did as a whole comes first, when the job says it, then what went wrong."""
    head = "; ".join(str(e) for e in [report.get("summary"), *(report.get("errors") or [])[:3]] if e)
    return f"{job} failed" + (f": {head}" if head else "")


def _prove(window: AlarmWindow, database: str | None = None) -> None:
    """The dead-man's switch's heartbeat: its own metric (dimensions window, service), not the job's
    dimension set, so the weekly VACUUM and the hourly ANALYZE of one function are told apart.

    A fleet member's run adds the dimension `database`: another metric stream, for the dashboard. The
    window's alarm watches the stream without it, which only the fan-out emits, when every member
    succeeded (fleet_outcome): one member's success cannot hide another's silence."""
    with single_metric(name=WORK_PROVEN, unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE}) as metric:
        metric.add_dimension(name="window", value=window)
        if database is not None:
            metric.add_dimension(name="database", value=database)


def fleet_outcome(spec: JobSpec, status: str, report: Any, window: AlarmWindow | None,
                  beat: heartbeat.Heartbeat | None, budget: Budget) -> None:
    """A fan-out's end: its outcome metric, the window proven when every member succeeded, and the
    plan's heartbeat for the window (success, or fail with the members that did not succeed)."""
    _count(_OUTCOME_METRICS[status], spec.name)
    if status == "succeeded" and window is not None:
        _prove(window)
    if beat:
        beat.ping("success" if status == "succeeded" else "fail", str(report.summary), seconds_left=budget.remaining())
    log = logger.info if status == "succeeded" else logger.error
    log(f"fleet {spec.name} {status}", extra={"report": as_dict(report)})


def _count(name: str, job: str) -> None:
    """One metric per outcome (JobSucceeded, JobPartial, JobFailed, JobSkipped), dimension `job`."""
    if "job" not in metrics.dimension_set:
        metrics.add_dimension(name="job", value=job)
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
