"""Connections that always carry timeouts and an application name, and come back when broken.

A Neon compute scaled to zero takes a few seconds to wake: the first connect may time out, so one
bounded retry follows. Driver errors at connect become `DatabaseUnavailableError` (Patroni style).
Every connection pgkeeper opens comes from here: the job's main session (`conn`), connections of
a job's own (`connect`, `session`), and those to other databases (`for_url`, `on_database`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ConfigError, DatabaseUnavailableError, first_line
from ..log import logger
from ..plan.database import DatabaseSettings
from .dsn import redact, resolve_url, session_conninfo

T = TypeVar("T")


class Database:
    """One job's access to one database. `conn` is lazy, checked and reopened when broken."""

    def __init__(self, url: str, settings: DatabaseSettings, job: str,
                 reread: Callable[[], str] | None = None, *, driver_errors: bool = False) -> None:
        self.settings = settings
        self.job = job
        self._set_url(url)
        self._reread = reread
        self._driver_errors = driver_errors
        """A failed connect raises psycopg's error, not DatabaseUnavailableError (see `for_url`)."""
        self._main = self.session(purpose="")

    def _set_url(self, url: str) -> None:
        self._set_conninfo(session_conninfo(url, use_direct_host=self.settings.use_direct_host))

    def _set_conninfo(self, conninfo: str) -> None:
        self.conninfo = conninfo
        # `options` in the URL (search_path, Neon's endpoint=) would be replaced by ours: keep them, first.
        self._url_options = str(conninfo_to_dict(conninfo).get("options") or "")

    @classmethod
    def from_settings(cls, settings: DatabaseSettings, job: str) -> Database:
        # Re-resolving a URL from the environment yields the same URL: only a secret can have rotated.
        return cls(resolve_url(settings), settings, job, reread=lambda: resolve_url(settings, fresh=True))

    @classmethod
    def for_url(cls, url: str, settings: DatabaseSettings, job: str) -> Database:
        """A database other than the job's (a restore target, the verify server), reached the same
        way: the plan's timeouts, `pgkeeper/<job>/<purpose>`, the retry of a waking compute.

        No secret to re-read; a failed connect raises the driver's error (`psycopg.OperationalError`),
        which the caller reports in its own terms (a verification that could not run, the target of
        `pgkeeper restore`), as it would any other failure of that database.
        """
        return cls(url, settings, job, driver_errors=True)

    def on_database(self, dbname: str) -> Database:
        """The same server, settings and job, another database (the restore test's scratch database)."""
        return Database(make_conninfo(self.conninfo, dbname=dbname), self.settings, self.job,
                        driver_errors=self._driver_errors)

    def _rotated(self) -> bool:
        """After a failed connect: re-read the secret the URL came from; True if it changed.

        Secrets are cached for minutes; without this, a rotated password would fail every run until
        the cache expired. Any connect failure triggers it (libpq reports authentication failures
        without an SQLSTATE), at the cost of one Secrets Manager read.
        """
        if self._reread is None:
            return False
        try:
            url = self._reread()
        except ConfigError as exc:
            logger.warning("could not re-read the database secret", extra={"error": str(exc)})
            return False
        conninfo = session_conninfo(url, use_direct_host=self.settings.use_direct_host)
        if conninfo == self.conninfo:
            return False
        self._set_conninfo(conninfo)
        logger.info("the database secret changed (rotated): connecting with the new one",
                    extra={"database": self.where})
        return True

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
            f"-c statement_timeout={int(stmt)} -c lock_timeout={int(lock)} "
            f"-c idle_in_transaction_session_timeout={s.idle_in_transaction_timeout_s * 1000}"
        )
        app = f"pgkeeper/{self.job}" + (f"/{purpose}" if purpose else "")
        last: Exception | None = None
        reread = False
        attempt = 0
        while attempt <= s.connect_retries:
            try:
                return psycopg.connect(
                    self.conninfo,
                    autocommit=autocommit,
                    connect_timeout=s.connect_timeout_s,
                    application_name=app[:63],
                    options=f"{self._url_options} {options}".lstrip(),
                )
            except psycopg.OperationalError as exc:
                last = exc
                if not reread:
                    reread = True
                    if self._rotated():
                        continue  # at once, and not counted as a retry
                attempt += 1
                if attempt <= s.connect_retries:
                    logger.warning(
                        "database connect failed, retrying once (a suspended compute may be waking)",
                        extra={"database": self.where, "attempt": attempt},
                    )
                    time.sleep(1.0)
        assert last is not None  # the loop runs at least once and only ends by an error
        if self._driver_errors:
            raise last
        raise DatabaseUnavailableError(
            f"cannot connect to {self.where}: {first_line(last)}"
        ) from last

    def session(self, *, purpose: str, autocommit: bool = True, statement_timeout_ms: int | None = None,
                lock_timeout_ms: int | None = None,
                setup: Callable[[psycopg.Connection], None] | None = None) -> Session:
        """A connection of its own (`connect`'s arguments), opened on first use and reopened when lost."""
        return Session(lambda: self.connect(autocommit=autocommit, statement_timeout_ms=statement_timeout_ms,
                                            lock_timeout_ms=lock_timeout_ms, purpose=purpose), setup)

    @property
    def conn(self) -> psycopg.Connection:
        """The job's main session (advisory lock, run history); reopened if closed or broken."""
        return self._main.conn

    def on_main(self, work: Callable[[psycopg.Connection], T]) -> T:
        """`work(conn)` on the main session; once more on a fresh session if that one was lost.

        A job's work can outlive its idle main session (a pooler or the server dropped it; an
        operator terminated pgkeeper's backends): what the job did must still be recorded.
        """
        conn = self.conn
        try:
            return work(conn)
        except psycopg.OperationalError:
            if not conn.broken and not conn.closed:
                raise
            logger.warning("the main database session was lost; writing on a new one",
                           extra={"database": self.where})
        return work(self.conn)

    def close(self) -> None:
        self._main.close()


class Session:
    """One connection, opened on first use and reopened (then `setup` runs on it) when found closed
    or broken: a server or pooler that dropped an idle session, an operator who terminated it."""

    def __init__(self, open_conn: Callable[[], psycopg.Connection],
                 setup: Callable[[psycopg.Connection], None] | None = None) -> None:
        self._open = open_conn
        self._setup = setup
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = self._open()
            if self._setup is not None:
                try:
                    self._setup(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
