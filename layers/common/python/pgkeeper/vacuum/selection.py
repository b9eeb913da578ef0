"""Which tables need maintenance now, and in what order: one set-based catalog query, no per-table loop.

A table is selected for what it needs, the cheapest statement that meets it:
- `freeze`: its oldest unfrozen xid / multixact is past `freeze_age_fraction` of its *effective*
  `autovacuum_(multixact_)freeze_max_age` (the per-table reloption counts, but only downwards: the
  server ignores a reloption above the global setting) -> `VACUUM (FREEZE, ...)`;
- `vacuum`: enough dead tuples, by count and by ratio -> `VACUUM (ANALYZE, ...)`;
- `analyze`: statistics stale after many changes (n_mod_since_analyze) -> `ANALYZE`.

Why FREEZE for old tables rather than a plain VACUUM: below vacuum_freeze_table_age (150M) a plain
VACUUM is not aggressive and skips all-visible pages, so relfrozenxid may not move at all; even an
aggressive one (vacuum_freeze_table_age = 0) only freezes tuples older than vacuum_freeze_min_age
(50M), so a table with a low per-table autovacuum_freeze_max_age never gets younger (a manual VACUUM
ignores the autovacuum_* reloptions). VACUUM (FREEZE) is aggressive with both ages at 0: relfrozenxid
jumps to the current horizon (full headroom), its pages are marked all-frozen in the visibility map,
and the anti-wraparound autovacuum that follows months later finds little to do. The price, writes
for young rows that may change again, is paid once, in the quiet window the schedule chose, and only
by tables already past `freeze_age_fraction` (flexible-freeze makes the same choice). Tables
selected only for dead tuples get a plain VACUUM.

Urgency puts every need on one scale, "how far along the way to trouble": the fraction of the way to
a forced anti-wraparound autovacuum, the fraction of the table that is dead, and half the changed
fraction for stale statistics (a poor plan hurts, but autovacuum's own analyze soon fixes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..catalog_rules import FREEZE_MAX_AGES
from ..idents import QualifiedName, display
from ..plan.vacuum import VacuumPlan

Action = Literal["analyze", "vacuum", "freeze"]
"""What a table gets: `ANALYZE`, `VACUUM (ANALYZE)` or `VACUUM (FREEZE, ...)`."""

ACTIONS: tuple[Action, ...] = ("analyze", "vacuum", "freeze")
"""Weakest first: a stronger action also does what a weaker one would (VACUUM (ANALYZE) analyzes)."""


def stronger(a: Action, b: Action) -> Action:
    return a if ACTIONS.index(a) >= ACTIONS.index(b) else b


@dataclass
class VacuumTarget(QualifiedName):
    schema: str
    name: str
    oid: int
    action: Action
    reasons: list[str] = field(default_factory=list)
    urgency: float = 0.0
    carried_over: bool = False
    with_analyze: bool = True
    """A freeze-only target skips ANALYZE: its statistics are not stale, sampling them again is waste."""
    stats: dict[str, Any] = field(default_factory=dict)


def permitted_sql(owner: str, datdba: str) -> str:
    """Whether the session may VACUUM / ANALYZE a table owned by the role `owner`, in a database owned by
    `datdba` (both SQL expressions): the owner, the database's owner, or a member of either (superusers are
    members of every role). The selection skips the others; `pgkeeper plan check` names them."""
    return (f"(pg_catalog.pg_has_role({owner}, 'USAGE')\n"
            f"              OR pg_catalog.pg_has_role({datdba}, 'USAGE'))")


# Static text; every value is a parameter. pg_stat_all_tables has a row for every table (zeros when
# never touched); toast tables count through their parent (VACUUM of the parent processes both).
CANDIDATES_SQL = sql.SQL("""
WITH cfg AS (
    SELECT pg_catalog.current_setting('autovacuum_freeze_max_age')::bigint AS fmax,
           pg_catalog.current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mmax,
           (SELECT d.datdba FROM pg_catalog.pg_database d
             WHERE d.datname = pg_catalog.current_database()) AS datdba
), rel AS (
    SELECT c.oid, n.nspname, c.relname, c.relowner,
           coalesce(s.n_live_tup, 0) AS n_live_tup,
           coalesce(s.n_dead_tup, 0) AS n_dead_tup,
           coalesce(s.n_mod_since_analyze, 0) AS n_mod_since_analyze,
           greatest(c.reltuples, 0)::bigint AS reltuples,
           greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
           greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
           greatest(pg_catalog.age(c.relfrozenxid), coalesce(pg_catalog.age(t.relfrozenxid), 0))::bigint AS xid_age,
           greatest(pg_catalog.mxid_age(c.relminmxid),
                    coalesce(pg_catalog.mxid_age(t.relminmxid), 0))::bigint AS mxid_age,
           fm.freeze_max_age, fm.mxid_freeze_max_age,
           {permitted} AS permitted
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN cfg
      LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
      LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid{freeze_max_ages}
     WHERE c.relkind IN ('r', 'm')
       AND c.relpersistence <> 't'
       AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
       AND n.nspname !~ '^pg_(toast|temp_)'
       AND (((pg_catalog.cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY (%(schemas)s::text[]))
             AND n.nspname <> ALL (%(exclude_schemas)s::text[]))
            OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%(inc_schema)s::text[], %(inc_table)s::text[])))
), need AS (
    SELECT rel.*,
           greatest(rel.xid_age::float8 / rel.freeze_max_age,
                    rel.mxid_age::float8 / rel.mxid_freeze_max_age) AS freeze_frac,
           rel.n_dead_tup::float8 / greatest(rel.n_live_tup + rel.n_dead_tup, 1) AS dead_ratio,
           rel.n_mod_since_analyze::float8 / greatest(rel.n_live_tup, rel.reltuples, 1) AS mod_ratio
      FROM rel
)
SELECT need.*,
       (SELECT count(*) FROM rel) AS considered,
       need.freeze_frac >= %(freeze_fraction)s AS needs_freeze,
       (need.n_dead_tup >= %(dead_tuples)s AND need.dead_ratio >= %(dead_ratio)s AND need.n_dead_tup > 0)
           AS needs_vacuum,
       (need.n_mod_since_analyze >= %(changes)s AND need.mod_ratio >= %(changed_ratio)s
           AND need.n_mod_since_analyze > 0) AS needs_analyze,
       (need.nspname, need.relname) IN (SELECT * FROM unnest(%(inc_schema)s::text[], %(inc_table)s::text[]))
           AS included
  FROM need
 WHERE need.freeze_frac >= %(freeze_fraction)s
    OR (need.n_dead_tup >= %(dead_tuples)s AND need.dead_ratio >= %(dead_ratio)s AND need.n_dead_tup > 0)
    OR (need.n_mod_since_analyze >= %(changes)s AND need.mod_ratio >= %(changed_ratio)s
        AND need.n_mod_since_analyze > 0)
    OR (need.nspname, need.relname) IN (SELECT * FROM unnest(%(inc_schema)s::text[], %(inc_table)s::text[]))
