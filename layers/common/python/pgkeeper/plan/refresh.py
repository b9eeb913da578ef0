"""The `refresh:` section: which materialized views to keep fresh and how to repair them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from .base import Model, SqlName, plan_file


class CacheInvalidation(Model):
    """Cache keys that depend on a view: cleared only after that view refreshed successfully."""

    patterns: list[str] = Field(default_factory=list, description="SCAN MATCH patterns to UNLINK")
    version_keys: list[str] = Field(default_factory=list, description="keys to INCR")


class ViewSpec(Model):
    name: SqlName
    definition: Path | None = Field(
        None, description="SQL file: CREATE MATERIALIZED VIEW ... plus its CREATE INDEX statements"
    )
    concurrently: bool | None = Field(None, description="None: decide from the view's indexes")
    cache: CacheInvalidation | None = None

    @field_validator("definition", mode="before")
    @classmethod
    def _definition_exists(cls, value: object, info: ValidationInfo) -> object:
        return None if value is None else plan_file(str(value), info)


class RefreshPlan(Model):
    schemas: list[str] = Field(
        default_factory=lambda: ["public"],
        description="with no `views`, every materialized view in these schemas is refreshed",
    )
    views: list[ViewSpec] = Field(default_factory=list)
