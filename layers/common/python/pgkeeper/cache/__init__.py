"""Cache invalidation after a refresh (contract; the cache issue fills in the backends)."""

from __future__ import annotations

from typing import Any

from ..budget import Budget
from ..errors import ConfigError
from ..plan import Plan, ViewSpec


def invalidate_after_refresh(plan: Plan, views: list[ViewSpec], budget: Budget) -> dict[str, Any] | None:
    """Invalidate the cache keys of `views` (each refreshed successfully). None: nothing configured."""
    if not any(v.cache for v in views):
        return None
    raise ConfigError("cache invalidation is not available in this build")


def clear_all(plan: Plan, budget: Budget) -> dict[str, Any]:
    """Clear every pattern / bump every version key of the plan's views, without refreshing."""
    raise ConfigError("cache invalidation is not available in this build")
