"""Run history in schema `pgkeeper`: what ran, when, how it ended and its report.

The schema is created from the package's `sql/` files the first time a job runs, under a
transaction-level advisory lock so two cold starts do not race on CREATE IF NOT EXISTS.
"""

from __future__ import annotations

import json
import uuid
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .errors import ConfigError
from .log import logger

_SCHEMA_LOCK_KEY = "pgkeeper:schema"
_ensured: set[str] = set()


def sql_files() -> list[tuple[str, str]]:
    folder = resources.files("pgkeeper") / "sql"
    files = sorted((f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".sql"))
    return files


def ensure_schema(conn: psycopg.Connection, cache_key: str | None = None) -> None:
    """Create or upgrade schema `pgkeeper` (idempotent); once per container per database."""
    if cache_key and cache_key in _ensured:
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(%s))", [_SCHEMA_LOCK_KEY])
            for _name, text in sql_files():
                conn.execute(text)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            "cannot create schema pgkeeper (run history): grant CREATE on the database to pgkeeper's "
            f"role, or create it once with the files in sql/ ({exc.diag.message_primary})"
        ) from exc
    if cache_key:
        _ensured.add(cache_key)


def new_run_id() -> str:
    return str(uuid.uuid4())


QUEUED_MAX_AGE = "6 hours"
"""Lambda drops an asynchronous event it could not run within the function's maximum event age
(6 hours: the default, and the most Lambda allows), so a run queued longer will never start."""

RUNNING_MAX_AGE = "1 hour"
"""No entry point gives a run more than Lambda's 15 minutes, so a run still running an hour after
its start was stopped before it could record its end. (Were one ever to outlive this, its own
finish() would still record how it really ended.)"""

NEVER_STARTED = ("never started: the asynchronous invocation did not run within Lambda's maximum event age "
                 f"({QUEUED_MAX_AGE}); the function's logs and its Errors alarm say why")
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
        "OR (status = 'running' AND started_at < pg_catalog.clock_timestamp() - %s::interval))"
    )
    params: list[Any] = [NEVER_STARTED, STOPPED, QUEUED_MAX_AGE, RUNNING_MAX_AGE]
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


def start(conn: psycopg.Connection, run_id: str, job: str, trigger: str, request_id: str | None,
          options: dict[str, Any]) -> None:
    # Upsert: a queued run (202 over the function URL) becomes running under the same id.
    expire_lost(conn)
    conn.execute(
        "INSERT INTO pgkeeper.runs (run_id, job, trigger, request_id, status, options) "
        "VALUES (%s, %s, %s, %s, 'running', %s) ON CONFLICT (run_id) DO UPDATE "
        "SET status = 'running', started_at = pg_catalog.clock_timestamp()",
        [run_id, job, trigger, request_id, Jsonb(options)],
    )


def finish(conn: psycopg.Connection, run_id: str, status: str, report: dict[str, Any] | None,
           error: str | None = None) -> None:
    conn.execute(
        "UPDATE pgkeeper.runs SET status = %s, finished_at = pg_catalog.clock_timestamp(), "
        "report = %s, error = %s WHERE run_id = %s",
        [status, Jsonb(_jsonable(report)) if report is not None else None, error, run_id],
    )


def record_skipped(conn: psycopg.Connection, run_id: str, job: str, trigger: str, request_id: str | None,
                   options: dict[str, Any], reason: str) -> None:
    conn.execute(
        "INSERT INTO pgkeeper.runs (run_id, job, trigger, request_id, status, options, finished_at, report) "
        "VALUES (%s, %s, %s, %s, 'skipped', %s, pg_catalog.clock_timestamp(), %s) "
        "ON CONFLICT (run_id) DO UPDATE SET status = 'skipped', finished_at = EXCLUDED.finished_at, "
        "report = EXCLUDED.report",
        [run_id, job, trigger, request_id, Jsonb(options), Jsonb({"reason": reason})],
    )


def get_run(conn: psycopg.Connection, run_id: str) -> dict[str, Any] | None:
    try:
        uuid.UUID(run_id)
    except ValueError:
        return None
    expire_lost(conn, run_id)
    row = conn.execute(
        "SELECT run_id::text, job, trigger, request_id, status, started_at, finished_at, report, error "
        "FROM pgkeeper.runs WHERE run_id = %s",
        [run_id],
    ).fetchone()
    if row is None:
        return None
    keys = ["run_id", "job", "trigger", "request_id", "status", "started_at", "finished_at", "report", "error"]
    out = dict(zip(keys, row, strict=True))
    for k in ("started_at", "finished_at"):
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
