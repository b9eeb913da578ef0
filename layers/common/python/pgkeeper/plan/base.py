"""Building blocks shared by every plan section: strict models, SQL names, plan-relative files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from ..idents import parse_name, qualify


class Model(BaseModel):
    """Unknown keys are errors: a typo in a plan must never silently turn a rule off."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _sql_name(value: str) -> str:
    parse_name(value)
    return value


def _column_name(value: str) -> str:
    parse_name(value, max_parts=1)
    return value


SqlName = Annotated[str, AfterValidator(_sql_name)]
"""`table`, `schema.table` or Prisma-style `"Session"`; validated, kept as written."""

ColumnName = Annotated[str, AfterValidator(_column_name)]


def split_name(value: str, default_schema: str = "public") -> tuple[str, str]:
    return qualify(value, default_schema)


def column_ident(value: str) -> str:
    return parse_name(value, max_parts=1)[0]


def plan_file(value: str, info: ValidationInfo) -> Path:
    """Resolve a path relative to the plan file and insist that it exists."""
    base = Path((info.context or {}).get("base_dir", "."))
    path = (base / value).resolve()
    if not path.is_file():
        raise ValueError(f"file not found: {value} (looked in {path.parent})")
    return path
