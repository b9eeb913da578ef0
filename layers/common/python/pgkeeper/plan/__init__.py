"""The plan file: one YAML document describing the user's database and what to keep healthy.

It is validated once (at cold start or by `pgkeeper plan check`) and every problem is reported
at once, each with its path in the file (`refresh.views[2].definition: file not found`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..errors import PlanError
from .backup import BackupPlan
from .base import Model
from .cache import CachePlan
from .cleanup import CleanupPlan
from .database import DatabaseSettings
from .heartbeat import HeartbeatPlan
from .refresh import RefreshPlan, ViewSpec
from .signing import SigningPlan
from .vacuum import VacuumPlan

__all__ = ["Plan", "ViewSpec", "load_plan", "parse_plan", "format_errors", "PLAN_ENV"]

PLAN_ENV = "PGKEEPER_PLAN"


class Plan(Model):
    version: int = Field(1, ge=1, le=1)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    refresh: RefreshPlan = Field(default_factory=RefreshPlan)
    cleanup: CleanupPlan = Field(default_factory=CleanupPlan)
    vacuum: VacuumPlan = Field(default_factory=VacuumPlan)
    backup: BackupPlan = Field(default_factory=BackupPlan)
    cache: CachePlan = Field(default_factory=CachePlan)
    signing: SigningPlan = Field(default_factory=SigningPlan)
    heartbeat: HeartbeatPlan = Field(default_factory=HeartbeatPlan)


def format_errors(exc: ValidationError) -> list[str]:
    """`refresh.views[2].definition: file not found` — the path a user can find in their file."""
    problems = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        problems.append(f"{path or '(top level)'}: {msg}")
    return problems


def parse_plan(data: object, *, base_dir: Path, source: str) -> Plan:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PlanError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        return Plan.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise PlanError(source, format_errors(exc)) from None


def load_plan(path: str | os.PathLike[str] | None = None) -> Plan:
    """Read and validate the plan named by `path`, else by $PGKEEPER_PLAN."""
    raw = path or os.environ.get(PLAN_ENV)
    if not raw:
        raise PlanError("(none)", [f"no plan file: set {PLAN_ENV} to the plan's path"])
    p = Path(raw)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(str(p), [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise PlanError(str(p), [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_plan(data, base_dir=p.parent, source=str(p))
