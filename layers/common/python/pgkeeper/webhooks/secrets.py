"""The active signing secrets: several at once, so a secret can be rotated without downtime.

Sources, first match wins:
- `PGKEEPER_WEBHOOK_SECRET_ARN`: a Secrets Manager secret holding one `whsec_...`, a JSON list, a
  JSON object `{"secrets": [...]}`, or a comma/space separated list. Read through
  `pgkeeper.secrets.get_secret` (cached for `signing.secret_cache_s`), so a rotation is picked up
  without a redeploy; a request that fails verification forces one early re-read (rate limited),
  so callers already signing with the new secret are not refused for a whole cache period.
- `PGKEEPER_WEBHOOK_SECRETS`: the same list in an env var, for local use.

A secret that does not parse is a configuration error whose message never contains the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time

from ..errors import ConfigError
from ..secrets import get_secret

ENV_SECRETS = "PGKEEPER_WEBHOOK_SECRETS"
ENV_SECRET_ARN = "PGKEEPER_WEBHOOK_SECRET_ARN"  # noqa: S105 (the name of an env var)
PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the Standard Webhooks spec: secrets are 24 to 64 random bytes
FORCED_REFRESH_INTERVAL_S = 10.0

_SPLIT = re.compile(r"[\s,]+")


def parse_secrets(text: str, source: str) -> list[str]:
    """Every `whsec_` secret in `text` (one, a JSON list/object, or a comma/space separated list)."""
    text = text.strip()
    items: object
    if text.startswith(("[", "{")):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{source}: looks like JSON but does not parse") from None
        if isinstance(items, dict):
            items = items.get("secrets", items.get("secret"))
            if isinstance(items, str):
                items = [items]
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ConfigError(f'{source}: JSON must be a list of strings or {{"secrets": [...]}}')
    else:
        items = _SPLIT.split(text)
    secrets = [s.strip() for s in items if s.strip()]
    for i, secret in enumerate(secrets, 1):
        check_secret(secret, f"{source}: secret #{i}")
    return list(dict.fromkeys(secrets))


def check_secret(secret: str, where: str) -> None:
    """`whsec_` + base64 of at least 24 bytes; the error never quotes the secret."""
    if not secret.startswith(PREFIX):
        raise ConfigError(f"{where} must look like whsec_<base64> (make one with `pgkeeper sign --new-secret`)")
    raw = secret[len(PREFIX):]
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the part after whsec_ is not valid base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes")


class SecretSource:
    """Reads the secrets on every request (cheap: env, or the Secrets Manager cache)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_forced = float("-inf")

    @staticmethod
    def configured() -> bool:
        return bool(os.environ.get(ENV_SECRET_ARN, "").strip() or os.environ.get(ENV_SECRETS, "").strip())

    def current(self, cache_s: float = 300.0) -> list[str]:
        """The active secrets; empty when signing is not configured at all."""
        arn = os.environ.get(ENV_SECRET_ARN, "").strip()
        if arn:
            return parse_secrets(get_secret(arn, ttl_s=cache_s), f"secret {arn}")
        text = os.environ.get(ENV_SECRETS, "").strip()
        return parse_secrets(text, ENV_SECRETS) if text else []

    def refresh(self) -> list[str] | None:
        """Re-read Secrets Manager now, at most once per 10 s; None when there is nothing to re-read.

        Called after a verification failure: the caller may already sign with a secret rotated in
        after our cached copy. The rate limit keeps unsigned traffic from hammering Secrets Manager.
        """
        arn = os.environ.get(ENV_SECRET_ARN, "").strip()
        if not arn:
            return None
        with self._lock:
            now = time.monotonic()
            if now - self._last_forced < FORCED_REFRESH_INTERVAL_S:
                return None
            self._last_forced = now
        return parse_secrets(get_secret(arn, force=True), f"secret {arn}")
