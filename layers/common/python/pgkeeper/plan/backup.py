"""The `backup:` section of the plan."""

from __future__ import annotations

from .base import Model


class BackupPlan(Model):
    """Filled in by the backup job's issue; an empty section is valid until then."""
