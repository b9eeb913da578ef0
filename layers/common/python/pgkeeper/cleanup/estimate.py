"""How many rows match, without reading the whole table: counts over a block sample.

`TABLESAMPLE SYSTEM` reads whole random blocks, about SAMPLE_BLOCKS of them whatever the table's
size (a few milliseconds), so the safety rail and the "remaining" of a partial run cost little.
Tables of up to SAMPLE_BLOCKS blocks are read entirely, and their counts are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .predicate import Predicate
from .resolve import Heap
from .walkers import relation_blocks

SAMPLE_BLOCKS = 1000


@dataclass
class Estimate:
    rows: int = 0
    matching: int = 0
    exact: bool = True

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.rows + other.rows, self.matching + other.matching, self.exact and other.exact)

    @property
    def fraction(self) -> float:
        return self.matching / self.rows if self.rows else 0.0


def sample(conn: psycopg.Connection, heap: Heap, pred: Predicate,
           where: tuple[sql.Composable, tuple[Any, ...]] | None = None) -> Estimate:
    """Rows and matching rows of `heap` (only those satisfying `where`, if given), scaled from a sample."""
    nblocks = relation_blocks(conn, heap.oid)
    if nblocks == 0:
        return Estimate()
    percent = 100.0 if nblocks <= SAMPLE_BLOCKS else 100.0 * SAMPLE_BLOCKS / nblocks
    extra, extra_params = where or (sql.SQL("true"), ())
    row = conn.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {cond}) FROM ONLY {rel} "
                "TABLESAMPLE SYSTEM (%s) REPEATABLE (0) WHERE {extra}").format(
            cond=pred.sql, rel=heap.ident, extra=extra),
        (*pred.params, percent, *extra_params),
    ).fetchone()
    assert row is not None  # aggregates without GROUP BY: always one row
    total, matching = row
    scale = 100.0 / percent
    return Estimate(round(total * scale), round(matching * scale), exact=percent >= 100.0)


@dataclass(frozen=True)
class HeapStats:
    blocks: int
    rows: int | None
    """The planner's row count scaled to the current size; None if never analyzed."""
    correlation: float | None
    """How closely the expiry column follows the physical order (ANALYZE's statistic), if known."""


def heap_stats(conn: psycopg.Connection, heaps: list[Heap], column: str) -> dict[int, HeapStats]:
    """Size, planner row count and expiry correlation of every heap, in one round trip."""
    rows = conn.execute(
        "SELECT c.oid, s.blocks,"
        "  CASE WHEN c.reltuples < 0 THEN NULL WHEN c.relpages > 0 THEN c.reltuples / c.relpages * s.blocks"
        "       ELSE 0 END,"
        "  (SELECT st.correlation FROM pg_catalog.pg_stats st"
        "   WHERE st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = %s)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " CROSS JOIN LATERAL (SELECT pg_catalog.pg_relation_size(c.oid)"
        "   / pg_catalog.current_setting('block_size')::bigint AS blocks) s"
        " WHERE c.oid = ANY(%s::oid[])",
        [column, [h.oid for h in heaps]],
    ).fetchall()
    return {r[0]: HeapStats(int(r[1]), None if r[2] is None else int(r[2]),
                            None if r[3] is None else float(r[3])) for r in rows}


CORRELATED = 0.5
"""pg_stats.correlation above which expired (low) values sit mostly at the start of the heap."""


def index_count(conn: psycopg.Connection, heap: Heap, pred: Predicate) -> int | None:
    """The exact number of matching rows, read from an index alone (an Index Only Scan), or None.

    Only attempted when the planner answers from the index without visiting the table (all-visible
    pages); bounded by the connection's statement_timeout (the batch cap) in case many pages are not
    all-visible after all.
    """
    query = sql.SQL("SELECT count(*) FROM ONLY {} WHERE {}").format(heap.ident, pred.sql)
    try:
        row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, pred.params).fetchone()
        assert row is not None  # EXPLAIN (FORMAT JSON) returns its plan as one row
        types = set()
        stack = [row[0][0]["Plan"]]
        while stack:
            node = stack.pop()
            types.add(node["Node Type"])
            stack += node.get("Plans", [])
        if "Index Only Scan" not in types or types & {"Seq Scan", "Bitmap Heap Scan", "Index Scan"}:
            return None
        row = conn.execute(query, pred.params).fetchone()
        assert row is not None  # an aggregate without GROUP BY: always one row
        return int(row[0])
    except psycopg.errors.QueryCanceled:
        return None
