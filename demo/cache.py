"""Cache invalidation: the dashboard's Redis keys go exactly when (and only when) their view refreshed.

The example plan says where the cache lives (`cache:`); here its views also name the keys built
from them, as the seed app would: the companions dashboard (a version key and page keys) and the
subscription summaries. The cache is the local Redis (DB 12), reached over redis://.
"""

from __future__ import annotations

import socket
from pathlib import Path

import redis
import yaml

from demo.__main__ import Demo, table

REDIS_URL = "redis://127.0.0.1:6379/12"
CACHE_KEYS = {
    '"mv_dashboard_companions"': {"version_keys": ["dashboard:version"], "patterns": ["dashboard:companions:*"]},
    "user_subscription_summary": {"patterns": ["subscription:summary:*"]},
}
GROUPS = [  # (pattern, what the app caches there)
    ("dashboard:version", "dashboard version (readers build keys with it)"),
    ("dashboard:companions:*", "dashboard pages and searches"),
    ("subscription:summary:*", "subscription summaries"),
    ("chat:*", "chat histories (no view: never touched)"),
    ("ratelimit:*", "rate limiter (no view: never touched)"),
]


def run(demo: Demo) -> None:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
    try:
        r.ping()
    except redis.ConnectionError:
        print(f"no Redis at {REDIS_URL}: skipping the cache section (`make services` starts one)")
        return
    plan_path = _plan_with_cache_keys(demo)
    saved = dict(demo.env)
    demo.env.update(PGKEEPER_PLAN=str(plan_path), REDIS_URL=REDIS_URL)
    try:
        _clean(r)
        _seed(r)
        print(f"The views' cache keys (added to a copy of the example plan, {plan_path.name}):")
        for view, keys in CACHE_KEYS.items():
            print(f"  {view}: {keys}")
        _show(r, "Redis before the refresh")

        result = demo.invoke("RefreshFunction", "refresh-scheduled.json")
        _report(result)
        _show(r, "Redis after: the two refreshed views' keys are gone, the version bumped, the rest kept")

        _seed(r)
        demo.env["REDIS_URL"] = f"redis://127.0.0.1:{_closed_port()}/0"
        print("\nNow with the cache down (REDIS_URL points at a closed port):")
        result = demo.invoke("RefreshFunction", "refresh-scheduled.json")
        report = result.get("report", {})
        print(f"  run status: {result.get('status')}  (views refreshed: {report.get('refreshed')}, "
              f"repaired: {report.get('repaired')})")
        print(f"  cache: {report.get('cache', {}).get('status')}: {(report.get('cache') or {}).get('errors')}")
        _show(r, "Redis untouched: the next run (or clear_cache) invalidates")

        demo.env["REDIS_URL"] = REDIS_URL
        result = demo.invoke("RefreshFunction", "refresh-invoke-clear-cache.json")
        rep = result.get("report", {})
        print(f"  clear_cache: {result.get('status')}, {rep.get('keys_deleted')} keys deleted, "
              f"{rep.get('versions_bumped')} version(s) bumped, no view refreshed")
        _show(r, "Redis after clear_cache")
    finally:
        demo.env.clear()
        demo.env.update(saved)
        _clean(r)
        r.close()


def _plan_with_cache_keys(demo: Demo) -> Path:
    """The example plan, its views given cache keys; definition paths made absolute for the copy."""
    data = yaml.safe_load(demo.plan.read_text())
    for view in data["refresh"]["views"]:
        if view.get("definition"):
            view["definition"] = str((demo.plan.parent / view["definition"]).resolve())
        if view["name"] in CACHE_KEYS:
            view["cache"] = CACHE_KEYS[view["name"]]
    path = demo.workdir / "pgkeeper-plan-with-cache.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _seed(r: redis.Redis) -> None:
    r.set("dashboard:version", 3)
    pipe = r.pipeline(transaction=False)
    for page in range(1, 6):
        pipe.set(f"dashboard:companions:v3:page:{page}", "[...]", ex=300)
    for i in range(20_000):  # searches pile up: enough keys to see the batching in the report
        pipe.set(f"dashboard:companions:v3:search:{i}", "[...]", ex=300)
    for user in ("user_1", "user_2", "user_3"):
        pipe.set(f"subscription:summary:{user}", "{...}", ex=60)
        pipe.set(f"chat:{user}:history", "[...]")
        pipe.set(f"ratelimit:{user}", 4)
    pipe.execute()


def _show(r: redis.Redis, title: str) -> None:
    rows = []
    for pattern, what in GROUPS:
        if "*" in pattern:
            n = sum(1 for _ in r.scan_iter(match=pattern, count=5000))
            rows.append({"keys": pattern, "count": n, "what": what})
        else:
            rows.append({"keys": pattern, "count": r.get(pattern) or "(none)", "what": what})
    table(rows, ["keys", "count", "what"], title)


def _report(result: dict) -> None:
    report = result.get("report", {})
    cache = report.get("cache") or {}
    print(f"  run status: {result.get('status')}; cache: {cache.get('status')} over {cache.get('backend')}, "
          f"{cache.get('calls')} calls, longest {cache.get('max_call_ms')} ms, "
          f"at most {cache.get('max_unlink_keys')} keys per UNLINK")
    rows = [{"view": v["view"], "keys deleted": v["keys_deleted"], "versions": v["versions"],
             "ms": v["duration_ms"], "errors": "; ".join(v["errors"]) or "-"} for v in cache.get("views", [])]
    table(rows, ["view", "keys deleted", "versions", "ms", "errors"], "Cache report (per refreshed view)")


def _clean(r: redis.Redis) -> None:
    for pattern, _ in GROUPS:
        keys = list(r.scan_iter(match=pattern, count=5000))
        for i in range(0, len(keys), 5000):
            r.unlink(*keys[i:i + 5000])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
