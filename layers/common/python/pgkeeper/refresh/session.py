"""The refresh job's working connection: one short transaction per unit of work, each bounded.

`ctx.db.conn` holds the job's advisory lock and must stay free, so views are refreshed on a
connection of their own. Every transaction sets `statement_timeout` to what is left of the Lambda
budget (never more than the plan's), so a refresh still running at the deadline is cancelled by
the server and reported as not done, rather than killed with the function and left to chance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from ..budget import Budget
from ..db import Database, DeadlineReached, set_timeouts, time_left

__all__ = ["MIN_STATEMENT_MS", "DeadlineReached", "Session", "set_search_path"]

MIN_STATEMENT_MS = 200
"""Below this much time left, no statement is started."""


class Session:
    def __init__(self, db: Database, budget: Budget) -> None:
        self.db = db
        self.budget = budget
        self.plan_statement_ms = db.settings.statement_timeout_s * 1000
        self.lock_timeout_ms = db.settings.lock_timeout_ms
        self._work = db.session(purpose="views")
        self.bounded_by_deadline = False
        """True when the last bound set was the budget rather than the plan's statement_timeout."""

    @property
    def conn(self) -> psycopg.Connection:
        return self._work.conn

    def bound(self) -> None:
        """(Re)set this transaction's statement_timeout from the time left; call before each long statement."""
        limit = time_left(self.budget, cap_ms=self.plan_statement_ms, min_left_ms=MIN_STATEMENT_MS)
        self.bounded_by_deadline = limit.by_deadline
        set_timeouts(self.conn, limit.statement_ms, local=True)

    @contextmanager
    def transaction(self, search_path: list[str] | None = None) -> Iterator[psycopg.Connection]:
        """A transaction with lock_timeout, a bounded statement_timeout and (optionally) a search_path."""
        conn = self.conn
        with conn.transaction():
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", [str(self.lock_timeout_ms)])
            if search_path:
                self.set_search_path(search_path)
            self.bound()
            yield conn

    def set_search_path(self, schemas: list[str]) -> None:
        set_search_path(self.conn, schemas)

    def close(self) -> None:
        self._work.close()


def set_search_path(conn: psycopg.Connection, schemas: list[str]) -> None:
    """`schemas` (duplicates dropped) as the search_path of the current transaction only."""
    path = sql.SQL(", ").join(sql.Identifier(s) for s in dict.fromkeys(schemas)).as_string(conn)
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", [path])
