"""The `refresh:` section: which materialized views to keep fresh and how to repair them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from .base import ColumnName, Model, SqlName, column_ident, plan_file, split_name
from .cache import CacheInvalidation


class ViewSpec(Model):
    name: SqlName = Field(description='`mv_x`, `schema.mv_x` or Prisma-style `"Companion_mv"`; unqualified: public')
    definition: Path | None = Field(
        None, description="SQL file: CREATE MATERIALIZED VIEW ... plus its CREATE INDEX statements"
    )
    concurrently: bool | None = Field(
        None,
        description="None: CONCURRENTLY when the view has a unique index on plain columns, else plain. "
        "true: CONCURRENTLY or fail (never block readers). false: always a plain REFRESH.",
    )
    cache: CacheInvalidation | None = None

    @field_validator("definition", mode="before")
    @classmethod
    def _definition_exists(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return None
        path = plan_file(str(value), info)
        name = info.data.get("name")
        if name is not None:
            # Parsed now, so a broken file is reported at cold start / `plan check --offline`,
            # with every other problem of the plan, instead of in the middle of a repair.
            from ..refresh.definitions import DefinitionError, load_definition

            schema, view = split_name(name)
            try:
                load_definition(path, schema, view)
            except DefinitionError as exc:
                raise ValueError(f"{value}: {exc}") from None
        return path


class RefreshPlan(Model):
    schemas: list[ColumnName] = Field(
        default_factory=lambda: ["public"],
        description="with no `views`, every materialized view in these schemas is refreshed",
    )
    views: list[ViewSpec] = Field(default_factory=list)

    @property
    def schema_names(self) -> list[str]:
        """`schemas` as Postgres names them (`"Reports"` -> Reports, `Public` -> public)."""
        return [column_ident(s) for s in self.schemas]

    @field_validator("views")
    @classmethod
    def _each_view_once(cls, views: list[ViewSpec]) -> list[ViewSpec]:
        seen: dict[tuple[str, str], int] = {}
        dupes = []
        for i, v in enumerate(views):
            key = split_name(v.name)
            if key in seen:
                dupes.append(f"[{i}] {v.name} is listed again (first at [{seen[key]}])")
            seen.setdefault(key, i)
        if dupes:
            raise ValueError("; ".join(dupes))
        return views
