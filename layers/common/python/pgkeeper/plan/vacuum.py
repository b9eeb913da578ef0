"""The `vacuum:` section: when a table needs VACUUM / ANALYZE / a proactive freeze, which hot tables
get an extra ANALYZE, which indexes must exist, and the health report's thresholds.

Thresholds select tables by need (flexible-freeze, pgHero): a weekly run touches the ~10% of tables
that are dirty, stale or old, not all of them like a fixed `VACUUM ANALYZE` list or `vacuumdb`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from ..idents import parse_name
from .base import ColumnName, Model, SqlName, split_name


def _schema_name(value: str) -> str:
    # Case-folded like Postgres does (`"Sales"` stays Sales, `Sales` becomes sales).
    return parse_name(value, max_parts=1)[0]


SchemaName = Annotated[str, AfterValidator(_schema_name)]


class Thresholds(Model):
    """A table is selected when it crosses ANY of these (dead tuples need both count and ratio)."""

    dead_tuples: int = Field(1000, ge=0, description="n_dead_tup at least this ...")
    dead_ratio: float = Field(0.05, ge=0, le=1, description="... and dead / (live + dead) at least this")
    changes_since_analyze: int = Field(1000, ge=0, description="n_mod_since_analyze at least this ...")
    changed_ratio: float = Field(0.1, ge=0, description="... and at least this fraction of the rows")
    freeze_age_fraction: float = Field(
        0.5, gt=0, le=1,
        description="age(relfrozenxid) or mxid_age(relminmxid) at least this fraction of the table's "
                    "effective autovacuum_(multixact_)freeze_max_age: freeze it now, before autovacuum must",
    )


class ExpectedIndex(Model):
    """An index the application relies on (the seeds' verify-indexes.sql), checked by the health report."""

    table: SqlName
    columns: list[ColumnName] = Field(min_length=1, description="key columns, in index order")
    name: str | None = Field(None, description="the index's name, if it must be exactly this one")


class HealthThresholds(Model):
    """When a health finding becomes a warning or critical."""

    long_transaction_s: int = Field(300, ge=0, description="transactions open longer: warning")
    long_transaction_critical_s: int = Field(3600, ge=0)
    idle_in_transaction_s: int = Field(60, ge=0, description="sessions idle in transaction longer: warning")
    sequence_warning_pct: float = Field(75, gt=0, le=100)
    sequence_critical_pct: float = Field(90, gt=0, le=100)
    cache_hit_warning: float = Field(0.95, ge=0, le=1, description="below this (with enough reads): warning")
    bloat_warning_pct: float = Field(50, ge=0, le=100)
    bloat_warning_bytes: int = Field(100 * 1024 * 1024, ge=0, description="and at least this much estimated bloat")
    top: int = Field(10, ge=1, le=100, description="rows per per-table list (worst first)")


class VacuumPlan(Model):
    schemas: list[SchemaName] = Field(
        default_factory=list, description="schemas to consider; empty: every schema but the system ones"
    )
    exclude_schemas: list[SchemaName] = Field(default_factory=lambda: ["pgkeeper"])
    exclude_tables: list[SqlName] = Field(default_factory=list, description="never vacuumed by pgkeeper")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    analyze: list[SqlName] = Field(
        default_factory=list, description="hot tables analyzed by the frequent `mode: analyze` run when changed"
    )
    reindex_invalid: bool = Field(False, description="rebuild invalid indexes with REINDEX INDEX CONCURRENTLY")
    expected_indexes: list[ExpectedIndex] = Field(default_factory=list)
    health: HealthThresholds = Field(default_factory=HealthThresholds)
    min_seconds_per_table: float = Field(
        2.0, gt=0, description="do not start another table with less Lambda time left than this"
    )

    def excluded(self) -> set[tuple[str, str]]:
        return {split_name(t) for t in self.exclude_tables}
