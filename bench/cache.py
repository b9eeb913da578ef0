"""Cache invalidation: 100k matching keys among 1M (QUICK: 20k among 200k), cleared by pgkeeper over
redis:// and over Upstash REST (real upstash-redis client, local adapter, same Redis), against the
baseline the seed apps run (`clearCachePattern`: `KEYS pattern` then one `DEL` of everything).

Besides keys/s and the longest single call, a probe client PINGs Redis throughout each clear: its
worst latency is what the app's own requests felt while the cache was being cleared.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from common import percentile

from pgkeeper.budget import Budget
from pgkeeper.cache.connect import CacheTarget, open_client
from pgkeeper.cache.invalidate import Invalidator, PatternResult
from pgkeeper.plan.cache import CachePlan

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/10"  # a DB index of its own; keys under a unique prefix
TOKEN = "bench-token"


def _adapter_module():
    spec = importlib.util.spec_from_file_location("upstash_adapter", ROOT / "tests" / "upstash_adapter.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _log(msg: str) -> None:
    print(f"  cache: {msg}", file=sys.stderr, flush=True)


def _seed(r: redis.Redis, keys: list[str]) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(keys), 10_000):
        pipe.mset({k: "x" * 64 for k in keys[i:i + 10_000]})
        if i % 100_000 == 0:
            pipe.execute()
    pipe.execute()


PROBE = """
import json, sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
r.ping()
print("ready", flush=True)
samples = []
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    t0 = time.perf_counter()
    r.ping()
    samples.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.001)
    if open(sys.argv[2]).read():
        break
print(json.dumps(samples), flush=True)
"""


class Probe:
    """PINGs over its own connection, in its own process (no GIL shared with the clearing client),
    while a clear runs: the latency an app request would see."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []

    def __enter__(self) -> Probe:
        self._flag = tempfile.NamedTemporaryFile("w", suffix=".stop", delete=False)  # noqa: SIM115
        self._flag.close()
        self._proc = subprocess.Popen([sys.executable, "-c", PROBE, self.url, self._flag.name],
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None and self._proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        Path(self._flag.name).write_text("stop")
        out, _ = self._proc.communicate(timeout=30)
        Path(self._flag.name).unlink()
        self.samples = json.loads(out.strip().splitlines()[-1])

    def summary(self) -> dict[str, float]:
        return {"p99_ms": round(percentile(self.samples, 99), 2), "max_ms": round(max(self.samples), 2)}


def _pgkeeper_clear(target: CacheTarget, settings: CachePlan, pattern: str) -> dict:
    client = open_client(settings, target)
    inv = Invalidator(client, settings, Budget(600, reserve_s=0))
    try:
        inv.ping()
        entry = PatternResult(pattern=pattern)
        t0 = time.perf_counter()
        inv.clear(pattern, entry)
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
    deleted = entry.keys_deleted
    return {"deleted": deleted, "s": round(elapsed, 3), "keys_per_s": round(deleted / elapsed),
            "calls": inv.calls, "max_call_ms": round(inv.max_call_ms, 2), "max_unlink_keys": inv.max_unlink_keys}


def _baseline_clear(url: str, pattern: str) -> dict:
    """What `clearCachePattern` does: KEYS (walks the whole keyspace in one call), then DEL them all."""
    r = redis.Redis.from_url(url, socket_timeout=120)
    try:
        t0 = time.perf_counter()
        keys = r.keys(pattern)
        t1 = time.perf_counter()
        deleted = r.delete(*keys) if keys else 0
        t2 = time.perf_counter()
    finally:
        r.close()
    return {"deleted": deleted, "s": round(t2 - t0, 3), "keys_per_s": round(deleted / (t2 - t0)),
            "calls": 2, "max_call_ms": round(max(t1 - t0, t2 - t1) * 1000, 2),
            "keys_ms": round((t1 - t0) * 1000, 2), "del_ms": round((t2 - t1) * 1000, 2)}


def main(quick: bool) -> dict:
    total, matching = (200_000, 20_000) if quick else (1_000_000, 100_000)
    prefix = f"pgkb:{uuid.uuid4().hex[:8]}:"
    pattern = f"{prefix}dash:*"
    settings = CachePlan()
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=120)
    adapter = _adapter_module().UpstashAdapter(REDIS_URL, TOKEN).start()
    targets = {"redis": CacheTarget("redis", REDIS_URL), "upstash": CacheTarget("upstash", adapter.url, TOKEN)}
    results: dict[str, dict] = {}
    try:
        _log(f"seeding {total - matching} other keys")
        _seed(r, [f"{prefix}other:{i}" for i in range(total - matching)])
        for name in ("redis", "upstash", "keys_del_baseline"):
            _seed(r, [f"{prefix}dash:{i}" for i in range(matching)])
            _log(f"{name}: clearing {matching} of {r.dbsize()} keys")
            with Probe(REDIS_URL) as probe:
                if name == "keys_del_baseline":
                    res = _baseline_clear(REDIS_URL, pattern)
                else:
                    res = _pgkeeper_clear(targets[name], settings, pattern)
            res["app_ping"] = probe.summary()
            assert res["deleted"] == matching, (name, res)
            left = sum(1 for _ in r.scan_iter(match=pattern, count=5000))
            assert left == 0, (name, left)
            results[name] = res
            _log(f"{name}: {res}")
    finally:
        adapter.stop()
        for key_batch in _batches(r.scan_iter(match=prefix + "*", count=10_000), 10_000):
            r.unlink(*key_batch)
        r.close()
    ours, upstash, base = results["redis"], results["upstash"], results["keys_del_baseline"]
    return {
        "keys_total": total,
        "keys_matching": matching,
        "keys_per_s_redis": ours["keys_per_s"],
        "keys_per_s_upstash": upstash["keys_per_s"],
        "max_call_ms": max(ours["max_call_ms"], upstash["max_call_ms"]),
        "max_call_ms_redis": ours["max_call_ms"],
        "max_call_ms_upstash": upstash["max_call_ms"],
        "calls_redis": ours["calls"],
        "max_unlink_keys": max(ours["max_unlink_keys"], upstash["max_unlink_keys"]),
        "app_ping_max_ms_redis": ours["app_ping"]["max_ms"],
        "app_ping_max_ms_upstash": upstash["app_ping"]["max_ms"],
        "baseline_keys_del_keys_per_s": base["keys_per_s"],
        "baseline_keys_del_max_call_ms": base["max_call_ms"],
        "baseline_app_ping_max_ms": base["app_ping"]["max_ms"],
        "longest_call_ratio_baseline_over_pgkeeper": round(base["max_call_ms"] / ours["max_call_ms"], 1),
        "details": results,
    }


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
