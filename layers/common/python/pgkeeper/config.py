"""The validated plan, loaded once per container (cold start) and reused by every invocation."""

from __future__ import annotations

import os

from .plan import PLAN_ENV, Plan, load_plan

_cached: tuple[str, Plan] | None = None


def get_plan() -> Plan:
    """The plan named by $PGKEEPER_PLAN; reloaded only if that variable changes (tests, serve)."""
    global _cached
    path = os.environ.get(PLAN_ENV, "")
    if _cached is None or _cached[0] != path:
        _cached = (path, load_plan(path or None))
    return _cached[1]


def reset() -> None:
    global _cached
    _cached = None
