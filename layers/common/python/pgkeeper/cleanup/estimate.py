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
    total, matching = conn.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {cond}) FROM ONLY {rel} "
                "TABLESAMPLE SYSTEM (%s) REPEATABLE (0) WHERE {extra}").format(
            cond=pred.sql, rel=heap.ident, extra=extra),
        (*pred.params, percent, *extra_params),
    ).fetchone()
    scale = 100.0 / percent
    return Estimate(round(total * scale), round(matching * scale), exact=percent >= 100.0)


def planner_rows(conn: psycopg.Connection, heaps: list[Heap]) -> int | None:
    """The planner's row count for the table (reltuples scaled to its current size); None if never analyzed."""
    row = conn.execute(
        "SELECT sum(CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages * "
        "  (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint) ELSE 0 END), "
        "  bool_or(c.reltuples < 0) "
        "FROM pg_catalog.pg_class c WHERE c.oid = ANY(%s::oid[])",
        [[h.oid for h in heaps]],
    ).fetchone()
    if row is None or row[0] is None or row[1]:
        return None
    return int(row[0])
