"""Cache invalidation after a refresh: exactly the keys that depend on each refreshed view.

The refresh job calls `invalidate_after_refresh` with the views that refreshed successfully (a
view whose refresh failed keeps its cache), and `clear_all` for its `clear_cache` option. Neither
raises for a cache problem: the refresh already happened, so a dead or misconfigured cache
becomes `status: failed` in this report (and the CacheInvalidationFailed metric), which the
refresh job turns into a `partial` run.

Report (`CacheReport`): {action, backend?, where?, status, views: [{view, status, keys_deleted,
versions_bumped, versions, patterns, duration_ms, errors}], keys_deleted, versions_bumped, calls,
max_call_ms, max_unlink_keys, duration_ms, errors?}; `backend` and `where` once a client was opened,
`errors` when it failed. `clear_all` with nothing to clear answers `NothingToClear`.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ConfigDict, Field

from ..budget import Budget
from ..errors import ConfigError
from ..jobs import JobReport, TerseModel
from ..log import logger, metrics
from ..plan import Plan, ViewSpec
from .client import CacheCommandError, CacheError
from .invalidate import (
    CacheBudgetError,
    CacheViewResult,
    CacheViewStatus,
    Invalidator,
    PatternResult,
    ViewWork,
)

__all__ = ["invalidate_after_refresh", "clear_all", "check", "CacheAction", "CacheStatus", "CacheReport",
           "NothingToClear", "CacheViewResult", "CacheViewStatus", "PatternResult"]

CacheAction = Literal["invalidate", "clear"]
CacheStatus = Literal["succeeded", "failed"]


class CacheReport(JobReport, TerseModel):
    """The cache's report: `report.cache` of a refresh, and the whole report of a `clear_cache` run
    (so a JobReport; `duration_s` only once the runner adds the run's own)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "backend", "where", "errors"})
    ORDER: ClassVar[tuple[str, ...]] = (
        "action", "backend", "where", "status", "views", "keys_deleted", "versions_bumped", "calls",
        "max_call_ms", "max_unlink_keys", "duration_ms", "errors")

    action: CacheAction
    backend: str | None = None
    """redis | upstash, once a client was opened."""
    where: str | None = None
    """host[:port], never a password."""
    status: CacheStatus
    views: list[CacheViewResult] = Field(default_factory=list)
    keys_deleted: int = 0
    versions_bumped: int = 0
    calls: int = 0
    max_call_ms: float = 0.0
    max_unlink_keys: int = 0
    duration_ms: float = 0.0
    """The invalidation's own time, rounded to 0.1 ms."""


class NothingToClear(JobReport, TerseModel):
    """`clear_all` when no view in the plan names cache keys: nothing to connect to, nothing done."""

    model_config = ConfigDict(extra="forbid")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s", "errors"})
    ORDER: ClassVar[tuple[str, ...]] = ("status", "views", "keys_deleted", "versions_bumped", "note")

    status: Literal["succeeded"] = "succeeded"
    views: list[CacheViewResult] = Field(default_factory=list)
    keys_deleted: int = 0
    versions_bumped: int = 0
    note: str = "no view in the plan names cache keys"


def invalidate_after_refresh(plan: Plan, views: list[ViewSpec], budget: Budget) -> CacheReport | None:
    """Invalidate the cache keys of `views` (each refreshed successfully). None: nothing configured."""
    work = _work(views)
    if not work:
        return None
    return _run(plan, work, budget, action="invalidate")


def clear_all(plan: Plan, budget: Budget) -> CacheReport | NothingToClear:
    """Clear every pattern / bump every version key of the plan's views, without refreshing."""
    work = _work(plan.refresh.views)
    if not work:
        return NothingToClear()
    return _run(plan, work, budget, action="clear")


def reserve_s(plan: Plan) -> float:
    """The time a refresh keeps for invalidation when views name cache keys: every call starts only
    if its connect and read timeouts fit, so two calls' worth (the PING and the first round trip;
    the rest are quick) plus a margin. Nothing when no view has cache keys."""
    if not _work(plan.refresh.views):
        return 0.0
    return 2 * (plan.cache.connect_timeout_ms + plan.cache.timeout_ms) / 1000 + 0.5


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


def _run(plan: Plan, work: list[ViewWork], budget: Budget, *, action: CacheAction) -> CacheReport:
    from .connect import open_client

    started = time.perf_counter()
    results: list[CacheViewResult] = []
    backend: str | None = None
    where: str | None = None
    errors: list[str] = []  # run-level: no cache configured, PING failed, crash
    inv: Invalidator | None = None
    try:
        client = open_client(plan.cache)
    except ConfigError as exc:
        errors.append(str(exc))
    else:
        backend, where = client.backend, client.where
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
            results.append(CacheViewResult(view=item.view, errors=[f"not attempted: {stop}"]))
    # A view never attempted says why in its own entry; the run's errors are what went wrong.
    errors.extend(f"{r.view}: {e}" for r in results if r.status != "not_attempted" for e in r.errors)
    failed = bool(errors) or any(r.status != "succeeded" for r in results)
    report = CacheReport(
        action=action,
        backend=backend,
        where=where,
        status="failed" if failed else "succeeded",
        views=results,
        keys_deleted=sum(r.keys_deleted for r in results),
        versions_bumped=sum(r.versions_bumped for r in results),
        calls=inv.calls if inv else 0,
        max_call_ms=round(inv.max_call_ms, 2) if inv else 0.0,
        max_unlink_keys=inv.max_unlink_keys if inv else 0,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        errors=list(dict.fromkeys(errors)) if failed else [],  # serialised only when it failed
    )
    _emit(report)
    return report


def _emit(report: CacheReport) -> None:
    """KeysInvalidated every run; CacheInvalidationFailed 1 or 0, so an alarm can sum it."""
    metrics.add_metric(name="KeysInvalidated", unit=MetricUnit.Count, value=report.keys_deleted)
    metrics.add_metric(name="CacheVersionsBumped", unit=MetricUnit.Count, value=report.versions_bumped)
    metrics.add_metric(name="CacheInvalidationFailed", unit=MetricUnit.Count,
                       value=1 if report.status == "failed" else 0)
    summary = {k: getattr(report, k) for k in ("action", "backend", "where", "status", "keys_deleted",
                                               "versions_bumped", "calls", "max_call_ms", "duration_ms")}
    if report.status == "failed":
        logger.warning("cache invalidation failed", extra={"cache": summary, "errors": report.errors})
    else:
        logger.info("cache invalidated", extra={"cache": summary})
