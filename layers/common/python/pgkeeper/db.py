"""Connections that always carry timeouts and an application name, and come back when broken.

A Neon compute scaled to zero takes a few seconds to wake: the first connect may time out, so one
bounded retry follows. Driver errors at connect become `DatabaseUnavailableError` (Patroni style).
"""

from __future__ import annotations

import time

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .dsn import redact, resolve_url, session_conninfo
from .errors import DatabaseUnavailableError, first_line
from .log import logger
from .plan.database import DatabaseSettings


class Database:
    """One job's access to one database. `conn` is lazy, checked and reopened when broken."""

    def __init__(self, url: str, settings: DatabaseSettings, job: str) -> None:
        self.settings = settings
        self.job = job
        self.conninfo = session_conninfo(url, use_direct_host=settings.use_direct_host)
        # `options` in the URL (search_path, Neon's endpoint=) would be replaced by ours: keep them, first.
        self._url_options = str(conninfo_to_dict(self.conninfo).get("options") or "")
        self._conn: psycopg.Connection | None = None

    @classmethod
    def from_settings(cls, settings: DatabaseSettings, job: str) -> Database:
        return cls(resolve_url(settings), settings, job)

    @property
    def where(self) -> str:
        return redact(self.conninfo)

    def connect(
        self,
        *,
        autocommit: bool = False,
        statement_timeout_ms: int | None = None,
        lock_timeout_ms: int | None = None,
        purpose: str = "",
    ) -> psycopg.Connection:
        """A new connection with the plan's timeouts (overridable per connection)."""
        s = self.settings
        stmt = statement_timeout_ms if statement_timeout_ms is not None else s.statement_timeout_s * 1000
        lock = lock_timeout_ms if lock_timeout_ms is not None else s.lock_timeout_ms
        options = (
            f"{self._url_options} -c statement_timeout={int(stmt)} -c lock_timeout={int(lock)} "
            f"-c idle_in_transaction_session_timeout={s.idle_in_transaction_timeout_s * 1000}"
        ).lstrip()
        app = f"pgkeeper/{self.job}" + (f"/{purpose}" if purpose else "")
        last: Exception | None = None
        for attempt in range(s.connect_retries + 1):
            try:
                return psycopg.connect(
                    self.conninfo,
                    autocommit=autocommit,
                    connect_timeout=s.connect_timeout_s,
                    application_name=app[:63],
                    options=options,
                )
            except psycopg.OperationalError as exc:
                last = exc
                if attempt < s.connect_retries:
                    logger.warning(
                        "database connect failed, retrying once (a suspended compute may be waking)",
                        extra={"database": self.where, "attempt": attempt + 1},
                    )
                    time.sleep(1.0)
        raise DatabaseUnavailableError(
            f"cannot connect to {self.where}: {first_line(last)}"
        ) from last

    @property
    def conn(self) -> psycopg.Connection:
        """The job's main session (advisory lock, run history); reopened if closed or broken."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connect(autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
