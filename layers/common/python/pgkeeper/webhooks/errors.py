"""Errors of the signed-request layer, and the one place every error becomes an HTTP answer.

A caller gets the status and a short machine-readable reason (`stale_timestamp`, `replayed`,
`wrong_job`); details that only an operator needs (a misconfigured plan, a secret that does not
parse) go to the log, never into a response, and a stack trace never leaves the function.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError, DatabaseUnavailableError, JobFailedError, PgkeeperError
from ..log import logger


class ReplayStoreUnavailableError(PgkeeperError):
    """The replay store cannot be reached: fail closed, the request is not run."""

    status = 503
    reason = "replay_store_unavailable"


class DispatchError(PgkeeperError):
    """The asynchronous continuation of a long job could not be started."""

    status = 503
    reason = "async_dispatch_failed"


class MethodNotAllowedError(PgkeeperError):
    status = 405
    reason = "method_not_allowed"


_UNAVAILABLE = {
    "database_unavailable": "the database cannot be reached; nothing was run",
    "replay_store_unavailable": "the replay store cannot be reached; the request was not run",
    "async_dispatch_failed": "the asynchronous run could not be started; it is recorded as failed",
}


def status_and_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """What the caller sees for `exc`; unknown exceptions are logged and answered with a bare 500."""
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
    if isinstance(exc, PgkeeperError):
        return exc.status, exc.to_dict()
    logger.exception("function URL request failed: unexpected error")
    return 500, {"error": "internal_error", "message": "unexpected error; see the function's log"}


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A function URL (payload 2.0) response."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
        "body": json.dumps(body, default=str),
    }


def error_response(exc: BaseException) -> dict[str, Any]:
    status, body = status_and_body(exc)
    return json_response(status, body)
