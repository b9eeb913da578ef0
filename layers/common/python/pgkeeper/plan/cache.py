"""The `cache:` section of the plan."""

from __future__ import annotations

from .base import Model


class CachePlan(Model):
    """Filled in by the cache job's issue; an empty section is valid until then."""
