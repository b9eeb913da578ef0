"""Errors of the signed-request layer, and the one place every error becomes an HTTP answer.

A caller gets the status and a short machine-readable reason (`stale_timestamp`, `replayed`,
`wrong_job`); details that only an operator needs (a misconfigured plan, a secret that does not
parse) go to the log, never into a response, and a stack trace never leaves the function.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import (
    ConfigError,
    DatabaseUnavailableError,
    DispatchError,
    JobFailedError,
    PgkeeperError,
    ReplayStoreUnavailableError,
)
from ..log import logger

_UNAVAILABLE = {
    "database_unavailable": "the database cannot be reached; nothing was run",
    "replay_store_unavailable": "the replay store cannot be reached; the request was not run",
    "async_dispatch_failed": "the asynchronous run could not be started; it is recorded as failed",
}


def status_and_body(exc: PgkeeperError) -> tuple[int, dict[str, Any]]:
    """What the caller sees for `exc`.

    Only deliberate errors are answered here; anything else propagates to Lambda (logged with its
    trace, counted in the function's Errors metric, answered 502 without a body worth reading).
    """
    if isinstance(exc, JobFailedError):
        return exc.status, exc.to_dict()
    if isinstance(exc, ConfigError):
        # The message may name a plan path, an env var or an ARN: useful in the log, not to a caller.
        logger.error("function URL request failed: configuration", extra={"reason": exc.reason, "detail": str(exc)})
        return exc.status, {"error": exc.reason, "message": "the function is misconfigured; see its log"}
    if isinstance(exc, DatabaseUnavailableError | ReplayStoreUnavailableError | DispatchError):
        # The detail names a host or an AWS error code: for the log. The caller gets the reason.
        logger.error("function URL request failed: dependency unavailable",
                     extra={"reason": exc.reason, "detail": str(exc)})
        return exc.status, {"error": exc.reason, "message": _UNAVAILABLE.get(exc.reason, "a dependency is unavailable")}
    return exc.status, exc.to_dict()


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A function URL (payload 2.0) response."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
        "body": json.dumps(body, default=str),
    }


def error_response(exc: PgkeeperError) -> dict[str, Any]:
    status, body = status_and_body(exc)
    return json_response(status, body)
