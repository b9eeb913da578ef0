"""A target's condition as SQL: `(expiry < cutoff [OR or_if...]) [AND only_if...]`.

Values travel as untyped text parameters, so PostgreSQL casts them to the column's type exactly as
it would a literal in the user's own SQL (and rejects one that does not fit). Times are resolved
once per run from the server's clock, so every batch and the dry run agree on what "expired" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..plan.base import column_ident
from ..plan.cleanup import COMPARISONS, Clause, CleanupTarget

NO_GRACE = "0 seconds"


@dataclass(frozen=True)
class Predicate:
    sql: sql.Composable
    params: tuple[Any, ...]
    cutoff: datetime
    """Rows whose expiry is earlier than this match."""


def intervals(spec: CleanupTarget) -> list[str]:
    """Every interval the condition needs resolved against the clock (grace first)."""
    found = [spec.grace or NO_GRACE]
    for clause in [*spec.or_if, *spec.only_if]:
        if clause.op == "older_than" and clause.value not in found:
            found.append(str(clause.value))
    return found


def resolve_times(conn: psycopg.Connection, spec: CleanupTarget) -> dict[str, datetime]:
    """`now() - interval` for each interval, all from one server timestamp."""
    wanted = intervals(spec)
    rows = conn.execute(
        "SELECT pg_catalog.now() - x::interval FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS t(x, i) "
        "ORDER BY i",
        [wanted],
    ).fetchall()
    return {w: r[0] for w, r in zip(wanted, rows, strict=True)}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def clause_sql(clause: Clause, times: dict[str, datetime]) -> tuple[sql.Composable, list[Any]]:
    col = sql.Identifier(column_ident(clause.column))
    op = clause.op
    if op in COMPARISONS:
        return sql.SQL("{} {} %s").format(col, sql.SQL(COMPARISONS[op])), [_text(clause.value)]
    if op in ("in", "not_in"):
        assert isinstance(clause.value, list)  # Clause's validator: a non-empty list for in / not_in
        values = [_text(v) for v in clause.value]
        holes = sql.SQL(", ").join(sql.Placeholder() * len(values))
        word = sql.SQL("IN" if op == "in" else "NOT IN")
        return sql.SQL("{} {} ({})").format(col, word, holes), values
    if op == "is_null":
        return sql.SQL("{} IS NULL").format(col), []
    if op == "is_not_null":
        return sql.SQL("{} IS NOT NULL").format(col), []
    # older_than
    return sql.SQL("{} < %s").format(col), [times[str(clause.value)]]


def build(spec: CleanupTarget, times: dict[str, datetime]) -> Predicate:
    assert spec.expiry_column is not None
    cutoff = times[spec.grace or NO_GRACE]
    head: sql.Composable = sql.SQL("{} < %s").format(sql.Identifier(column_ident(spec.expiry_column)))
    params: list[Any] = [cutoff]
    if spec.or_if:
        alternatives = [head]
        for clause in spec.or_if:
            text, values = clause_sql(clause, times)
            alternatives.append(text)
            params += values
        head = sql.SQL("({})").format(sql.SQL(" OR ").join(alternatives))
    parts = [head]
    for clause in spec.only_if:
        text, values = clause_sql(clause, times)
        parts.append(text)
        params += values
    return Predicate(sql.SQL(" AND ").join(parts), tuple(params), cutoff)


def describe(spec: CleanupTarget) -> str:
    """The condition in words for reports: `expires_at < now() OR used_at IS NOT NULL`."""
    head = f"{spec.expiry_column} < now()" + (f" - '{spec.grace}'" if spec.grace else "")

    def one(c: Clause) -> str:
        if c.op in COMPARISONS:
            return f"{c.column} {COMPARISONS[c.op]} {c.value!r}"
        if c.op in ("in", "not_in"):
            assert isinstance(c.value, list)  # Clause's validator: a non-empty list for in / not_in
            return f"{c.column} {'IN' if c.op == 'in' else 'NOT IN'} {tuple(c.value)!r}"
        if c.op == "older_than":
            return f"{c.column} < now() - '{c.value}'"
        return f"{c.column} {'IS NULL' if c.op == 'is_null' else 'IS NOT NULL'}"

    if spec.or_if:
        head = "(" + " OR ".join([head, *(one(c) for c in spec.or_if)]) + ")"
    return " AND ".join([head, *(one(c) for c in spec.only_if)])
