"""Run history in schema `pgkeeper`: what ran, when, how it ended and its report.

A run is a small state machine:

    queued ──> running ──> succeeded | partial | failed | skipped
                  ^                               │
                  └──────── failed (Lambda's retry of the same run_id)

Every write is a conditional transition, so Lambda's at-least-once delivery cannot run a finished
run again and a duplicate cannot overwrite the row of the invocation that owns it. The schema is
versioned: `sql/NNN_*.sql` are migrations applied in order, each once (`pgkeeper.migrations`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..errors import ConfigError
from ..log import logger

_SCHEMA_LOCK_KEY = "pgkeeper:schema"
_ensured: set[str] = set()


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"


FINISHED = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.SKIPPED)
STARTABLE = (RunStatus.QUEUED, RunStatus.FAILED)
"""The states `start` moves to running: a queued run, or a failed one that Lambda retries."""


# ------------------------------------------------------------------------------------ migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


def migrations() -> list[Migration]:
    """The package's `sql/NNN_name.sql` files, in version order."""
    out = []
    for f in (resources.files("pgkeeper") / "sql").iterdir():
        m = re.fullmatch(r"(\d{3})_(\w+)\.sql", f.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return sorted(out, key=lambda m: m.version)


def schema_version(conn: psycopg.Connection) -> int:
    """The newest migration applied to this database (0: none, or a schema older than versioning)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT max(version) FROM pgkeeper.migrations").fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def ensure_schema(conn: psycopg.Connection, cache_key: str | None = None) -> None:
    """Bring schema `pgkeeper` to the newest version (idempotent); once per container per database.

    The first migrations are idempotent (`IF NOT EXISTS`), so a schema created before versioning
    (no `pgkeeper.migrations`) is upgraded in place and keeps its rows.
    """
    if cache_key and cache_key in _ensured:
        return
    wanted = migrations()
    if schema_version(conn) < wanted[-1].version:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(%s))", [_SCHEMA_LOCK_KEY])
                conn.execute("CREATE SCHEMA IF NOT EXISTS pgkeeper")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS pgkeeper.migrations (version integer PRIMARY KEY, "
                    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp())"
                )
                applied = {r[0] for r in conn.execute("SELECT version FROM pgkeeper.migrations").fetchall()}
                todo = [m for m in wanted if m.version not in applied]
                for m in todo:
                    conn.execute(m.text.encode())  # our own static SQL files
                    conn.execute("INSERT INTO pgkeeper.migrations (version, name) VALUES (%s, %s)",
                                 [m.version, m.name])
            if todo:
                logger.info("schema pgkeeper migrated",
                            extra={"migrations": [f"{m.version:03d}_{m.name}" for m in todo]})
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(
                "cannot create or upgrade schema pgkeeper (run history): grant CREATE on the database to "
                f"pgkeeper's role, or apply the files in sql/ once as an owner ({exc.diag.message_primary})"
            ) from exc
    if cache_key:
        _ensured.add(cache_key)


# ------------------------------------------------------------------------------------ lost runs


def new_run_id() -> str:
    return str(uuid.uuid4())


def canonical_run_id(text: str) -> str | None:
    """`text` if it is a run id in the canonical UUID form, else None (`urn:uuid:`, braces, no dashes)."""
    try:
        parsed = uuid.UUID(text)
    except (ValueError, TypeError):
        return None
    return text if str(parsed) == text.lower() and len(text) == 36 else None


MAX_EVENT_AGE_S = 3600
"""The template's EventInvokeConfig MaximumEventAgeInSeconds (a test holds them equal): Lambda drops
an asynchronous event it could not run within it, sending it to the FailedInvocationsQueue."""
QUEUED_MAX_AGE = f"{MAX_EVENT_AGE_S // 60 + 10} minutes"
"""A run queued longer will never start: the maximum event age, and 10 minutes of margin for the
last delivery attempt to record its start."""

DEADLINE_GRACE = "1 minute"
"""A running run whose invocation ended this long ago was stopped before it could record its end."""

RUNNING_MAX_AGE = "1 hour"
"""Only for rows written before runs carried their deadline: no entry point gives a run more
than Lambda's 15 minutes."""

NEVER_STARTED = ("never started: the asynchronous invocation did not run within Lambda's maximum event age "
                 f"({MAX_EVENT_AGE_S // 60} minutes); the FailedInvocationsQueue and the function's logs say why")
STOPPED = ("did not finish: stopped before it could record its end (a Lambda timeout, running out of memory "
           "or a crash); the function's logs say which")


def expire_lost(conn: psycopg.Connection, run_id: str | None = None) -> int:
    """Mark runs that can no longer start or finish as failed (all, or just `run_id`); how many.

    Without this a run whose invocation died reads `queued` or `running` for ever.
    """
    query = (
        "UPDATE pgkeeper.runs SET finished_at = pg_catalog.clock_timestamp(), "
        "error = CASE status WHEN 'queued' THEN %s ELSE %s END, status = 'failed' "
        "WHERE ((status = 'queued' AND started_at < pg_catalog.clock_timestamp() - %s::interval) "
        "OR (status = 'running' AND COALESCE(deadline_at, started_at + %s::interval) "
        "< pg_catalog.clock_timestamp() - %s::interval))"
    )
    params: list[Any] = [NEVER_STARTED, STOPPED, QUEUED_MAX_AGE, RUNNING_MAX_AGE, DEADLINE_GRACE]
    if run_id is not None:
        query += " AND run_id = %s"
        params.append(run_id)
    try:
        expired = conn.execute(query, params).rowcount
    except psycopg.Error as exc:
        if not conn.autocommit or conn.broken:
            raise
        # Housekeeping (a lock timeout behind another run's update, say) must not fail this run.
        logger.warning("could not expire lost runs", extra={"error": str(exc).splitlines()[0][:300]})
        return 0
    if expired:
        logger.info("runs that can no longer start or finish marked failed", extra={"runs": expired})
    return expired


# ---------------------------------------------------------------------------------- transitions


def queue(conn: psycopg.Connection, run_id: str, job: str, trigger: str, request_id: str | None,
          options: dict[str, Any]) -> None:
    """A run accepted (202) that an asynchronous invocation will carry out. Runs that can no
    longer start or finish are marked failed on the way (expire_lost)."""
    expire_lost(conn)
    conn.execute(
        "INSERT INTO pgkeeper.runs (run_id, job, trigger, request_id, status, options) "
        "VALUES (%s, %s, %s, %s, 'queued', %s)",
        [run_id, job, trigger, request_id, Jsonb(options)],
    )


def status_of(conn: psycopg.Connection, run_id: str) -> RunStatus | None:
    row = conn.execute("SELECT status FROM pgkeeper.runs WHERE run_id = %s", [run_id]).fetchone()
    return RunStatus(row[0]) if row else None


def start(conn: psycopg.Connection, run_id: str, job: str, trigger: str, request_id: str | None,
          options: dict[str, Any], *, deadline_s: float) -> RunStatus | None:
    """Record the run as running until `deadline_s` from now; None when it started.

    A new run_id is inserted; an existing one moves to running only from queued (the 202 path) or
    failed (Lambda's retry). Otherwise nothing is written and the run's current status is returned:
    a redelivered event for a running or finished run must do nothing.
    """
    expire_lost(conn)
    row = conn.execute(
        "INSERT INTO pgkeeper.runs AS r (run_id, job, trigger, request_id, status, options, deadline_at) "
        "VALUES (%s, %s, %s, %s, 'running', %s, pg_catalog.clock_timestamp() + make_interval(secs => %s)) "
        "ON CONFLICT (run_id) DO UPDATE SET status = 'running', started_at = pg_catalog.clock_timestamp(), "
        "deadline_at = EXCLUDED.deadline_at, finished_at = NULL, report = NULL, error = NULL, "
        "attempts = r.attempts + CASE WHEN r.status = 'failed' THEN 1 ELSE 0 END "
        "WHERE r.status IN ('queued', 'failed') AND r.job = EXCLUDED.job "
        "RETURNING r.run_id",
        [run_id, job, trigger, request_id, Jsonb(options), deadline_s],
    ).fetchone()
    if row is not None:
        return None
    return status_of(conn, run_id) or RunStatus.RUNNING


def extend(conn: psycopg.Connection, run_id: str, *, deadline_s: float) -> None:
    """A running run carried on by another invocation (a fan-out's hand-over): alive until then."""
    conn.execute("UPDATE pgkeeper.runs SET deadline_at = pg_catalog.clock_timestamp() + make_interval(secs => %s) "
                 "WHERE run_id = %s AND status = 'running'", [deadline_s, run_id])


def finish(conn: psycopg.Connection, run_id: str, status: RunStatus | str, report: dict[str, Any] | None,
           error: str | None = None, alarm_window: str | None = None) -> None:
    """The run's end, as it really happened (even after the sweep marked it lost), and the silence
    window it proved alive, if any."""
    conn.execute(
        "UPDATE pgkeeper.runs SET status = %s, finished_at = pg_catalog.clock_timestamp(), "
        "report = %s, error = %s, alarm_window = %s WHERE run_id = %s",
        [str(status), Jsonb(_jsonable(report)) if report is not None else None, error, alarm_window, run_id],
    )


def record_skipped(conn: psycopg.Connection, run_id: str, job: str, trigger: str, request_id: str | None,
                   options: dict[str, Any], reason: str) -> None:
    """A run that did not start (another holds the lock). Only a queued row of this run changes:
    a duplicate never overwrites the row of the invocation that is running it."""
    conn.execute(
        "INSERT INTO pgkeeper.runs AS r (run_id, job, trigger, request_id, status, options, finished_at, report) "
        "VALUES (%s, %s, %s, %s, 'skipped', %s, pg_catalog.clock_timestamp(), %s) "
        "ON CONFLICT (run_id) DO UPDATE SET status = 'skipped', finished_at = EXCLUDED.finished_at, "
        "report = EXCLUDED.report WHERE r.status = 'queued'",
        [run_id, job, trigger, request_id, Jsonb(options), Jsonb({"reason": reason})],
    )


def prune(conn: psycopg.Connection, keep_days: int) -> int:
    """Delete finished runs older than `keep_days`, keeping each job's newest run of every status and
    silence window (what `last success`, `last failure` and a window's last proof answer: a job proves
    two windows, vacuum the weekly VACUUM and the hourly ANALYZE); how many went."""
    deleted = conn.execute(
        "DELETE FROM pgkeeper.runs WHERE started_at < pg_catalog.clock_timestamp() - make_interval(days => %s) "
        "AND status IN ('succeeded', 'partial', 'failed', 'skipped') "
        "AND run_id NOT IN (SELECT DISTINCT ON (job, status, alarm_window) run_id FROM pgkeeper.runs "
        "ORDER BY job, status, alarm_window, started_at DESC)",
        [keep_days],
    ).rowcount
    if deleted:
        logger.info("old runs pruned from the history", extra={"runs": deleted, "keep_days": keep_days})
    return deleted


# --------------------------------------------------------------------------------------- reading


def get_run(conn: psycopg.Connection, run_id: str) -> dict[str, Any] | None:
    if canonical_run_id(run_id) is None:
        return None
    expire_lost(conn, run_id)
    row = conn.execute(
        "SELECT run_id::text, job, trigger, request_id, status, started_at, finished_at, deadline_at, attempts, "
        "report, error FROM pgkeeper.runs WHERE run_id = %s",
        [run_id],
    ).fetchone()
    if row is None:
        return None
    keys = ["run_id", "job", "trigger", "request_id", "status", "started_at", "finished_at", "deadline_at",
            "attempts", "report", "error"]
    out = dict(zip(keys, row, strict=True))
    for k in ("started_at", "finished_at", "deadline_at"):
        out[k] = out[k].isoformat() if out[k] else None
    return out


def last_runs(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """The newest run of each job (for /health)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (job) job, run_id::text, status, started_at, finished_at "
        "FROM pgkeeper.runs ORDER BY job, started_at DESC"
    ).fetchall()
    return {
        job: {"run_id": rid, "status": st, "started_at": s.isoformat(),
              "finished_at": f.isoformat() if f else None}
        for job, rid, st, s, f in rows
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_ended(conn: psycopg.Connection, run_id_prefix: str) -> bool:
    """Whether the run whose id (without dashes) starts with `run_id_prefix` is recorded as ended."""
    row = conn.execute(
        "SELECT 1 FROM pgkeeper.runs WHERE replace(run_id::text, '-', '') LIKE %s "
        "AND status NOT IN ('running', 'queued') LIMIT 1", [run_id_prefix + "%"]).fetchone()
    return row is not None
