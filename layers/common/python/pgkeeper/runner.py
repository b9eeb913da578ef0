"""Runs one job: options validated, run recorded, advisory lock held, metrics emitted.

Failures are recorded first and then raised, so Lambda's retries, DLQs and alarms all work.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from . import locks, runs
from .budget import Budget
from .config import get_plan
from .db import Database
from .errors import EventError, JobFailedError, PgkeeperError, first_line
from .jobs import JobContext, JobSpec
from .log import logger, metrics
from .plan import format_errors
from .triggers import JobRequest

# The statuses a job may report, each with its metric; `skipped` is the runner's alone (lock held).
_OUTCOME_METRICS = {"succeeded": "JobSucceeded", "partial": "JobPartial", "failed": "JobFailed"}


def validate_options(spec: JobSpec, options: dict[str, Any]) -> Any:
    try:
        return spec.options.model_validate(options)
    except ValidationError as exc:
        problems = format_errors(exc)
        raise EventError(f"invalid options for {spec.name}: " + "; ".join(problems), reason="bad_options") from None


def execute(spec: JobSpec, request: JobRequest, context: Any = None, *, budget: Budget | None = None) -> dict:
    """Run `spec` for `request`; returns {run_id, job, status, report} or raises."""
    plan = get_plan()
    options = validate_options(spec, request.options)
    run_id = request.run_id or runs.new_run_id()
    budget = budget or Budget.from_context(context)
    logger.append_keys(job=spec.name, run_id=run_id, trigger=request.trigger)
    opts_json = options.model_dump(mode="json", exclude_defaults=True)

    db = Database.from_settings(plan.database, spec.name)
    started = time.monotonic()
    try:
        conn = db.conn
        runs.ensure_schema(conn, cache_key=db.conninfo)
        if spec.needs_lock and not locks.try_lock(conn, spec.name):
            reason = f"another {spec.name} run holds the lock on this database"
            runs.record_skipped(conn, run_id, spec.name, request.trigger, request.request_id, opts_json, reason)
            logger.info("skipped: " + reason)
            _count("JobSkipped", spec.name)
            return {"run_id": run_id, "job": spec.name, "status": "skipped", "report": {"reason": reason}}
        try:
            runs.start(conn, run_id, spec.name, request.trigger, request.request_id, opts_json)
            logger.info("job started", extra={"database": db.where, "options": opts_json})
            ctx = JobContext(plan=plan, db=db, budget=budget, options=options, run_id=run_id,
                             trigger=request.trigger)
            try:
                report = spec.run(ctx)
            except PgkeeperError as exc:
                _record_failure(db, run_id, exc)
                _count("JobFailed", spec.name)
                raise
            except Exception as exc:
                _record_failure(db, run_id, exc)
                _count("JobFailed", spec.name)
                raise JobFailedError(f"{spec.name} failed: {_describe(exc)}", run_id=run_id) from exc
        finally:
            if spec.needs_lock:
                locks.unlock(conn, spec.name)  # the session that took it, never a reopened one
        status = report.get("status", "succeeded")
        report.setdefault("duration_s", round(time.monotonic() - started, 3))
        metric = _OUTCOME_METRICS.get(status)
        if metric is None:
            message = f"{spec.name} returned unknown status {status!r}"
            runs.finish(db.conn, run_id, "failed", report, error=message)
            _count("JobFailed", spec.name)
            raise JobFailedError(message, report=report, run_id=run_id)
        runs.finish(db.conn, run_id, status, report)
        _count(metric, spec.name)
        logger.info(f"job {status}", extra={"report": report})
        if status == "failed":
            raise JobFailedError(_failure_summary(spec.name, report), report=report, run_id=run_id)
        return {"run_id": run_id, "job": spec.name, "status": status, "report": report}
    finally:
        db.close()


def _record_failure(db: Database, run_id: str, exc: BaseException) -> None:
    logger.exception("job failed")
    try:
        runs.finish(db.conn, run_id, "failed", None, error=_describe(exc)[:4000])
    except (PgkeeperError, psycopg.Error) as exc_recording:
        # The job's own error is the one to raise; this one must not replace it.
        logger.warning("could not record the failed run", extra={"error": _describe(exc_recording)})


def _describe(exc: BaseException) -> str:
    """`UniqueViolation: duplicate key value ...`: the server's primary message, never its DETAIL,
    which quotes row data into run history, the Lambda error and alarms."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def _failure_summary(job: str, report: dict) -> str:
    errors = report.get("errors") or []
    head = "; ".join(str(e) for e in errors[:3])
    return f"{job} failed" + (f": {head}" if head else "")


def _count(name: str, job: str) -> None:
    """One metric per outcome (JobSucceeded, JobPartial, JobFailed, JobSkipped), dimension `job`."""
    if "job" not in metrics.dimension_set:
        metrics.add_dimension(name="job", value=job)
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
