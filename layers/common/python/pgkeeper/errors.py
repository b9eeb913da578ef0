"""Every error pgkeeper raises on purpose, and how each one is answered.

Handlers map these to HTTP statuses and log lines in one place (`status` and `reason`), so a
caller always gets a short machine-readable reason and never a stack trace.
"""

from __future__ import annotations


def first_line(exc: BaseException | None) -> str:
    """One line that says what went wrong, for reports and log lines: the server's primary message
    for a database error (never the multi-line context that may quote data), else the first line."""
    if exc is None:
        return "unknown error"
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PgkeeperError(Exception):
    """Base of every deliberate pgkeeper failure."""

    status: int = 500
    reason: str = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def to_dict(self) -> dict[str, object]:
        return {"error": self.reason, "message": str(self)}


class ConfigError(PgkeeperError):
    """A setting the deployment needs is missing or unusable (env, secret, template)."""

    reason = "config_error"


class PlanError(ConfigError):
    """The plan file is invalid; `problems` lists every problem at once, each with its path."""

    reason = "invalid_plan"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"plan {source} has {len(problems)} problem(s):\n{lines}")

    def to_dict(self) -> dict[str, object]:
        return {"error": self.reason, "message": f"plan {self.source} is invalid", "problems": self.problems}


class EventError(PgkeeperError):
    """The Lambda event or request body is not one pgkeeper understands."""

    status = 400
    reason = "bad_request"


class AuthError(PgkeeperError):
    """A function URL request is not signed correctly (missing, wrong, stale)."""

    status = 401
    reason = "unauthorized"


class ReplayError(PgkeeperError):
    """A signed request was already accepted once."""

    status = 409
    reason = "replayed"


class NotFoundError(PgkeeperError):
    status = 404
    reason = "not_found"


class DatabaseUnavailableError(PgkeeperError):
    """The database could not be reached (after the one retry that tolerates a waking compute)."""

    status = 503
    reason = "database_unavailable"


class LockNotGrantedError(PgkeeperError):
    """A lock the job needs is held by someone else and `lock_timeout` expired."""

    status = 423
    reason = "lock_not_granted"


class JobFailedError(PgkeeperError):
    """The job ran and failed; the report says what happened to each item.

    Raised after the run is recorded, so Lambda's retries, DLQs and alarms see the failure.
    """

    reason = "job_failed"

    def __init__(self, message: str, report: dict[str, object] | None = None, run_id: str | None = None):
        super().__init__(message)
        self.report = report or {}
        self.run_id = run_id

    def to_dict(self) -> dict[str, object]:
        return {"error": self.reason, "message": str(self), "run_id": self.run_id, "report": self.report}


class ReplayStoreUnavailableError(PgkeeperError):
    """The replay store of signed requests cannot be reached: fail closed, the request is not run."""

    status = 503
    reason = "replay_store_unavailable"


class DispatchError(PgkeeperError):
    """The asynchronous continuation of a long job could not be started."""

    status = 503
    reason = "async_dispatch_failed"


class MethodNotAllowedError(PgkeeperError):
    status = 405
    reason = "method_not_allowed"


class HealthReportUnavailableError(PgkeeperError):
    """`GET /health?detail=1` on a build without pgkeeper.health."""

    status = 501
    reason = "health_report_unavailable"
