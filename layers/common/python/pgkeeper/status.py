"""What `pgkeeper status` and signed `GET /status` answer: per silence window when work was last
proven and whether that is overdue; per job the last success, failure and skip; the newest verified
backup; the next scheduled run.

It reads pgkeeper.runs (the `alarm_window` column the runner writes) and the deployment's schedules
and windows: in Lambda from PGKEEPER_SCHEDULES / PGKEEPER_SILENCE_HOURS (the template sets both from
its parameters), locally from template.yaml. Overdue is the same rule as the template's silence
alarms (no proof within the window's hours), so a CI job or a Fly cron can alarm without AWS.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from pydantic import BaseModel, Field

from .metric_names import ALARM_WINDOWS, AlarmWindow

SCHEDULES_ENV = "PGKEEPER_SCHEDULES"
"""JSON {"timezone": "...", "enabled": true, "refresh": "cron(...)", ..., "analyze": "cron(...)"}."""
SILENCE_HOURS_ENV = "PGKEEPER_SILENCE_HOURS"
"""JSON {"refresh": 3, "cleanup": 3, "vacuum": 168, "analyze": 3, "backup": 26, "drill": 168}."""
DEFAULT_SILENCE_HOURS: dict[AlarmWindow, float] = {"refresh": 3, "cleanup": 3, "vacuum": 168, "analyze": 3,
                                                   "backup": 26, "drill": 168}
GRACE = timedelta(hours=1)
"""The alarms count whole hours: a run finishing minutes later than the last one is not overdue."""
WINDOW_JOB: dict[AlarmWindow, str] = {"refresh": "refresh", "cleanup": "cleanup", "vacuum": "vacuum",
                                      "analyze": "vacuum", "backup": "backup", "drill": "backup"}


class Deployment(BaseModel):
    """The schedules and silence windows status is judged against."""

    timezone: str = "UTC"
    enabled: bool = True
    schedules: dict[AlarmWindow, str] = Field(default_factory=dict)
    silence_hours: dict[AlarmWindow, float] = Field(default_factory=lambda: dict(DEFAULT_SILENCE_HOURS))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Deployment:
        """From the function's environment (Lambda's, or a template function's resolved one)."""
        environ = os.environ if environ is None else environ
        raw = json.loads(environ.get(SCHEDULES_ENV) or "{}")
        hours = json.loads(environ.get(SILENCE_HOURS_ENV) or "{}")
        # The template writes "true"/"false" (its parameter); a hand-written env may give a JSON bool.
        enabled = str(raw.pop("enabled", "true")).lower() == "true"
        return cls(timezone=raw.pop("timezone", "UTC") or "UTC", enabled=enabled,
                   schedules={k: v for k, v in raw.items() if k in ALARM_WINDOWS and v},
                   silence_hours={**DEFAULT_SILENCE_HOURS, **{k: float(v) for k, v in hours.items() if v != ""}})


class WindowStatus(BaseModel):
    window: AlarmWindow
    job: str
    silence_hours: float
    last_proven: datetime | None
    overdue: bool
    next_run: datetime | None
    schedule: str | None


class JobStatus(BaseModel):
    job: str
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_error: str | None = None
    last_skipped: datetime | None = None


class StatusReport(BaseModel):
    checked_at: datetime
    database: str
    windows: list[WindowStatus]
    jobs: list[JobStatus]
    newest_verified_backup: dict[str, Any] | None
    overdue: list[AlarmWindow]


