"""Find the cache (secret, Upstash REST env, redis URL env) and open a client with timeouts.

The client libraries are imported here, on demand: a refresh whose plan names no cache keys
never pays for importing redis-py or upstash-redis (and httpx) at cold start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..plan.cache import CachePlan
from ..secrets import get_secret, secret_object
from .client import CacheClient, where

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_REST_URL_KEYS = ("url", "UPSTASH_REDIS_REST_URL", "KV_REST_API_URL", "rest_url")
_REST_TOKEN_KEYS = ("token", "UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN", "rest_token")
_REDIS_URL_KEYS = ("url", "REDIS_URL", "KV_URL", "redis_url")


@dataclass(frozen=True)
class CacheTarget:
    """Where the cache is: a REST endpoint with its token, or a redis URL."""

    backend: str
    url: str
    token: str | None = None
    source: str = ""

    def __repr__(self) -> str:  # keeps the token and URL password out of any accidental log line
        return f"CacheTarget(backend={self.backend!r}, where={where(self.url)!r}, source={self.source!r})"


def resolve_target(settings: CachePlan) -> CacheTarget:
    """The configured backend, or a ConfigError naming what to set."""
    arn = os.environ.get(settings.secret_arn_env, "").strip()
    if arn:
        return _check(target_from_secret(get_secret(arn), arn, settings.backend), settings)
    rest_url = os.environ.get(settings.rest_url_env, "").strip()
    if rest_url and settings.backend in ("auto", "upstash"):
        token = os.environ.get(settings.rest_token_env, "").strip()
        if not token:
            raise ConfigError(f"{settings.rest_url_env} is set but {settings.rest_token_env} is empty")
        return _check(CacheTarget("upstash", rest_url, token, f"env {settings.rest_url_env}"), settings)
    url = os.environ.get(settings.url_env, "").strip()
    if url and settings.backend in ("auto", "redis"):
        return _check(CacheTarget("redis", url, None, f"env {settings.url_env}"), settings)
    wanted = {
        "upstash": f"{settings.rest_url_env} and {settings.rest_token_env}",
        "redis": f"{settings.url_env} (redis:// or rediss://)",
        "auto": f"{settings.rest_url_env} and {settings.rest_token_env}, or {settings.url_env}",
    }[settings.backend]
    raise ConfigError(
        f"the plan names cache keys but no cache is configured: set {wanted}, "
        f"or {settings.secret_arn_env} to a Secrets Manager secret ARN"
    )


def target_from_secret(value: str, arn: str, backend: str = "auto") -> CacheTarget:
    """A secret holds a redis:// URL, or JSON with a REST url + token and/or a redis url."""
    value = value.strip()
    if value.startswith(("redis://", "rediss://")):
        return CacheTarget("redis", value, None, f"secret {arn}")
    data = secret_object(value, arn, "a redis:// URL")
    rest_url = _first(data, _REST_URL_KEYS, ("https://", "http://"))
    token = _first(data, _REST_TOKEN_KEYS, ("",))
    redis_url = _first(data, _REDIS_URL_KEYS, ("redis://", "rediss://"))
    if rest_url and token and backend in ("auto", "upstash"):
        return CacheTarget("upstash", rest_url, token, f"secret {arn}")
    if redis_url and backend in ("auto", "redis"):
        return CacheTarget("redis", redis_url, None, f"secret {arn}")
    if rest_url and not token:
        raise ConfigError(f"{arn}: has a REST url but no token")
    raise ConfigError(f"{arn}: no usable {'cache' if backend == 'auto' else backend} URL in the secret")


def _first(data: dict, keys: tuple[str, ...], prefixes: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip().startswith(prefixes):
            return value.strip()
    return None


def _check(target: CacheTarget, settings: CachePlan) -> CacheTarget:
    if settings.backend != "auto" and target.backend != settings.backend:
        raise ConfigError(f"cache backend is pinned to {settings.backend} but {target.source} holds a "
                          f"{target.backend} URL")
    try:
        parts = urlsplit(target.url)
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        raise ConfigError(f"{target.source}: the cache URL cannot be parsed") from None
    if target.backend == "upstash":
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"{target.source}: the Upstash REST URL must look like https://<name>.upstash.io")
        # The token travels in a header: over plain HTTP only to a local adapter, never across a network.
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ConfigError(f"{target.source}: the Upstash REST URL must use https://")
    elif parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"{target.source}: expected a redis:// or rediss:// URL with a host")
    return target


def open_client(settings: CachePlan, target: CacheTarget | None = None) -> CacheClient:
    """A client for the configured cache; nothing is sent until the first call."""
    target = target or resolve_target(settings)
    connect_s = settings.connect_timeout_ms / 1000
    timeout_s = settings.timeout_ms / 1000
    if target.backend == "upstash":
        from .upstash_client import UpstashClient

        return UpstashClient(target.url, target.token or "", connect_timeout_s=connect_s, timeout_s=timeout_s)
    from .redis_client import RedisClient

    return RedisClient(target.url, connect_timeout_s=connect_s, timeout_s=timeout_s)
