"""The one rule for timeouts under a deadline: `statement_timeout` = the time left, capped.

A statement still running when the Lambda ends is killed with the function and leaves no report;
one whose `statement_timeout` is the time left is cancelled by the server and reported. Callers
differ only in their numbers, given as parameters: the cap (the plan's statement_timeout, or
none), a floor (a short read or a cleanup that must fit even once the budget is spent), the least
time worth starting a statement with (below it: `DeadlineReached`), and whether the setting lasts
for the transaction (`local=True`) or the session.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ..budget import Budget


class DeadlineReached(Exception):  # noqa: N818 - a signal, not an error: the caller reports `not_done`
    """Not enough of the budget is left to start the next statement."""


@dataclass(frozen=True)
class Bound:
    statement_ms: int
    """The statement_timeout to use (never 0: that would mean no timeout at all)."""
    by_deadline: bool
    """True when the time left, not the cap, decided it."""


def time_left(budget: Budget, *, cap_ms: int | None = None, floor_ms: int = 1, min_left_ms: int = 0) -> Bound:
    """min(time left, `cap_ms`), at least `floor_ms`; `DeadlineReached` when less than `min_left_ms` is left."""
    left = budget.remaining_ms()
    if left < min_left_ms:
        raise DeadlineReached()
    capped = left if cap_ms is None else min(left, cap_ms)
    return Bound(max(1, floor_ms, capped), by_deadline=cap_ms is None or left < cap_ms)


def bound(conn: psycopg.Connection, budget: Budget, *, cap_ms: int | None = None, floor_ms: int = 1,
          min_left_ms: int = 0, local: bool = True, lock_timeout_ms: int | None = None) -> Bound:
    """Set `conn`'s statement_timeout by `time_left` (and lock_timeout, if given); call before each
    long statement. `local`: for the current transaction only, else for the session."""
    limit = time_left(budget, cap_ms=cap_ms, floor_ms=floor_ms, min_left_ms=min_left_ms)
    set_timeouts(conn, limit.statement_ms, lock_timeout_ms, local=local)
    return limit


def set_timeouts(conn: psycopg.Connection, statement_ms: int, lock_timeout_ms: int | None = None, *,
                 local: bool) -> None:
    """statement_timeout (and lock_timeout) in one round trip; each at least 1 ms (0 disables it)."""
    if lock_timeout_ms is None:
        conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, %s)", [str(max(1, statement_ms)), local])
        return
    conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, %s), "
                 "pg_catalog.set_config('lock_timeout', %s, %s)",
                 [str(max(1, statement_ms)), local, str(max(1, lock_timeout_ms)), local])
