"""Carry-over between runs: tables a run selected but did not finish, in `pgkeeper.vacuum_backlog`.

Why persist it rather than re-derive it from the statistics next time: a run's targets are written
before any work starts and removed one by one as they are done, so even a run killed at the Lambda
timeout leaves an exact list; tables skipped behind a lock or cut off by the deadline go first next
time instead of starving behind newly dirty ones; and a statistics reset (crash recovery, failover)
cannot make a half-frozen table look clean. An entry is dropped once the table is gone or was
vacuumed (analyzed, for `analyze` entries) after it was queued, by us or by autovacuum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from .selection import ACTIONS, Action, VacuumTarget

_PRUNE = """
DELETE FROM pgkeeper.vacuum_backlog b
 WHERE NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_stat_all_tables s
        WHERE s.schemaname = b.schema_name AND s.relname = b.table_name
          AND coalesce(CASE WHEN b.action = 'analyze' THEN greatest(s.last_analyze, s.last_autoanalyze)
                            ELSE greatest(s.last_vacuum, s.last_autovacuum) END, '-infinity') <= b.queued_at)
"""

# Actions ranked weakest first (analyze < vacuum < freeze), as in selection.ACTIONS.
_ENQUEUE = """
INSERT INTO pgkeeper.vacuum_backlog AS b (schema_name, table_name, action, reason, run_id)
SELECT s, t, a, 'interrupted (the run ended before reaching it)', %s::uuid
  FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(s, t, a)
    ON CONFLICT (schema_name, table_name) DO UPDATE
   SET action = CASE WHEN pg_catalog.array_position(ARRAY['analyze', 'vacuum', 'freeze'], EXCLUDED.action)
                        > pg_catalog.array_position(ARRAY['analyze', 'vacuum', 'freeze'], b.action)
                     THEN EXCLUDED.action ELSE b.action END,
       reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, attempts = b.attempts + 1
"""

_DONE = """
DELETE FROM pgkeeper.vacuum_backlog
 WHERE schema_name = %s AND table_name = %s
   AND pg_catalog.array_position(ARRAY['analyze', 'vacuum', 'freeze'], action)
       <= pg_catalog.array_position(ARRAY['analyze', 'vacuum', 'freeze'], %s::text)
"""


@dataclass(frozen=True)
class Entry:
    action: Action
    reason: str
    queued_at: datetime
    attempts: int


def load(conn: psycopg.Connection) -> dict[tuple[str, str], Entry]:
    """Entries still owed, after dropping those that are done or whose table is gone."""
    conn.execute(_PRUNE)
    rows = conn.execute(
        "SELECT schema_name, table_name, action, reason, queued_at, attempts FROM pgkeeper.vacuum_backlog"
    ).fetchall()
    return {(s, t): Entry(a, r, q, n) for s, t, a, r, q, n in rows}


def enqueue(conn: psycopg.Connection, run_id: str, targets: Iterable[VacuumTarget]) -> None:
    """Record every target before work starts: whatever is not removed later was not done."""
    targets = list(targets)
    if not targets:
        return
    conn.execute(
        _ENQUEUE,
        [run_id, [x.schema for x in targets], [x.name for x in targets], [x.action for x in targets]],
    )


def done(conn: psycopg.Connection, target: VacuumTarget, action: Action) -> None:
    """Remove the entry if `action` covered what it owed (an ANALYZE does not pay off a VACUUM)."""
    assert action in ACTIONS
    conn.execute(
        _DONE,
        [target.schema, target.name, action],
    )


def left(conn: psycopg.Connection, target: VacuumTarget, reason: str) -> None:
    conn.execute(
        "UPDATE pgkeeper.vacuum_backlog SET reason = %s WHERE schema_name = %s AND table_name = %s",
        [reason[:500], target.schema, target.name],
    )
