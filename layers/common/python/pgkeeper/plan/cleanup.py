"""The `cleanup:` section: which expired rows to delete, and the rails that keep the deletes safe.

A table target's condition is structured, not SQL text: the expiry column, an optional grace
period and clauses of the form `{column, op, value}`. Columns reach SQL only through
`sql.Identifier`, values only as parameters, operators only from a fixed list, and every clause
narrows or (in `or_if`) names an explicit alternative. So a plan cannot inject SQL, and a typo is
a validation error rather than a broader DELETE. Columns and value types are checked against the
live table by `pgkeeper plan check` and again before anything is deleted.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from .base import ColumnName, Model, SqlName

# Whole units only, no sign: a negative grace would reach into rows that have not expired yet.
_INTERVAL = re.compile(
    r"^\s*(\d+\s*(microseconds?|milliseconds?|seconds?|secs?|s|minutes?|mins?|hours?|h|days?|d|weeks?|w|"
    r"months?|years?)\s*)+$",
    re.IGNORECASE,
)


def _interval(value: str) -> str:
    if not _INTERVAL.match(value):
        raise ValueError(f"not an interval like '30 minutes' or '7 days': {value!r} (whole units, no sign)")
    return value.strip()


Interval = Annotated[str, AfterValidator(_interval)]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr

COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
"""Operators that take one value; `<>` keeps SQL's NULL rule (a NULL never matches, so never deleted)."""


class Clause(Model):
    """One condition on one column: `{column: used_at, op: is_not_null}`, `{column: kind, op: in, value: [a, b]}`.

    `older_than` compares a timestamp column with the run's start minus an interval (`value: 30 days`).
    """

    column: ColumnName
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null", "is_not_null", "older_than"]
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Clause:
        op, value = self.op, self.value
        if op in ("is_null", "is_not_null"):
            if value is not None:
                raise ValueError(f"op {op} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"op {op} needs a non-empty list as value")
        elif op == "older_than":
            if not isinstance(value, str):
                raise ValueError("op older_than needs an interval as value, e.g. '30 days'")
            _interval(value)
        elif value is None or isinstance(value, list):
            raise ValueError(f"op {op} needs one value (use is_null / is_not_null for NULL)")
        return self


_TARGET_NAME = r"^[A-Za-z0-9_.:\-]{1,64}$"


class CleanupTarget(Model):
    """A table whose expired rows go (batched by pgkeeper), or a DB-side function to call."""

    name: str | None = Field(
        None, pattern=_TARGET_NAME,
        description="how reports, metrics and the `targets` option call it; default the table or function",
    )
    table: SqlName | None = Field(None, description='`sessions`, `auth.sessions` or Prisma\'s `"Session"`')
    expiry_column: ColumnName | None = Field(
        None, description="timestamp/date column: a row matches when it is earlier than the run's start"
    )
    grace: Interval | None = Field(None, description="only rows expired more than this long ago, e.g. '1 hour'")
    or_if: list[Clause] = Field(
        default_factory=list, description="a row also matches when ANY of these holds (e.g. used_at is_not_null)"
    )
    only_if: list[Clause] = Field(default_factory=list, description="and only when ALL of these hold")
    function: SqlName | None = Field(
        None, description="a function taking no arguments that deletes and returns counts"
    )
    total_column: ColumnName | None = Field(
        None, description="function: the returned column holding the total (default: a `total*` column, else the sum)"
    )
    allow_large: bool = Field(False, description="switch the safety rail off for this target")
    max_fraction: float | None = Field(None, gt=0, le=1, description="overrides cleanup.max_fraction")
    max_rows: int | None = Field(None, ge=1, description="overrides cleanup.max_rows")

    @model_validator(mode="after")
    def _one_kind(self) -> CleanupTarget:
        if (self.table is None) == (self.function is None):
            raise ValueError("give exactly one of `table` (with `expiry_column`) or `function`")
        if self.table is not None:
            if self.expiry_column is None:
                raise ValueError("a table target needs `expiry_column` (the column that says when a row expires)")
            if self.total_column is not None:
                raise ValueError("`total_column` is for function targets")
        else:
            table_only = ("expiry_column", "grace", "or_if", "only_if", "max_fraction", "max_rows", "allow_large")
            used = [f for f in table_only if f in self.model_fields_set]
            if used:
                raise ValueError(f"{', '.join(used)}: only for table targets (a function decides its own rows)")
        return self

    @property
    def key(self) -> str:
        return self.name or self.table or self.function or ""


class CleanupPlan(Model):
    targets: list[CleanupTarget] = Field(default_factory=list)
    target_transaction_ms: int = Field(
        100, ge=5, le=60_000, description="each delete transaction is sized to take about this long"
    )
    max_transaction_ms: int | None = Field(
        None, ge=10, description="hard cap per transaction (statement_timeout; default 1.5 x target): "
                                 "a batch that would run longer is cancelled and retried smaller"
    )
    lock_timeout_ms: int | None = Field(
        None, ge=1, description="wait this long for a row the app holds before skipping locked rows "
                                "(default: a quarter of the target, at most database.lock_timeout_ms)"
    )
    max_fraction: float = Field(
        0.5, gt=0, le=1, description="safety rail: refuse a target matching more than this share of its table"
    )
    max_rows: int | None = Field(None, ge=1, description="safety rail: refuse a target matching more rows")
    analyze_fraction: float | None = Field(
        0.1, gt=0, le=1, description="ANALYZE a table after deleting at least this share of it (null: never)"
    )
    timezone: str = Field(
        "UTC", pattern=r"^[A-Za-z0-9_/+\-]{1,64}$",
        description="how `timestamp without time zone` columns are read (Prisma stores UTC)",
    )
    async_commit: bool = Field(
        True, description="commit batches with synchronous_commit=off: no WAL-flush wait per batch; a crash can "
                          "only forget the last batches' deletes, which the next run repeats"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CleanupPlan:
        seen: set[str] = set()
        for t in self.targets:
            if t.key in seen:
                raise ValueError(f"two targets are called {t.key!r}: give one a distinct `name`")
            seen.add(t.key)
        if self.max_transaction_ms is not None and self.max_transaction_ms <= self.target_transaction_ms:
            raise ValueError("max_transaction_ms must be larger than target_transaction_ms")
        return self

    @property
    def cap_ms(self) -> int:
        return self.max_transaction_ms or int(self.target_transaction_ms * 1.5)

    def row_lock_timeout_ms(self, database_lock_timeout_ms: int) -> int:
        if self.lock_timeout_ms is not None:
            return self.lock_timeout_ms
        return max(5, min(database_lock_timeout_ms, self.target_transaction_ms // 4))