""").format(freeze_max_ages=FREEZE_MAX_AGES, permitted=sql.SQL(permitted_sql("c.relowner", "cfg.datdba")))

STATS_SQL = """
SELECT coalesce(s.n_dead_tup, 0) AS n_dead_tup, coalesce(s.n_live_tup, 0) AS n_live_tup,
       coalesce(s.n_mod_since_analyze, 0) AS n_mod_since_analyze,
       greatest(pg_catalog.age(c.relfrozenxid), coalesce(pg_catalog.age(t.relfrozenxid), 0))::bigint AS xid_age,
       greatest(pg_catalog.mxid_age(c.relminmxid), coalesce(pg_catalog.mxid_age(t.relminmxid), 0))::bigint AS mxid_age,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze
  FROM pg_catalog.pg_class c
  LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
  LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
 WHERE c.oid = %s
"""


@dataclass
class Selection:
    targets: list[VacuumTarget]
    considered: int
    not_permitted: list[str]
    not_found: list[str]


def select(
    conn: psycopg.Connection,
    plan: VacuumPlan,
    *,
    mode: str,
    include: Iterable[tuple[str, str]] = (),
    only: Iterable[tuple[str, str]] | None = None,
    carried: dict[tuple[str, str], Action] | None = None,
) -> Selection:
    """Targets in the order to process them: carried over from an unfinished run first, then by urgency.

    `mode` "vacuum" selects by every need; "analyze" only the plan's hot tables (stale statistics).
    `only` (a run's explicit `tables` option) processes exactly those tables, needed or not.
    `carried` maps tables left by an earlier run to the action they still need.
    """
    carried = dict(carried or {})
    forced = set(only) if only is not None else set()
    wanted = forced | set(carried) | set(include)
    t = plan.thresholds
    params = {
        "schemas": list(plan.schemas),
        "exclude_schemas": list(plan.exclude_schemas),
        "freeze_fraction": t.freeze_age_fraction,
        "dead_tuples": t.dead_tuples,
        "dead_ratio": t.dead_ratio,
        "changes": t.changes_since_analyze,
        "changed_ratio": t.changed_ratio,
        "inc_schema": [s for s, _ in wanted],
        "inc_table": [n for _, n in wanted],
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(CANDIDATES_SQL, params).fetchall()
    # An empty selection still reports how many tables were looked at.
    considered = rows[0]["considered"] if rows else _count_tables(conn, plan)
    excluded = plan.excluded()
    hot = set(include)
    seen: set[tuple[str, str]] = set()
    targets: list[VacuumTarget] = []
    not_permitted: list[str] = []
    for row in rows:
        key = (row["nspname"], row["relname"])
        seen.add(key)
        if only is not None and key not in forced:
            continue
        if key in excluded and key not in forced:
            continue
        target = _target(row, mode, forced=key in forced, carried=carried.get(key),
                         hot=key in hot)
        if target is None:
            continue
        if not row["permitted"]:
            not_permitted.append(target.display)
            continue
        targets.append(target)
    targets.sort(key=lambda x: (not x.carried_over, -x.urgency, -x.stats["n_dead_tup"], x.display))
    not_found = sorted(display(*k) for k in (forced | hot) - seen)
    return Selection(targets=targets, considered=int(considered or 0), not_permitted=not_permitted,
                     not_found=not_found)


def _target(row: dict[str, Any], mode: str, *, forced: bool, carried: Action | None,
            hot: bool) -> VacuumTarget | None:
    reasons: list[str] = []
    action: Action | None = None
    urgency = 0.0
    if mode == "vacuum":
        if row["needs_freeze"]:
            action = "freeze"
            urgency = max(urgency, row["freeze_frac"])
            reasons.append(
                f"freeze age {row['xid_age']:,} xids / {row['mxid_age']:,} multixacts is "
                f"{row['freeze_frac']:.0%} of autovacuum_freeze_max_age {row['freeze_max_age']:,}"
            )
        if row["needs_vacuum"]:
            action = stronger(action or "vacuum", "vacuum")
            urgency = max(urgency, row["dead_ratio"])
            reasons.append(f"{row['n_dead_tup']:,} dead tuples ({row['dead_ratio']:.0%})")
    if row["needs_analyze"] and (mode == "vacuum" or hot or forced):
        action = stronger(action or "analyze", "analyze")
        urgency = max(urgency, 0.5 * min(row["mod_ratio"], 1.0))
        reasons.append(f"{row['n_mod_since_analyze']:,} rows changed since the last analyze")
    elif mode == "analyze" and (hot or forced) and row["n_mod_since_analyze"] > 0:
        # Hot tables are analyzed on every change, like the seeds' hourly ANALYZE but only when it helps.
        action = "analyze"
        urgency = max(urgency, 0.5 * min(row["mod_ratio"], 1.0))
        reasons.append(f"hot table: {row['n_mod_since_analyze']:,} rows changed since the last analyze")
    if carried is not None:
        action = stronger(action or carried, carried) if mode == "vacuum" else "analyze"
        reasons.insert(0, "left by an earlier run")
    if forced and action is None:
        action = "vacuum" if mode == "vacuum" else "analyze"
        reasons.append("requested")
    if action is None:
        return None
    with_analyze = action != "freeze" or bool(
        row["needs_vacuum"] or row["needs_analyze"] or forced or carried is not None
    )
    stats = {k: row[k] for k in ("n_live_tup", "n_dead_tup", "n_mod_since_analyze", "xid_age", "mxid_age",
                                 "freeze_max_age", "mxid_freeze_max_age", "last_vacuum", "last_analyze")}
    return VacuumTarget(schema=row["nspname"], name=row["relname"], oid=row["oid"], action=action, reasons=reasons,
                  urgency=round(float(urgency), 4), carried_over=carried is not None, with_analyze=with_analyze,
                  stats=stats)


def _count_tables(conn: psycopg.Connection, plan: VacuumPlan) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' "
        "AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_(toast|temp_)' "
        "AND (pg_catalog.cardinality(%s::text[]) = 0 OR n.nspname = ANY (%s::text[])) "
        "AND n.nspname <> ALL (%s::text[])",
        [list(plan.schemas), list(plan.schemas), list(plan.exclude_schemas)],
    ).fetchone()
    return int(row[0]) if row else 0


def table_stats(conn: psycopg.Connection, oid: int) -> dict[str, Any]:
    """Counters of one table now: VACUUM and ANALYZE report theirs synchronously, so this is current."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(STATS_SQL, [oid]).fetchone() or {}
