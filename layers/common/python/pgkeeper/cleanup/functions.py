"""A DB-side cleanup function (the seeds' `cleanup_all_expired_tokens()`): called, its counts reported.

The function decides its own rows and runs as one statement in one transaction: pgkeeper cannot
batch it, only bound it (statement_timeout, lock_timeout, the Lambda deadline) and report what it
returned. A dry run calls it in a transaction that is rolled back, so the counts are real and
nothing is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

import psycopg
from psycopg import sql

from ..idents import QualifiedName
from ..plan.base import column_ident, split_name
from ..plan.cleanup import CleanupTarget
from .resolve import TargetProblems
from .tables import TargetResult


@dataclass
class FunctionTarget(QualifiedName):
    spec: CleanupTarget
    schema: str
    name: str
    checked_ms: float = 0.0

    @property
    def display(self) -> str:
        return super().display + "()"


def resolve_function(conn: psycopg.Connection, spec: CleanupTarget) -> FunctionTarget:
    assert spec.function is not None
    schema, name = split_name(spec.function)
    target = FunctionTarget(spec, schema, name)
    rows = conn.execute(
        "SELECT p.prokind, p.pronargs - p.pronargdefaults, pg_catalog.has_function_privilege(p.oid, 'EXECUTE'), "
        "  COALESCE((SELECT pg_catalog.array_agg(a.name) "
        "   FROM ROWS FROM (pg_catalog.unnest(p.proargnames), pg_catalog.unnest(p.proargmodes)) AS a(name, mode)"
        "   WHERE a.mode IN ('o', 't', 'b')), ARRAY[p.proname]::text[]) "
        "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        [schema, name],
    ).fetchall()
    if not rows:
        raise TargetProblems([f"function {target.display} does not exist"])
    callable_ = [r for r in rows if r[0] == "f" and r[1] == 0]
    if not callable_:
        kinds = {r[0] for r in rows}
        what = "a procedure (CALL it from a function that returns counts)" if kinds == {"p"} else \
            "not a function that can be called without arguments"
        raise TargetProblems([f"{target.display} is {what}"])
    if not any(r[2] for r in callable_):
        raise TargetProblems([f"the database user lacks EXECUTE on {target.display}: "
                              f"GRANT EXECUTE ON FUNCTION {target.display} TO <pgkeeper's user>"])
    if spec.total_column and not any(column_ident(spec.total_column) in (r[3] or []) for r in callable_):
        raise TargetProblems([f"total_column {spec.total_column} is not a column {target.display} returns "
                              f"(it returns: {', '.join(callable_[0][3] or [])})"])
    return target


class FunctionTargetReport(TargetResult):
    """A function target's report: the integer columns the function returned and its total, which is
    null when it returned none (in a dry run, `would_delete` is the total and `rows_deleted` 0)."""

    SPARSE: ClassVar[frozenset[str]] = frozenset({"error"})
    ORDER: ClassVar[tuple[str, ...]] = ("target", "kind", "function", "dry_run", "counts", "rows_deleted",
                                        "transactions", "longest_transaction_ms", "outcome", "would_delete", "error")

    kind: Literal["function"] = "function"
    function: str
    dry_run: bool
    counts: dict[str, int]
    transactions: int
    longest_transaction_ms: float

    def _keeps(self, key: str, value: Any) -> bool:
        if key == "would_delete":
            return self.dry_run
        return super()._keeps(key, value)


def call(conn: psycopg.Connection, target: FunctionTarget, *, dry_run: bool) -> FunctionTargetReport:
    """Call the function once (a dry run in a transaction rolled back); the report's counts are the
    integer columns it returned."""
    started = time.perf_counter()
    with conn.transaction(force_rollback=dry_run):
        cur = conn.execute(sql.SQL("SELECT * FROM {}()").format(target.ident))
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    elapsed_ms = (time.perf_counter() - started) * 1000
    counts: dict[str, int] = {}
    for row in rows:
        for col, value in zip(names, row, strict=True):
            if isinstance(value, int | Decimal) and not isinstance(value, bool):
                counts[col] = counts.get(col, 0) + int(value)
    deleted = total(target.spec, counts)
    return FunctionTargetReport(
        target=target.spec.key, function=target.display, dry_run=dry_run, counts=counts,
        rows_deleted=0 if dry_run else deleted, would_delete=deleted if dry_run else None, transactions=1,
        longest_transaction_ms=round(elapsed_ms, 1), outcome="dry_run" if dry_run else "done")


def total(spec: CleanupTarget, counts: dict[str, int]) -> int | None:
    """The function's total: `total_column`, else its one `total*` column, else the sum of its counts."""
    if not counts:
        return None
    if spec.total_column:
        col = column_ident(spec.total_column)
        if col not in counts:
            raise TargetProblems([f"total_column {spec.total_column} is not among the integer columns "
                                  f"the function returned: {', '.join(counts)}"])
        return counts[col]
    totals = [c for c in counts if c.lower().startswith("total")]
    if len(totals) == 1:
        return counts[totals[0]]
    return sum(counts.values())
