"""The health report: problems found before they hurt, as JSON with a severity per finding.

`build_report(conn, plan)` is read-only (a READ ONLY transaction when it starts one, short statement
and lock timeouts), emits one metric per headline number (WraparoundAgePct, IdleInTransactionSessions,
InvalidIndexes, ...) and logs a readable summary. It is the body of the vacuum job's `health` mode,
of `GET /health?detail=1` over the signed URL, and of `pgkeeper health`.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ..log import logger, metrics
from ..plan import Plan
from . import queries
from .checks import CHECKS, SEVERITIES, Check, Ctx, worst

__all__ = ["build_report", "summarize", "SEVERITIES"]

STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 1_000
"""A check that would wait on a lock (a sequence under ALTER) reports "not checked" instead of waiting."""


def build_report(conn: psycopg.Connection, plan: Plan) -> dict[str, Any]:
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
                result = Check(name, name.replace("_", " "), f"not checked: {exc.diag.message_primary}",
                               severity="info")
            checks.extend(result if isinstance(result, list) else [result])

    out = [c.as_dict() for c in checks]
    counts = {s: sum(1 for c in out for i in c["items"] if i["severity"] == s) for s in SEVERITIES[1:]}
    values: dict[str, tuple[float, str]] = {}
    for c in checks:
        values.update(c.metrics)
    report: dict[str, Any] = {
        "status": worst([c["severity"] for c in out]),
        "database": settings.get("database"),
        "server_version": settings.get("server_version"),
        "generated_at": settings["now"].isoformat() if settings.get("now") else None,
        "duration_s": round(time.monotonic() - started, 3),
        "counts": counts,
        "metrics": {k: round(float(v), 3) for k, (v, _unit) in values.items()},
        "checks": out,
    }
    report["summary"] = summarize(report)
    _emit(values, counts)
    logger.info(f"health: {report['status']}", extra={"health_summary": report["summary"], "counts": counts})
    return report


def _emit(values: dict[str, tuple[float, str]], counts: dict[str, int]) -> None:
    for name, (value, unit) in values.items():
        metrics.add_metric(name=name, unit=MetricUnit(unit), value=float(value))
    metrics.add_metric(name="HealthCriticalFindings", unit=MetricUnit.Count, value=counts["critical"])
    metrics.add_metric(name="HealthWarningFindings", unit=MetricUnit.Count, value=counts["warning"])


def summarize(report: dict[str, Any], *, verbose: bool = False, per_check: int = 10) -> list[str]:
    """Readable lines: one per check, then its findings of severity info or worse (all with `verbose`)."""
    c = report["counts"]
    lines = [
        f"health of {report.get('database')} (PostgreSQL {report.get('server_version')}): "
        f"{report['status'].upper()} - {c['critical']} critical, {c['warning']} warning, {c['info']} info "
        f"({report['duration_s']}s)"
    ]
    for chk in report["checks"]:
        lines.append(f"  [{chk['severity'].upper():8}] {chk['title']}: {chk['summary']}")
        shown = [i for i in chk["items"] if verbose or i["severity"] != "ok"]
        for i in shown[:per_check]:
            lines.append(f"      {i['severity']:8} {i['object']}: {i['message']}")
        if len(shown) > per_check:
            lines.append(f"      ... and {len(shown) - per_check} more")
    return lines
