"""Cache invalidation after a refresh: exactly the keys that depend on each refreshed view.

The refresh job calls `invalidate_after_refresh` with the views that refreshed successfully (a
view whose refresh failed keeps its cache), and `clear_all` for its `clear_cache` option. Neither
raises for a cache problem: the refresh already happened, so a dead or misconfigured cache
becomes `status: failed` in this report (and the CacheInvalidationFailed metric), which the
refresh job turns into a `partial` run.

Report: {status, backend, where, views: [{view, status, keys_deleted, versions_bumped, versions,
patterns, duration_ms, errors}], keys_deleted, versions_bumped, calls, max_call_ms,
max_unlink_keys, duration_ms, errors?}.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..budget import Budget
from ..errors import ConfigError
from ..log import logger, metrics
from ..plan import Plan, ViewSpec
from .client import CacheCommandError, CacheError
from .invalidate import CacheBudgetError, Invalidator, ViewResult, ViewWork

__all__ = ["invalidate_after_refresh", "clear_all", "check"]


def invalidate_after_refresh(plan: Plan, views: list[ViewSpec], budget: Budget) -> dict[str, Any] | None:
    """Invalidate the cache keys of `views` (each refreshed successfully). None: nothing configured."""
    work = _work(views)
    if not work:
        return None
    return _run(plan, work, budget, action="invalidate")


def clear_all(plan: Plan, budget: Budget) -> dict[str, Any]:
    """Clear every pattern / bump every version key of the plan's views, without refreshing."""
    work = _work(plan.refresh.views)
    if not work:
        return {"status": "succeeded", "views": [], "keys_deleted": 0, "versions_bumped": 0,
                "note": "no view in the plan names cache keys"}
    return _run(plan, work, budget, action="clear")


def check(plan: Plan) -> list[str]:
    """For `pgkeeper plan check`: when views name cache keys, the cache must be configured and answer."""
    if not _work(plan.refresh.views):
        return []
    from .connect import open_client

    try:
        client = open_client(plan.cache)
    except ConfigError as exc:
        return [f"cache: {exc}"]
    try:
        Invalidator(client, plan.cache, Budget(60, reserve_s=0)).ping()
    except CacheError as exc:
        return [f"cache: {client.backend} at {client.where} does not answer PING: {exc}"]
    finally:
        client.close()
    return []


def _work(views: list[ViewSpec]) -> list[ViewWork]:
    return [ViewWork(v.name, list(v.cache.patterns), list(v.cache.version_keys)) for v in views if v.cache]


def _run(plan: Plan, work: list[ViewWork], budget: Budget, *, action: str) -> dict[str, Any]:
    from .connect import open_client

    started = time.perf_counter()
    results: list[ViewResult] = []
    report: dict[str, Any] = {"action": action}
    errors: list[str] = []  # run-level: no cache configured, PING failed, crash
    inv: Invalidator | None = None
    try:
        client = open_client(plan.cache)
    except ConfigError as exc:
        errors.append(str(exc))
    else:
        report.update(backend=client.backend, where=client.where)
        inv = Invalidator(client, plan.cache, budget)
        try:
            try:
                inv.ping()
            except CacheBudgetError as exc:
                inv.stopped = str(exc)
            except CacheCommandError as exc:
                inv.stopped = f"cache refused PING: {exc}"
            except CacheError as exc:
                inv.stopped = f"cache unreachable: {exc}"
            if inv.stopped:
                errors.append(inv.stopped)
            for item in work:
                if inv.stopped:
                    break
                results.append(inv.run_view(item))
        except Exception as exc:
            # The views are already refreshed: an unexpected client failure must not turn that into
            # a failed refresh. It fails the invalidation, loudly, with its traceback in the log.
            logger.exception("cache invalidation crashed")
            errors.append(f"unexpected {type(exc).__name__} during invalidation")
            inv.stopped = errors[-1]
        finally:
            client.close()
    stop = (inv.stopped if inv else None) or (errors[0] if errors else "stopped")
    done = {r.view for r in results}
    for item in work:
        if item.view not in done:
            results.append(ViewResult(item.view, errors=[f"not attempted: {stop}"]))
    # A view never attempted says why in its own entry; the run's errors are what went wrong.
    errors.extend(f"{r.view}: {e}" for r in results if r.status != "not_attempted" for e in r.errors)
    failed = bool(errors) or any(r.status != "succeeded" for r in results)
    report.update(
        status="failed" if failed else "succeeded",
        views=[r.to_dict() for r in results],
        keys_deleted=sum(r.keys_deleted for r in results),
        versions_bumped=sum(r.versions_bumped for r in results),
        calls=inv.calls if inv else 0,
        max_call_ms=round(inv.max_call_ms, 2) if inv else 0.0,
        max_unlink_keys=inv.max_unlink_keys if inv else 0,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    if failed:
        report["errors"] = list(dict.fromkeys(errors))
    _emit(report)
    return report


def _emit(report: dict[str, Any]) -> None:
    """KeysInvalidated every run; CacheInvalidationFailed 1 or 0, so an alarm can sum it."""
    metrics.add_metric(name="KeysInvalidated", unit=MetricUnit.Count, value=report["keys_deleted"])
    metrics.add_metric(name="CacheVersionsBumped", unit=MetricUnit.Count, value=report["versions_bumped"])
    metrics.add_metric(name="CacheInvalidationFailed", unit=MetricUnit.Count,
                       value=1 if report["status"] == "failed" else 0)
    summary = {k: report.get(k) for k in ("action", "backend", "where", "status", "keys_deleted",
                                          "versions_bumped", "calls", "max_call_ms", "duration_ms")}
    if report["status"] == "failed":
        logger.warning("cache invalidation failed", extra={"cache": summary, "errors": report.get("errors")})
    else:
        logger.info("cache invalidated", extra={"cache": summary})
