"""How a table is cut into batches, each covering new ground so nothing is read twice.

A loop of `DELETE ... WHERE id IN (SELECT id ... LIMIT n)` starts every batch from the beginning of
the table (or of the index): it re-reads the rows it already deleted and the rows that never
matched, so its cost grows with every batch. Both walks here move a cursor forward instead:

- `TidRangeWalk` (PostgreSQL >= 14): batch k is `ctid >= (a,0) AND ctid < (b,0)`, a TID Range Scan
  over blocks [a, b). The heap is read once, in physical order, like the single DELETE's own scan.
- `KeysetWalk` (any version, needs a primary key): batch k is `pk > last AND pk <= bound`, the bound
  read from the primary-key index `n` entries ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .resolve import Heap


@dataclass(frozen=True)
class Range:
    where: sql.Composable
    params: tuple[Any, ...]
    size: int
    after: Any
    """The walk's position once this range is done."""
    label: str


def relation_blocks(conn: psycopg.Connection, oid: int) -> int:
    row = conn.execute(
        "SELECT pg_catalog.pg_relation_size(%s::oid) / pg_catalog.current_setting('block_size')::bigint", [oid]
    ).fetchone()
    return int(row[0]) if row else 0


class TidRangeWalk:
    unit = "blocks"
    initial = 8
    maximum = 1 << 22

    def __init__(self, heap: Heap, nblocks: int) -> None:
        self.heap = heap
        self.pos = 0
        self.nblocks = nblocks

    def next_range(self, conn: psycopg.Connection, size: int) -> Range | None:
        if self.pos >= self.nblocks:
            # The table may have grown while we walked: the walk ends where the table ends now.
            self.nblocks = relation_blocks(conn, self.heap.oid)
            if self.pos >= self.nblocks:
                return None
        end = min(self.pos + max(1, size), self.nblocks)
        where = sql.SQL("ctid >= %s::tid AND ctid < %s::tid")
        return Range(where, (f"({self.pos},0)", f"({end},0)"), end - self.pos, end, f"blocks {self.pos}-{end - 1}")

    def advance(self, rng: Range) -> None:
        self.pos = rng.after

    def unprocessed(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        return sql.SQL("ctid >= %s::tid"), (f"({self.pos},0)",)

    def progress(self) -> dict[str, int]:
        return {"blocks_walked": min(self.pos, self.nblocks), "blocks": self.nblocks}


class KeysetWalk:
    unit = "rows"
    initial = 500
    maximum = 1 << 22

    def __init__(self, heap: Heap) -> None:
        if not heap.pk:
            raise ValueError(f"{heap.display} has no primary key")
        self.heap = heap
        self.cols = sql.SQL(", ").join(sql.Identifier(c) for c in heap.pk)
        self.holes = sql.SQL(", ").join(sql.Placeholder() * len(heap.pk))
        self.last: tuple[Any, ...] | None = None
        self.done = False
        self.walked = 0

    def _after_last(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        if self.last is None:
            return sql.SQL("true"), ()
        return sql.SQL("({}) > ({})").format(self.cols, self.holes), self.last

    def next_range(self, conn: psycopg.Connection, size: int) -> Range | None:
        if self.done:
            return None
        lower, lower_params = self._after_last()
        bound = conn.execute(
            sql.SQL("SELECT {cols} FROM ONLY {rel} WHERE {lower} ORDER BY {cols} OFFSET %s LIMIT 1").format(
                cols=self.cols, rel=self.heap.ident, lower=lower),
            (*lower_params, max(1, size) - 1),
        ).fetchone()
        if bound is None:
            # Fewer than `size` rows are left: the last range is open-ended.
            return Range(lower, lower_params, size, None, "last key range")
        where = sql.SQL("{} AND ({}) <= ({})").format(lower, self.cols, self.holes)
        return Range(where, (*lower_params, *bound), size, tuple(bound), "key range")

    def advance(self, rng: Range) -> None:
        self.walked += rng.size
        if rng.after is None:
            self.done = True
        else:
            self.last = rng.after

    def unprocessed(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        return self._after_last()

    def progress(self) -> dict[str, int]:
        return {"keys_walked": self.walked}
