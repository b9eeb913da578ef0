"""The function URL's own database session: replay ids, queued runs, run lookups, health.

One autocommit connection per container and database, opened lazily with short timeouts (a URL
caller is waiting), reused across warm invocations and reopened when the server dropped it while
the container was frozen (Neon suspends idle computes; RDS proxies close idle sessions).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg

from ..db import Database
from ..db.runs import ensure_schema
from ..errors import DatabaseUnavailableError

T = TypeVar("T")

STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 2000


class UrlSession:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._session = db.session(purpose="url", statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                                   lock_timeout_ms=LOCK_TIMEOUT_MS, setup=self._prepare)
        self._lock = threading.Lock()

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """`work(conn)` on the session; one reconnect if the connection turns out to be dead.

        The retry only follows a *lost connection* (conn.broken), almost always one the server
        closed while the container was frozen, so the statement never reached it. In the rare case
        the server committed the statement and then lost the connection, a replay-store insert
        repeats as "already seen": that request is refused (409), never run twice.
        """
        with self._lock:
            conn = self._session.conn
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                if not conn.broken:  # e.g. statement_timeout: the connection is fine, the database is not
                    raise DatabaseUnavailableError(f"database error: {type(exc).__name__}") from exc
            conn = self._session.conn  # the broken one is replaced
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                self._session.close()
                raise DatabaseUnavailableError(f"lost the connection to {self.db.where}") from exc

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Every new connection: the schema exists (checked once per database and container)."""
        try:
            ensure_schema(conn, cache_key=self.db.conninfo)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"cannot prepare schema pgkeeper on {self.db.where}") from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()
