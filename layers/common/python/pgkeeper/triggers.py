"""Every way a job can be started, turned into one `JobRequest`.

Shapes accepted: EventBridge Scheduler input (`{"job", "options", "trigger": "schedule"}`), the
classic scheduled-event envelope (`"detail-type": "Scheduled Event"`), a direct invoke
(`aws lambda invoke`, or the function's own asynchronous continuation). Function URL requests are
recognised here and verified by `pgkeeper.webhooks` before they become a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EventError

TRIGGERS = ("schedule", "invoke", "url", "async", "cli")
_DIRECT_KEYS = {"job", "options", "trigger", "run_id", "request_id"}

EXPECTED = (
    'expected one of: {"job": "<name>", "options": {...}} (Scheduler input or direct invoke), '
    'an EventBridge "Scheduled Event", or a signed function URL request'
)


@dataclass(frozen=True)
class JobRequest:
    job: str
    options: dict[str, Any] = field(default_factory=dict)
    trigger: str = "invoke"
    request_id: str | None = None
    run_id: str | None = None


def is_function_url_event(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("requestContext"), dict) and (
        "http" in event["requestContext"]
    )


def parse_event(event: Any, job: str, request_id: str | None = None) -> JobRequest:
    """A scheduled or direct event for the function whose job is `job`."""
    if not isinstance(event, dict):
        raise EventError(f"event must be a JSON object, got {type(event).__name__}; {EXPECTED}")
    if event.get("detail-type") == "Scheduled Event":
        detail = event.get("detail") or {}
        options = detail.get("options", {}) if isinstance(detail, dict) else {}
        return _request(job, {"job": detail.get("job", job), "options": options}, "schedule",
                        request_id or event.get("id"))
    if "job" in event:
        unknown = set(event) - _DIRECT_KEYS
        if unknown:
            raise EventError(f"unknown event keys {sorted(unknown)}; {EXPECTED}")
        trigger = event.get("trigger", "invoke")
        if trigger not in TRIGGERS:
            raise EventError(f"trigger must be one of {list(TRIGGERS)}, got {trigger!r}")
        return _request(job, event, trigger, event.get("request_id") or request_id, event.get("run_id"))
    raise EventError(f"unrecognised event (keys: {sorted(event)[:8]}); {EXPECTED}")


def _request(job: str, body: dict[str, Any], trigger: str, request_id: str | None,
             run_id: str | None = None) -> JobRequest:
    named = body.get("job")
    if named != job:
        raise EventError(f"this function runs job {job!r}; the event names {named!r}", reason="wrong_job")
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise EventError(f"options must be an object, got {type(options).__name__}")
    return JobRequest(job=job, options=options, trigger=trigger, request_id=request_id, run_id=run_id)
