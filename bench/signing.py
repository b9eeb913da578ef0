"""What a signed function URL request costs before any job runs: verification + replay store.

Per request (microseconds, p50/p99), on pre-signed requests with two active secrets where the
request is signed with the second one (the rotation case: both HMACs are computed):
- `verify_*`: Standard Webhooks verification + the Postgres replay-store insert (the default
  store; one round trip to the local server over TCP, a warm connection as in a warm Lambda);
- `verify_redis_*`: the same with the Redis store (`SET NX EX` through the cache's redis:// client);
- `hmac_only_*`: verification alone, no store;
- `bearer_*`: the baseline the seeds use (compare a shared token), via pgkeeper's bearer mode.
"""

from __future__ import annotations

import os
import sys
import time

from common import percentile, scratch_database

from pgkeeper.cache.client import CacheError
from pgkeeper.cache.connect import CacheTarget, open_client
from pgkeeper.db import Database
from pgkeeper.plan.cache import CachePlan
from pgkeeper.plan.database import DatabaseSettings
from pgkeeper.webhooks.replay import PostgresReplayStore, RedisReplayStore, ReplayStore, ttl_for
from pgkeeper.webhooks.secrets import ENV_SECRETS, SecretSource
from pgkeeper.webhooks.session import UrlSession
from pgkeeper.webhooks.sign import job_body, new_secret, sign
from pgkeeper.webhooks.verify import SignedRequest, Verifier

REDIS_URL = os.environ.get("PGKEEPER_TEST_REDIS", "redis://127.0.0.1:6379/0")
TTL = ttl_for(300)


def _requests(n: int, secret: str) -> list[SignedRequest]:
    body = job_body("refresh", {"views": ["mv_dashboard_companions"]})
    out = []
    for _ in range(n):
        headers = sign(secret, body=body)
        headers["content-type"] = "application/json"
        out.append(SignedRequest("POST", "/", "", headers, body.encode()))
    return out


def _time(requests: list[SignedRequest], verifier: Verifier, store: ReplayStore | None) -> list[float]:
    samples = []
    for req in requests:
        t0 = time.perf_counter()
        verified = verifier.verify(req)
        if store is not None and not store.accept(verified.webhook_id, TTL):
            raise RuntimeError("fresh webhook-id refused: replay store broken")
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def _stats(name: str, samples: list[float]) -> dict[str, float]:
    return {f"{name}_p50_us": round(percentile(samples, 50), 1), f"{name}_p99_us": round(percentile(samples, 99), 1)}


def main(quick: bool) -> dict:
    n = 400 if quick else 4000
    current, previous = new_secret(), new_secret()
    os.environ[ENV_SECRETS] = f"{current},{previous}"
    os.environ.pop("PGKEEPER_WEBHOOK_SECRET_ARN", None)
    verifier = Verifier(SecretSource())
    result: dict[str, object] = {"bench": "signing", "requests": n, "active_secrets": 2}

    warm = _requests(50, previous)
    _time(warm, verifier, None)
    result.update(_stats("hmac_only", _time(_requests(n, previous), verifier, None)))

    with scratch_database("pgk_bench_signing") as url:
        session = UrlSession(Database(url, DatabaseSettings(), "bench"))
        try:
            store = PostgresReplayStore(session)
            _time(_requests(50, previous), verifier, store)  # connect, create schema, warm caches
            print(f"bench signing: {n} requests, postgres store", file=sys.stderr)
            result.update(_stats("verify", _time(_requests(n, previous), verifier, store)))
            replay = _requests(1, previous)[0]
            _time([replay], verifier, store)
            t0 = time.perf_counter()
            refused = not store.accept(verifier.verify(replay).webhook_id, TTL)
            result["replay_refused_us"] = round((time.perf_counter() - t0) * 1e6, 1)
            result["replay_refused"] = refused
        finally:
            session.close()

    redis_store = RedisReplayStore(open_client(CachePlan(), CacheTarget("redis", REDIS_URL)))
    try:
        redis_store.client.pipeline([["PING"]])
    except CacheError as exc:  # no Redis here: say so, keep the Postgres figures
        result["redis"] = f"unavailable: {exc.reason}"
    else:
        _time(_requests(50, previous), verifier, redis_store)
        print(f"bench signing: {n} requests, redis store", file=sys.stderr)
        result.update(_stats("verify_redis", _time(_requests(n, previous), verifier, redis_store)))

    verifier.allow_bearer = True
    bearer = [SignedRequest("POST", "/", "", {"authorization": f"Bearer {previous}"}, b"{}") for _ in range(n)]
    result.update(_stats("bearer", _time(bearer, verifier, None)))
    result["verify_vs_bearer_p50"] = round(result["verify_p50_us"] / max(result["bearer_p50_us"], 0.1), 1)
    result["store_share_p50"] = round(1 - result["hmac_only_p50_us"] / result["verify_p50_us"], 2)
    return result
