"""Upstash's REST API through the official `upstash-redis` client, with timeouts it lacks by default.

upstash-redis builds its httpx client with `timeout=None` (wait forever) and retries a failed
request after 3 s: a cache that stops answering would hang the Lambda until it is killed. We
turn retries off and give its httpx client connect and read timeouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from ..errors import ConfigError
from .client import CacheCommandError, CacheUnavailableError, Command, scrub, where


class UpstashClient:
    backend = "upstash"

    def __init__(self, url: str, token: str, *, connect_timeout_s: float, timeout_s: float) -> None:
        self.where = where(url)
        self._secrets = [token]
        self._redis = Redis(url=url, token=token, rest_retries=0, rest_retry_interval=0, allow_telemetry=False)
        # The client exposes no timeout setting; its httpx client is the one place to put one.
        http = getattr(getattr(self._redis, "_http", None), "_client", None)
        if not isinstance(http, httpx.Client):
            raise ConfigError("this upstash-redis version hides its HTTP client: pgkeeper cannot set timeouts; "
                              "install the version pinned in requirements.txt")
        http.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        try:
            if len(commands) == 1:
                return [self._redis.execute(list(commands[0]))]
            pipe = self._redis.pipeline()
            for command in commands:
                pipe.execute(list(command))
            return pipe.exec()
        except httpx.HTTPError as exc:  # connect/read timeouts, refused connections, TLS failures
            raise CacheUnavailableError(self._describe(exc)) from exc
        except UpstashError as exc:  # Redis' own error text, or "Unauthorized" for a wrong token
            raise CacheCommandError(self._describe(exc)) from exc
        except UnicodeDecodeError as exc:  # upstash-redis decodes every key as UTF-8
            raise CacheCommandError("a key that is not UTF-8 cannot be named through upstash-redis: "
                                    + self._describe(exc)) from exc
        except ValueError as exc:  # the body was not JSON: a proxy or something else answered
            raise CacheUnavailableError("the REST endpoint did not answer like Upstash: " + self._describe(exc)) \
                from exc

    def close(self) -> None:
        self._redis.close()

    def _describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: " + scrub(str(exc) or type(exc).__name__, self._secrets)
