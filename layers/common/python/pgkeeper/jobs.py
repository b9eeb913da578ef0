"""What every job is: a name, a strict options model and a `run` function that knows no Lambda."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .budget import Budget
from .db import Database
from .metric_names import AlarmWindow
from .plan import Plan


class Options(BaseModel):
    """Base of every job's options: unknown keys are errors, not ignored, and nothing is coerced
    (`"dry_run": "yes"` or `1` is a 400, never a dry run or a real one by accident)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dry_run: bool = False


@dataclass
class JobContext:
    plan: Plan
    db: Database
    budget: Budget
    options: Any
    run_id: str
    trigger: str = "invoke"
    member: str | None = None
    """The fleet member this run is for (its name: backups go under it); None without a fleet."""
    invocation: Any = None
    """The Lambda context of the invocation (its function name: where workers are invoked)."""
    extra: dict[str, Any] = field(default_factory=dict)


Report = dict[str, Any]
"""A report in its one serialised form (JSON-able), as recorded in pgkeeper.runs and answered."""

JobOutcome = Literal["succeeded", "partial", "failed"]
"""How a job can end (`skipped` is the runner's alone: another run holds the lock)."""


class JobReport(BaseModel):
    """The envelope every job's report shares. A report without a valid `status` is a failed run,
    never a success by default; the job's own figures ride along as further fields."""

    model_config = ConfigDict(extra="allow")

    status: JobOutcome
    duration_s: float | None = None
    errors: list[str] = Field(default_factory=list)


class SparseModel(BaseModel):
    """A report part serialised exactly as the dict it replaced: keys named in `SPARSE` are left out
    while they have nothing to say (None; with `EMPTY_IS_NOTHING` also False and an empty list), and
    `ORDER`, when set, is the order of the keys (a JobReport subclass would otherwise lead with the
    envelope's fields). Subclasses refine `_keeps` for keys whose presence depends on other fields."""

    SPARSE: ClassVar[frozenset[str]] = frozenset()
    ORDER: ClassVar[tuple[str, ...]] = ()
    EMPTY_IS_NOTHING: ClassVar[bool] = False

    def _keeps(self, key: str, value: Any) -> bool:
        if key not in self.SPARSE:
            return True
        if value is None:
            return False
        return not (self.EMPTY_IS_NOTHING and (value is False or (isinstance(value, list) and not value)))

    @model_serializer(mode="wrap")
    def _sparse(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.ORDER:
            data = {**{k: data[k] for k in self.ORDER if k in data},
                    **{k: v for k, v in data.items() if k not in self.ORDER}}
        return {k: v for k, v in data.items() if self._keeps(k, v)}


class TerseModel(SparseModel):
    """A `SparseModel` whose sparse keys are also left out when False or an empty list."""

    EMPTY_IS_NOTHING: ClassVar[bool] = True


class SparseReport(JobReport, SparseModel):
    """A job report serialised as the dict it replaced: `duration_s` only once set (the runner adds
    the run's own), `errors` only when there are some."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s"})

    def _keeps(self, key: str, value: Any) -> bool:
        if key == "errors":
            return bool(value)
        return super()._keeps(key, value)


def as_dict(report: JobReport | Report) -> Report:
    """The one serialisation of a report: a job's model dumped as JSON types (a dict passes as is)."""
    if isinstance(report, BaseModel):
        return report.model_dump(mode="json", by_alias=True)
    return report


@dataclass(frozen=True)
class JobSpec:
    name: str
    options: type[Options]
    run: Callable[[JobContext], JobReport | Report]
    long_running: bool = False
    """Long jobs answer 202 over a function URL and continue asynchronously."""
    needs_lock: bool = True
    check: Callable[[Plan, Any], list[str]] | None = None
    """Validate the plan's section against a live connection (`pgkeeper plan check`)."""
    preflight: Callable[[Plan, Any, psycopg.Connection], None] | None = None
    """Check the caller's options against the plan (and the catalog) before anything is recorded:
    raises EventError, so a typo is a 400 with no run row, no lock and no JobFailed metric."""
    worker: Callable[[Plan, dict[str, Any], Any], dict[str, Any]] | None = None
    """A part of a run done in an invocation of its own (a sharded backup's data shard): (plan, the
    event's `shard`, budget) -> its outcome; never raises (the run it belongs to reports it)."""
    alarm_window: Callable[[Any], AlarmWindow | None] | None = None
    """Which silence window a run with these options proves alive when it succeeds (it emits
    metric_names.WORK_PROVEN and pings the window's heartbeat); None when it proves none (a dry run,
    a run of a few chosen tables)."""


def all_jobs() -> dict[str, JobSpec]:
    """Every job, imported on demand (a handler imports only its own)."""
    from importlib import import_module

    specs = {}
    for name in ("refresh", "cleanup", "vacuum", "backup"):
        specs[name] = import_module(f"pgkeeper.{name}.job").JOB
    return specs
