"""The body of every Lambda handler: parse the trigger, run the job, shape the response."""

from __future__ import annotations

from typing import Any

from . import runner
from .events import is_function_url_event, parse_event
from .jobs import JobSpec


def handle(spec: JobSpec, event: Any, context: Any) -> dict:
    if is_function_url_event(event):
        from .webhooks import routes  # only URL-triggered invocations pay for the HTTP stack's imports

        return routes.handle(spec, event, context)
    request = parse_event(event, spec.name, request_id=getattr(context, "aws_request_id", None))
    return runner.execute(spec, request, context)
