"""Replay protection across Lambda instances: a webhook-id is accepted once.

Two stores behind one small Protocol (`signing.replay_store` in the plan):

- `postgres` (default): table `pgkeeper.webhook_ids` in the database pgkeeper maintains.
  `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired` is atomic across every instance and every
  function of the deployment, adds no service, no IAM and no cost, and its one round trip goes to
  a database the request needs anyway. When that database is down the request fails closed
  (503): a job that cannot be recorded must not run.
- `redis`: `SET key 1 NX EX ttl` on the Redis of the plan's `cache:` section (Upstash REST or
  redis://), for deployments that already run one and want the check off the database; also
  fails closed.

Entries live for `2 * tolerance + 60` seconds: a request stamped `tolerance` seconds in the
future stays verifiable until `2 * tolerance` after it was first accepted.
"""

from __future__ import annotations

import time
from typing import Protocol

from ..cache.client import CacheClient, CacheError
from ..errors import DatabaseUnavailableError, ReplayStoreUnavailableError
from ..log import logger
from .session import UrlSession

PURGE_INTERVAL_S = 60.0
REDIS_PREFIX = "pgkeeper:webhook-id:"


def ttl_for(tolerance_s: int) -> int:
    return 2 * tolerance_s + 60


class ReplayStore(Protocol):
    def accept(self, webhook_id: str, ttl_s: int) -> bool:
        """True the first time `webhook_id` is seen within `ttl_s`; raises when it cannot tell."""
        ...


_ACCEPT = (
    "INSERT INTO pgkeeper.webhook_ids AS w (webhook_id, expires_at) "
    "VALUES (%s, pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => %s)) "
    "ON CONFLICT (webhook_id) DO UPDATE "
    "SET accepted_at = EXCLUDED.accepted_at, expires_at = EXCLUDED.expires_at "
    "WHERE w.expires_at < pg_catalog.clock_timestamp() "
    "RETURNING true"
)
_PURGE = "DELETE FROM pgkeeper.webhook_ids WHERE expires_at < pg_catalog.clock_timestamp()"


class PostgresReplayStore:
    def __init__(self, session: UrlSession) -> None:
        self.session = session
        self._last_purge = float("-inf")

    def accept(self, webhook_id: str, ttl_s: int) -> bool:
        try:
            accepted = self.session.run(lambda conn: conn.execute(_ACCEPT, [webhook_id, ttl_s]).fetchone() is not None)
        except DatabaseUnavailableError as exc:
            raise ReplayStoreUnavailableError(f"replay store (postgres) unavailable: {exc}") from exc
        self._purge()
        return accepted

    def _purge(self) -> None:
        """Drop expired ids once a minute per container: only dead weight, as the conflict clause
        already reuses them. A separate statement after the answer is known, so a purge that hits
        lock_timeout (or a dropped connection, whose retry would repeat the insert as "already
        seen") cannot refuse a request that was accepted; it is tried again a minute later."""
        if time.monotonic() - self._last_purge <= PURGE_INTERVAL_S:
            return
        self._last_purge = time.monotonic()
        try:
            self.session.run(lambda conn: conn.execute(_PURGE))
        except DatabaseUnavailableError as exc:
            logger.warning("could not purge expired webhook ids", extra={"detail": str(exc)})


class RedisReplayStore:
    """`SET key 1 NX EX ttl` through the cache's client: the Redis the plan's `cache:` section names
    (Upstash REST or redis://, from its secret or env), so there is one Redis setting, not two."""

    def __init__(self, client: CacheClient) -> None:
        self.client = client

    def accept(self, webhook_id: str, ttl_s: int) -> bool:
        try:
            reply = self.client.pipeline([["SET", REDIS_PREFIX + webhook_id, "1", "NX", "EX", ttl_s]])[0]
        except CacheError as exc:
            raise ReplayStoreUnavailableError(f"replay store (redis) unavailable: {exc.reason}: {exc}") from exc
        return bool(reply)  # "OK" (or True) when set; nil when the id was already there
