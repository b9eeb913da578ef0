"""What every job is: a name, a strict options model and a `run` function that knows no Lambda."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

from .budget import Budget
from .db import Database
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
    extra: dict[str, Any] = field(default_factory=dict)


Report = dict[str, Any]
"""A job's report: JSON-able, with `status` one of succeeded | partial | failed."""


@dataclass(frozen=True)
class JobSpec:
    name: str
    options: type[Options]
    run: Callable[[JobContext], Report]
    long_running: bool = False
    """Long jobs answer 202 over a function URL and continue asynchronously."""
    needs_lock: bool = True
    check: Callable[[Plan, Any], list[str]] | None = None
    """Validate the plan's section against a live connection (`pgkeeper plan check`)."""
    preflight: Callable[[Plan, Any, psycopg.Connection], None] | None = None
    """Check the caller's options against the plan (and the catalog) before anything is recorded:
    raises EventError, so a typo is a 400 with no run row, no lock and no JobFailed metric."""


def all_jobs() -> dict[str, JobSpec]:
    """Every job, imported on demand (a handler imports only its own)."""
    from importlib import import_module

    specs = {}
    for name in ("refresh", "cleanup", "vacuum", "backup"):
        specs[name] = import_module(f"pgkeeper.{name}.job").JOB
    return specs
