"""The `cache:` section: where the app's Redis lives and how hard pgkeeper may lean on it.

Which keys depend on which view is said per view (`refresh.views[*].cache`); this section only
says how to reach the cache. The backend is looked up in this order, first match wins:

1. the Secrets Manager secret named by `$secret_arn_env`: a `redis://`/`rediss://` URL, or JSON
   with a REST `url` + `token` (also `UPSTASH_REDIS_REST_URL`/`_TOKEN`) or a redis `url`;
2. the Upstash REST URL and token in `$rest_url_env` / `$rest_token_env`;
3. a `redis://` / `rediss://` URL in `$url_env` (Fly's Upstash integration hands those out).

`backend` pins one kind when a deployment exposes both (Vercel KV sets REST and redis URLs).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import Model


class CachePlan(Model):
    backend: Literal["auto", "upstash", "redis"] = Field(
        "auto", description="auto: secret, then Upstash REST env, then redis URL env"
    )
    secret_arn_env: str = Field(
        "PGKEEPER_CACHE_SECRET_ARN", description="env var holding a Secrets Manager ARN; wins over the others"
    )
    rest_url_env: str = Field("UPSTASH_REDIS_REST_URL", description="env var holding the Upstash REST URL")
    rest_token_env: str = Field("UPSTASH_REDIS_REST_TOKEN", description="env var holding the Upstash REST token")
    url_env: str = Field("REDIS_URL", description="env var holding a redis:// or rediss:// URL")
    connect_timeout_ms: int = Field(2000, ge=50, le=30_000)
    timeout_ms: int = Field(
        2000, ge=50, le=60_000, description="per call; a call never starts unless it fits in the Lambda's time"
    )
    scan_count: int = Field(
        1000, ge=10, le=10_000, description="SCAN COUNT: keys Redis examines per call (bounds each call's cost)"
    )
    batch_size: int = Field(500, ge=1, le=5000, description="most keys named in one UNLINK")


def _pattern(value: str) -> str:
    if not value.strip():
        raise ValueError("empty pattern")
    # A pattern of wildcards alone matches the whole database: almost always a slip of the pen,
    # and the one mistake here that would empty a production cache. Name a prefix instead.
    if not value.strip("*?"):
        raise ValueError(f"pattern {value!r} matches every key; name a prefix (e.g. 'dashboard:*')")
    return value


def _key(value: str) -> str:
    if not value.strip():
        raise ValueError("empty key")
    return value


CachePattern = Annotated[str, AfterValidator(_pattern)]
CacheKey = Annotated[str, AfterValidator(_key)]


class CacheInvalidation(Model):
    """Cache keys that depend on a view: cleared only after that view refreshed successfully.

    Version keys are bumped first, so readers move to fresh keys at once; the old keys matching
    `patterns` are then unlinked.
    """

    patterns: list[CachePattern] = Field(
        default_factory=list, description="SCAN MATCH patterns (Redis glob) whose keys are UNLINKed"
    )
    version_keys: list[CacheKey] = Field(default_factory=list, description="keys to INCR")

    @model_validator(mode="after")
    def _something_to_do(self) -> CacheInvalidation:
        if not self.patterns and not self.version_keys:
            raise ValueError("name at least one of `patterns` or `version_keys`")
        return self
