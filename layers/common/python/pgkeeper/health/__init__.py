"""The health report: problems found before they hurt, as JSON with a severity per finding.

`build_report(conn, plan)` is read-only (a READ ONLY transaction when it starts one, short statement
and lock timeouts), emits one metric per headline number (WraparoundAgePct, IdleInTransactionSessions,
InvalidIndexes, ...) and logs a readable summary. It is the body of the vacuum job's `health` mode,
of `GET /health?detail=1` over the signed URL, and of `pgkeeper health`.
"""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_serializer

from ..log import logger, metrics
from ..plan import Plan
from . import queries
from .checks import CHECKS, SEVERITIES, Check, Ctx, Finding, Severity, worst

__all__ = ["Check", "Finding", "FindingCounts", "HealthReport", "SEVERITIES", "Severity", "build_report", "summarize"]

STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 1_000
"""A check that would wait on a lock (a sequence under ALTER) reports "not checked" instead of waiting."""


class FindingCounts(BaseModel):
    """Findings of each severity worth counting, over every check."""

    model_config = ConfigDict(extra="forbid")

    info: int
    warning: int
    critical: int


class HealthReport(BaseModel):
    """The health report, in its one serialisation `model_dump(mode="json")`: the body of `GET
    /health?detail=1`, the vacuum job's `health` mode and `pgkeeper health --json`."""

    model_config = ConfigDict(extra="forbid")

    status: Severity
    """The worst severity of any check."""
    database: str | None
    server_version: str | None
    generated_at: datetime | None
    """The server's now() when the report began (ISO 8601 text, as Python's isoformat writes it)."""
    duration_s: float
    counts: FindingCounts
    metrics: dict[str, float]
    checks: list[Check]
    summary: list[str] = Field(default_factory=list)
    """Readable lines (see `summarize`)."""

    @field_serializer("generated_at")
    def _iso(self, at: datetime | None) -> str | None:
        return at.isoformat() if at else None


def build_report(conn: psycopg.Connection, plan: Plan) -> HealthReport:
    """Every check of the health report against `conn`'s database; never writes."""
    started = time.monotonic()
    fresh = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if fresh:
            conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, true), "
            "pg_catalog.set_config('lock_timeout', %s, true)",
            [str(STATEMENT_TIMEOUT_MS), str(LOCK_TIMEOUT_MS)],
        )
        with conn.cursor(row_factory=dict_row) as cur:
            settings = cur.execute(queries.SETTINGS).fetchone() or {}
        ctx = Ctx(conn=conn, plan=plan.vacuum, settings=settings)
        checks: list[Check] = []
        for name, fn in CHECKS:
            try:
                with conn.transaction():  # a savepoint: one failed check does not end the others
                    result = fn(ctx)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled,
                    psycopg.errors.InsufficientPrivilege) as exc:
                result = Check.of(name, name.replace("_", " "), f"not checked: {exc.diag.message_primary}",
                                  severity=Severity.INFO)
            checks.extend(result if isinstance(result, list) else [result])

    def found(severity: Severity) -> int:
        return sum(1 for c in checks for i in c.items if i.severity is severity)

    counts = FindingCounts(info=found(Severity.INFO), warning=found(Severity.WARNING),
                           critical=found(Severity.CRITICAL))
    values: dict[str, tuple[float, str]] = {}
    for c in checks:
        values.update(c.metrics)
    report = HealthReport(
        status=worst(c.severity for c in checks),
        database=settings.get("database"),
        server_version=settings.get("server_version"),
        generated_at=settings.get("now"),
        duration_s=round(time.monotonic() - started, 3),
        counts=counts,
        metrics={k: round(float(v), 3) for k, (v, _unit) in values.items()},
        checks=checks,
    )
    report.summary = summarize(report)
    _emit(values, counts)
    logger.info(f"health: {report.status}", extra={"health_summary": report.summary, "counts": counts.model_dump()})
    return report


def _emit(values: dict[str, tuple[float, str]], counts: FindingCounts) -> None:
    for name, (value, unit) in values.items():
        metrics.add_metric(name=name, unit=MetricUnit(unit), value=float(value))
    metrics.add_metric(name="HealthCriticalFindings", unit=MetricUnit.Count, value=counts.critical)
    metrics.add_metric(name="HealthWarningFindings", unit=MetricUnit.Count, value=counts.warning)


def summarize(report: HealthReport, *, verbose: bool = False, per_check: int = 10) -> list[str]:
    """Readable lines: one per check, then its findings of severity info or worse (all with `verbose`)."""
    c = report.counts
    lines = [
        f"health of {report.database} (PostgreSQL {report.server_version}): "
        f"{report.status.upper()} - {c.critical} critical, {c.warning} warning, {c.info} info "
        f"({report.duration_s}s)"
    ]
    for chk in report.checks:
        lines.append(f"  [{chk.severity.upper():8}] {chk.title}: {chk.summary}")
        shown: list[Finding] = [i for i in chk.items if verbose or i.severity is not Severity.OK]
        for i in shown[:per_check]:
            lines.append(f"      {i.severity:8} {i.object}: {i.message}")
        if len(shown) > per_check:
            lines.append(f"      ... and {len(shown) - per_check} more")
    return lines
