"""The plan file: one YAML document describing the user's database and what to keep healthy.

It is validated once (at cold start or by `pgkeeper plan check`) and every problem is reported
at once, each with its path in the file (`refresh.views[2].definition: file not found`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, ValidatorFunctionWrapHandler, model_validator

from ..errors import PlanError
from .backup import BackupPlan
from .base import Model
from .cache import CachePlan
from .cleanup import CleanupPlan
from .database import NULLABLE_KEYS, SOURCE_KEYS, DatabaseSettings
from .fleet import FleetPlan, deep_merge
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
    fleet: FleetPlan | None = Field(None, description="several databases, each with its own overrides")

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _context: dict[str, Any] = PrivateAttr(default_factory=dict)
    _members: dict[str, Plan] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Plan:
        """A fleet member's plan is this document with its overrides merged in, validated anew."""
        plan: Plan = handler(data)
        if isinstance(data, dict):
            plan._raw = copy.deepcopy({k: v for k, v in data.items() if k != "fleet"})
            plan._context = dict(info.context or {})
        return plan

    def for_database(self, name: str) -> Plan:
        """The plan of fleet member `name` (EventError when there is no such member)."""
        from ..errors import EventError

        if self.fleet is None:
            raise EventError(f"this deployment's plan has no fleet: it keeps one database, so requests name none "
                             f"(got database {name!r})", reason="bad_database")
        member = self.fleet.member(name)
        if member is None:
            raise EventError(f"no database {name!r} in the plan's fleet; known: {', '.join(self.fleet.names())}",
                             reason="bad_database")
        if name not in self._members:
            overrides = member.overrides()
            own = overrides.get("database") or {}
            if any(own.get(k) for k in SOURCE_KEYS):
                # A member naming where its database is never falls back to the deployment's: the
                # sources, host, port and name it does not name are none, not inherited (DATABASE_URL
                # and the plan's database.name are the home's).
                unset = {k: None if k in NULLABLE_KEYS else "" for k in (*SOURCE_KEYS, *NULLABLE_KEYS)}
                overrides["database"] = {**unset, **own}
            merged = deep_merge(self._raw, overrides)
            if member.heartbeat is not None:
                # A member's heartbeat is its own: its urls replace the plan's (the fan-out's), never merge.
                merged["heartbeat"] = {**merged.get("heartbeat", {}), "urls": member.heartbeat.get("urls") or {}}
            self._members[name] = Plan.model_validate(merged, context=self._context)
        return self._members[name]

    def home(self) -> Plan:
        """The plan whose database holds what belongs to the deployment rather than to one member
        (the signed-URL replay store): the first fleet member's, or this plan's without a fleet."""
        return self.for_database(self.fleet.databases[0].name) if self.fleet else self

    def member_plans(self) -> dict[str, Plan]:
        """Every member's plan, validated (parse_plan calls it so a member's mistake fails the load)."""
        return {name: self.for_database(name) for name in (self.fleet.names() if self.fleet else [])}


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
        plan = Plan.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise PlanError(source, format_errors(exc)) from None
    problems = []
    for index, name in enumerate(plan.fleet.names() if plan.fleet else []):
        try:
            plan.for_database(name)
        except ValidationError as exc:
            problems += [f"fleet.databases[{index}] ({name}): {p}" for p in format_errors(exc)]
    if problems:
        raise PlanError(source, problems)
    return plan


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
