"""Every way a job can be started, validated as one model: `JobEvent`.

Shapes accepted: EventBridge Scheduler input (`{"job", "options", "trigger": "schedule"}`), the
classic scheduled-event envelope (`"detail-type": "Scheduled Event"`), a direct invoke (`aws lambda
invoke`, or the function's own asynchronous continuation), and the body of a signed function URL
request (`{"job", "options", "async"}`, verified by `pgkeeper.webhooks` first). Types are strict:
a bool is a JSON bool and an object an object; nothing is coerced.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import EventError

Trigger = Literal["schedule", "invoke", "url", "async", "cli", "fleet"]
TRIGGERS: tuple[str, ...] = Trigger.__args__  # type: ignore[attr-defined]

EXPECTED = (
    'expected one of: {"job": "<name>", "options": {...}} (Scheduler input or direct invoke), '
    'an EventBridge "Scheduled Event", or a signed function URL request'
)
URL_BODY_KEYS = frozenset({"job", "options", "async", "database"})
INVOKE_KEYS = frozenset({"job", "options", "trigger", "run_id", "request_id", "database", "fleet", "shard"})


class JobEvent(BaseModel):
    """What to run, however it was asked for."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    job: str
    options: dict[str, Any] = Field(default_factory=dict)
    trigger: Trigger = "invoke"
    request_id: str | None = None
    run_id: str | None = None
    """Set when the run was recorded before this invocation (the 202 path) or is being retried."""
    run_async: bool | None = Field(None, alias="async")
    """URL body only: run asynchronously (202) whatever the job's default."""
    database: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    """A fleet member's name: run for that database only. Without it a fleet plan fans out to all."""
    fleet: dict[str, Any] | None = None
    """A fan-out continued in a new invocation: its state (fleet.FanOutState), written by pgkeeper."""
    shard: dict[str, Any] | None = None
    """A sharded backup's worker: the part to dump (backup.sharding.ShardSpec), written by pgkeeper."""

    @field_validator("options", mode="before")
    @classmethod
    def _null_options(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("run_id")
    @classmethod
    def _canonical_run_id(cls, value: str | None) -> str | None:
        from .db.runs import canonical_run_id  # run ids are the run history's uuid column

        if value is not None and canonical_run_id(value) is None:
            raise ValueError("must be a UUID in its canonical form (8-4-4-4-12 hex digits)")
        return value


def is_function_url_event(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("requestContext"), dict) and (
        "http" in event["requestContext"]
    )


def parse_event(event: Any, job: str, request_id: str | None = None) -> JobEvent:
    """A scheduled or direct event for the function whose job is `job`."""
    if not isinstance(event, dict):
        raise EventError(f"event must be a JSON object, got {type(event).__name__}; {EXPECTED}")
    if event.get("detail-type") == "Scheduled Event":
        detail = event.get("detail")
        detail = detail if isinstance(detail, dict) else {}
        data = {"job": detail.get("job", job), "options": detail.get("options", {}), "trigger": "schedule",
                "request_id": request_id or event.get("id")}
        if "database" in detail:
            data["database"] = detail["database"]
        return _validate(data, job, where="the event", reason="bad_request")
    if "job" in event:
        unknown = sorted(set(event) - INVOKE_KEYS)
        if unknown:
            raise EventError(f"unknown event keys {unknown}; {EXPECTED}")
        return _validate({"request_id": request_id, **{k: v for k, v in event.items() if v is not None}}, job,
                         where="the event", reason="bad_request")
    raise EventError(f"unrecognised event (keys: {sorted(event)[:8]}); {EXPECTED}")


def parse_body(text: str, job: str, request_id: str | None = None) -> JobEvent:
    """The body of a verified function URL request: `{"job", "options", "async"}` for this job."""
    if not text.strip():
        raise EventError(f'empty body; expected {{"job": "{job}", "options": {{...}}}}', reason="bad_body")
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise EventError(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         reason="invalid_json") from None
    except RecursionError:
        raise EventError("body is nested too deeply to be a job request", reason="bad_body") from None
    if not isinstance(body, dict):
        raise EventError(f"body must be a JSON object, got {type(body).__name__}", reason="bad_body")
    unknown = sorted(set(body) - URL_BODY_KEYS)
    if unknown:
        raise EventError(f"unknown body keys {unknown}; expected {sorted(URL_BODY_KEYS)}", reason="bad_body")
    if "job" not in body:
        raise EventError(f'body must name the job: {{"job": "{job}", ...}}', reason="bad_body")
    return _validate({**body, "trigger": "url", "request_id": request_id}, job, where="the body",
                     reason="bad_body")


def _validate(data: dict[str, Any], job: str, *, where: str, reason: str) -> JobEvent:
    if data.get("job") != job:
        raise EventError(f"this function runs job {job!r}; {where} names {data.get('job')!r}", reason="wrong_job")
    try:
        return JobEvent.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(event)'}: {err['msg']}" for err in exc.errors()]
        raise EventError("; ".join(problems), reason=reason) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"job": "cleanup", "job": "refresh"}: parsers disagree on which wins; a signed body must not be ambiguous.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EventError(f"duplicate key {key!r} in the body", reason="bad_body")
        out[key] = value
    return out