def build_status(conn: psycopg.Connection, deployment: Deployment, database: str,
                 now: datetime | None = None) -> StatusReport:
    now = now or datetime.now(UTC)
    proven: dict[str, datetime] = dict(conn.execute(
        "SELECT alarm_window, max(finished_at) FROM pgkeeper.runs WHERE alarm_window IS NOT NULL GROUP BY 1"
    ).fetchall())
    last: dict[tuple[str, str], tuple[datetime, str | None]] = {
        (job, status): (at, error) for job, status, at, error in conn.execute(
            "SELECT DISTINCT ON (job, status) job, status, coalesce(finished_at, started_at), error "
            "FROM pgkeeper.runs WHERE status IN ('succeeded', 'failed', 'skipped') "
            "ORDER BY job, status, started_at DESC").fetchall()}
    windows = []
    for window in ALARM_WINDOWS:
        schedule = deployment.schedules.get(window)
        if not deployment.enabled or not schedule:
            continue  # nothing is scheduled to prove it
        hours = deployment.silence_hours[window]
        at = proven.get(window)
        windows.append(WindowStatus(
            window=window, job=WINDOW_JOB[window], silence_hours=hours, last_proven=at,
            overdue=at is None or now - at > timedelta(hours=hours) + GRACE,
            next_run=next_fire(schedule, now, deployment.timezone), schedule=schedule))
    jobs = []
    for job in sorted(set(WINDOW_JOB.values())):
        success, failure, skipped = (last.get((job, s)) for s in ("succeeded", "failed", "skipped"))
        jobs.append(JobStatus(job=job, last_success=success[0] if success else None,
                              last_failure=failure[0] if failure else None,
                              last_failure_error=failure[1] if failure else None,
                              last_skipped=skipped[0] if skipped else None))
    row = conn.execute(
        "SELECT finished_at, report FROM pgkeeper.runs WHERE job = 'backup' AND alarm_window = 'backup' "
        "ORDER BY finished_at DESC LIMIT 1").fetchone()
    backup = None
    if row is not None:
        report = row[1] or {}
        backup = {"finished_at": row[0].isoformat(),
                  **{k: report[k] for k in ("key", "bytes_in", "bytes_out", "rows") if k in report}}
    return StatusReport(checked_at=now, database=database, windows=windows, jobs=jobs,
                        newest_verified_backup=backup, overdue=[w.window for w in windows if w.overdue])


def summarize(report: StatusReport) -> list[str]:
    """Lines for a person: one per window, one per job, the newest backup."""
    def when(at: datetime | None) -> str:
        return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "never"

    lines = [f"pgkeeper status of {report.database} at {when(report.checked_at)}"]
    for w in report.windows:
        state = "OVERDUE" if w.overdue else "ok"
        lines.append(f"  {w.window:<8} {state:<8} last proven {when(w.last_proven)} (window {w.silence_hours:g} h), "
                     f"next run {when(w.next_run) if w.next_run else 'unknown'}")
    for j in report.jobs:
        failure = f"{when(j.last_failure)}" + (f" ({j.last_failure_error})" if j.last_failure_error else "")
        lines.append(f"  {j.job:<8} last success {when(j.last_success)}, last failure {failure}, "
                     f"last skipped {when(j.last_skipped)}")
    b = report.newest_verified_backup
    lines.append(f"  newest verified backup: {b['finished_at'] + ' ' + str(b.get('key', '')) if b else 'none'}")
    if report.overdue:
        lines.append(f"overdue: {', '.join(report.overdue)}")
    return lines


# --- EventBridge Scheduler cron expressions: cron(minutes hours day-of-month month day-of-week year) ----

_MONTHS = {m: i for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                                       "DEC"], 1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}  # AWS: 1 = Sunday


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values a field admits (None: any); raises ValueError for what is not supported (L, W, #)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.upper().split(","):
        step = 1
        stepped = "/" in part
        if stepped:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = (names or {}).get(a) or int(a), (names or {}).get(b) or int(b)
        else:
            start = (names or {}).get(part) or int(part)
            end = high if stepped else start  # 5/10: from 5 on, every 10
        values |= set(range(start, end + 1, step))
    return values


def next_fire(expression: str, after: datetime, timezone: str = "UTC") -> datetime | None:
    """The next time `expression` fires after `after` (UTC), or None when it cannot be told (rate()
    without a start, L/W/# fields, an unknown time zone): status then says "unknown"."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if rate:
        return None  # a rate schedule counts from its creation time, which only the Scheduler knows
    match = re.fullmatch(r"cron\((.+)\)", expression.strip())
    if not match:
        return None
    parts = match.group(1).split()
    if len(parts) != 6:
        return None
    try:
        zone = ZoneInfo(timezone)
        minutes, hours, days, months, weekdays, years = (
            _field(parts[0], 0, 59), _field(parts[1], 0, 23), _field(parts[2], 1, 31),
            _field(parts[3], 1, 12, _MONTHS), _field(parts[4], 1, 7, _DAYS), _field(parts[5], 1970, 2199))
    except (ValueError, ZoneInfoNotFoundError):
        return None
    t = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = t + timedelta(days=366 * 2)
    while t < limit:  # day by day, then hour by hour, then minute by minute
        weekday = (t.isoweekday() % 7) + 1  # Monday=1..Sunday=7 -> Sunday=1..Saturday=7
        if not ((days is None or t.day in days) and (months is None or t.month in months)
                and (weekdays is None or weekday in weekdays) and (years is None or t.year in years)):
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
        elif hours is not None and t.hour not in hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
        elif minutes is not None and t.minute not in minutes:
            t += timedelta(minutes=1)
        else:
            return t.astimezone(UTC)
    return None
