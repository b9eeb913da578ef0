"""The `vacuum:` section of the plan."""

from __future__ import annotations

from .base import Model


class VacuumPlan(Model):
    """Filled in by the vacuum job's issue; an empty section is valid until then."""
