"""The `cleanup:` section of the plan."""

from __future__ import annotations

from .base import Model


class CleanupPlan(Model):
    """Filled in by the cleanup job's issue; an empty section is valid until then."""
