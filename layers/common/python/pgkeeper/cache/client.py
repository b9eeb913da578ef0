"""What invalidation needs from a cache backend: one pipelined round trip, and errors by kind.

Both backends (Upstash REST over HTTPS, redis:// over TCP) implement `CacheClient`, so the
invalidation logic is one code path whichever the deployment uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import PgkeeperError

Command = Sequence[Any]
"""A Redis command as words: `["SCAN", 0, "MATCH", "dash:*", "COUNT", 1000]`."""


class CacheClient(Protocol):
    backend: str
    """`upstash` or `redis`: named in reports."""

    where: str
    """Host (and port) for logs and reports; never a password or token."""

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands` in one round trip; their replies in order (SCAN as `(cursor, keys)`).

        Raises CacheUnavailableError when the cache cannot be reached in time, CacheCommandError
        when Redis refused a command.
        """
        ...

    def close(self) -> None: ...


class CacheError(PgkeeperError):
    """Base of cache failures; they fail the invalidation, never the refresh that preceded it."""

    status = 502
    reason = "cache_error"


class CacheUnavailableError(CacheError):
    """Connect or read failed or timed out: nothing more will get through in this run."""

    reason = "cache_unavailable"


class CacheCommandError(CacheError):
    """Redis answered with an error (WRONGTYPE, NOAUTH...): other keys may still be fine."""

    reason = "cache_command_failed"


def scrub(message: str, secrets: Sequence[str | None]) -> str:
    """An error message with any secret it happens to quote replaced; first line only."""
    text = (message.strip().splitlines() or [""])[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


def where(url: str) -> str:
    """host:port of a URL, for logs; never its password."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(unparsable URL)"
