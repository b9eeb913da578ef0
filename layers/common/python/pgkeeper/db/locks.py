"""One run per (job, database): a session-level advisory lock on the job's main connection.

Advisory locks live per database, so the key only needs the job name. The lock is released when
the session ends, so a Lambda killed mid-run cannot leave it held.
"""

from __future__ import annotations

import psycopg


def lock_key(job: str) -> str:
    return f"pgkeeper:job:{job}"


def try_lock(conn: psycopg.Connection, job: str) -> bool:
    row = conn.execute(
        "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended(%s, 0))", [lock_key(job)]
    ).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection, job: str) -> None:
    """Release the lock; a session that is gone (dropped while idle through a long job) took it along."""
    if conn.closed or conn.broken:
        return
    try:
        conn.execute(
            "SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended(%s, 0))", [lock_key(job)]
        )
    except psycopg.OperationalError:
        if not conn.broken:
            raise
