"""A table target checked against the live catalog before anything is deleted.

Every problem is collected (missing table or column, wrong column type, missing privilege, a value
that does not fit its column), so `pgkeeper plan check` and a run both name all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ..errors import first_line
from ..idents import QualifiedName, display
from ..plan.base import column_ident, split_name
from ..plan.cleanup import CleanupTarget
from . import predicate

EXPIRY_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence", "i": "an index",
          "c": "a composite type", "I": "a partitioned index", "t": "a TOAST table"}


class TargetProblems(Exception):  # noqa: N818 - a carrier of problems, raised and caught inside this package
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Heap(QualifiedName):
    """A relation with storage that batches walk: the table itself, or one of its partitions."""

    oid: int
    schema: str
    name: str
    pk: tuple[str, ...] = ()
    expiry_indexed: bool = False
    """A valid index leads with the expiry column (the index path and the early-stop count need one)."""


@dataclass
class TableTarget(QualifiedName):
    spec: CleanupTarget
    oid: int
    schema: str
    name: str
    relkind: str
    heaps: list[Heap]
    columns: dict[str, str] = field(default_factory=dict)
    times: dict[str, datetime] = field(default_factory=dict)
    """The condition's cutoffs, resolved once from the server's clock when the target was checked."""
    checked_ms: float = 0.0
    """How long checking it against the catalog took (reported: it is part of the target's cost)."""


def resolve_table(conn: psycopg.Connection, spec: CleanupTarget) -> TableTarget:
    """The target's table, columns and storage; raises TargetProblems listing everything wrong."""
    assert spec.table is not None and spec.expiry_column is not None
    schema, name = split_name(spec.table)
    shown = display(schema, name)
    row = conn.execute(
        "SELECT c.oid, c.relkind,"
        "  (SELECT pg_catalog.array_agg(ARRAY[a.attname::text,"
        "     pg_catalog.format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid), NULL)] ORDER BY a.attnum)"
        "   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        [schema, name],
    ).fetchone()
    if row is None:
        raise TargetProblems([f"table {shown} does not exist"])
    oid, relkind, pairs = row
    if relkind not in ("r", "p"):
        raise TargetProblems([f"{shown} is {_KINDS.get(relkind, 'not a table')}, not a table"])
    columns = {col: typ for col, typ in pairs or []}
    problems: list[str] = []

    def missing(column: str, role: str) -> None:
        known = ", ".join(display_col(c) for c in list(columns)[:20])
        problems.append(f"{role} {display_col(column)} does not exist in {shown} (its columns: {known})")

    expiry = column_ident(spec.expiry_column)
    if expiry not in columns:
        missing(expiry, "expiry_column")
    elif columns[expiry] not in EXPIRY_TYPES:
        problems.append(f"expiry_column {display_col(expiry)} of {shown} is {columns[expiry]}; "
                        f"it must be a timestamp or a date")
    for group in ("or_if", "only_if"):
        for i, clause in enumerate(getattr(spec, group)):
            col = column_ident(clause.column)
            if col not in columns:
                missing(col, f"{group}[{i}].column")
            elif clause.op == "older_than" and columns[col] not in EXPIRY_TYPES:
                problems.append(f"{group}[{i}]: older_than needs a timestamp or date column; "
                                f"{display_col(col)} is {columns[col]}")

    heaps, kinds, lacking = _storage(conn, oid, expiry)
    for heap_kind, heap_name in kinds:
        problems.append(f"{heap_name} (a partition or child of {shown}) is {_KINDS.get(heap_kind, heap_kind)}; "
                        "cleanup only deletes from tables")
    for heap, privileges in lacking:
        problems.append(f"the database user lacks {' and '.join(privileges)} on {heap.display}: "
                        f"GRANT {', '.join(privileges)} ON {heap.display} TO <pgkeeper's user>")
    if problems:
        raise TargetProblems(problems)

    target = TableTarget(spec, oid, schema, name, relkind, heaps, columns)
    _check_condition(conn, target)
    return target


def display_col(column: str) -> str:
    return display("x", column)[2:]


def _storage(conn: psycopg.Connection, oid: int, expiry: str
             ) -> tuple[list[Heap], list[tuple[str, str]], list[tuple[Heap, list[str]]]]:
    """The table and every descendant (partitions, inheritance children) that holds rows, in one query:
    their primary keys, whether an index leads with the expiry column, and our privileges on them."""
    rows = conn.execute(
        "WITH RECURSIVE tree(oid, depth) AS ("
        " SELECT %s::oid, 0"
        " UNION ALL SELECT i.inhrelid, tree.depth + 1"
        " FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)"
        " SELECT c.oid, n.nspname, c.relname, c.relkind,"
        "  (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord) FROM pg_catalog.pg_index i"
        "   CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
        "   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        "   WHERE i.indrelid = c.oid AND i.indisprimary),"
        "  EXISTS (SELECT 1 FROM pg_catalog.pg_index i"
        "   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        "   WHERE i.indrelid = c.oid AND i.indisvalid AND a.attname = %s),"
        "  pg_catalog.has_table_privilege(c.oid, 'SELECT'), pg_catalog.has_table_privilege(c.oid, 'DELETE')"
        " FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " ORDER BY tree.depth, c.relname",
        [oid, expiry],
    ).fetchall()
    heaps: list[Heap] = []
    other: list[tuple[str, str]] = []
    lacking: list[tuple[Heap, list[str]]] = []
    for r_oid, schema, name, kind, pk, indexed, can_select, can_delete in rows:
        if kind == "p":
            continue
        if kind != "r":
            other.append((kind, display(schema, name)))
            continue
        heap = Heap(r_oid, schema, name, tuple(pk or ()), bool(indexed))
        heaps.append(heap)
        missing = [p for p, ok in (("SELECT", can_select), ("DELETE", can_delete)) if not ok]
        if missing:
            lacking.append((heap, missing))
    return heaps, other, lacking


def _check_condition(conn: psycopg.Connection, target: TableTarget) -> None:
    """Plan (never run) the condition against the table: values must fit their columns' types."""
    spec = target.spec
    try:
        times = target.times = predicate.resolve_times(conn, spec)
        pred = predicate.build(spec, times)
        conn.execute(
            sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(target.ident, pred.sql), pred.params
        ).fetchall()
    except (psycopg.DataError, psycopg.ProgrammingError) as exc:
        raise TargetProblems([f"the condition does not fit {target.display}: {first_line(exc)} "
                              f"(condition: {predicate.describe(spec)})"]) from None
