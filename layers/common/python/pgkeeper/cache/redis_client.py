"""redis:// and rediss:// through redis-py, with a timeout on every connect and read, and no retries.

redis-py retries a failed command three times with exponential backoff by default: against a
dead cache that turns one failed call into seconds of waiting. Here a call fails once, fast, and
the invalidation reports it; the next scheduled run is the retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .client import CacheCommandError, CacheUnavailableError, Command, scrub, where


class RedisClient:
    backend = "redis"

    def __init__(self, url: str, *, connect_timeout_s: float, timeout_s: float) -> None:
        self.where = where(url)
        self._secrets = [urlsplit(url).password, url]
        self._redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        try:
            if len(commands) == 1:
                return [self._redis.execute_command(*commands[0])]
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CacheUnavailableError(self._describe(exc)) from exc
        except redis.ResponseError as exc:
            raise CacheCommandError(self._describe(exc)) from exc
        except redis.RedisError as exc:  # protocol errors: whatever answered is not a usable Redis
            raise CacheUnavailableError(self._describe(exc)) from exc
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise CacheCommandError(self._describe(reply))
        return replies

    def close(self) -> None:
        self._redis.close()

    def _describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: " + scrub(str(exc), self._secrets)
