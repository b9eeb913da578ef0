"""Secrets Manager reads, cached per container and refreshed after a TTL (rotation without redeploy)."""

from __future__ import annotations

import threading
import time
from typing import Any

_CACHE: dict[str, tuple[float, str]] = {}
_LOCK = threading.Lock()
_client: Any = None


def _secrets_client() -> Any:
    # boto3 costs ~150 ms to import: only jobs that read a secret pay for it.
    global _client
    if _client is None:
        from .aws import client

        _client = client("secretsmanager")
    return _client


def get_secret(arn: str, *, ttl_s: float = 300.0, force: bool = False) -> str:
    """The secret's current string, from cache when younger than `ttl_s`."""
    from .errors import ConfigError

    now = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(arn)
        if hit and not force and now - hit[0] < ttl_s:
            return hit[1]
    try:
        resp = _secrets_client().get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore raises many unrelated classes; all mean "cannot read it"
        from .aws import describe_error

        raise ConfigError(f"cannot read secret {arn}: {describe_error(exc, 'secretsmanager')}") from exc
    value = resp.get("SecretString")
    if value is None:
        raise ConfigError(f"secret {arn} has no SecretString (binary secrets are not supported)")
    with _LOCK:
        _CACHE[arn] = (now, value)
    return value


def secret_object(value: str, arn: str, expected: str) -> dict[str, Any]:
    """A secret that is not a plain URL must be a JSON object; `expected` names the URL it is not."""
    import json

    from .errors import ConfigError

    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError(f"{arn}: neither {expected} nor JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{arn}: JSON secret must be an object")
    return data


def reset_cache() -> None:
    global _client
    with _LOCK:
        _CACHE.clear()
    _client = None
