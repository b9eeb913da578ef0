"""The `signing:` section of the plan."""

from __future__ import annotations

from .base import Model


class SigningPlan(Model):
    """Filled in by the signing job's issue; an empty section is valid until then."""
