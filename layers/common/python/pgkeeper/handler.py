"""The body of every Lambda handler: parse the trigger, run the job, shape the response."""

from __future__ import annotations

import os
from typing import Any

from . import runner
from .errors import PgkeeperError
from .events import is_function_url_event, parse_event
from .jobs import JobSpec


def check_at_init() -> None:
    """What must hold before any event is served, checked while Lambda initialises the function.

    A signing-secret list that cannot work (no `whsec_` prefix, bad base64, too short) would refuse
    every signed request with the same error: raised here, it is one init error naming the secret's
    position (never its value), seen at the first deploy. Secrets Manager secrets are read when a
    request needs them, so they can rotate without a cold start.
    """
    from .webhooks.secrets import ENV_SECRETS, parse_secrets

    text = os.environ.get(ENV_SECRETS, "").strip()
    if text:
        parse_secrets(text, ENV_SECRETS)


def handle(spec: JobSpec, event: Any, context: Any) -> dict:
    if is_function_url_event(event):
        from .webhooks import routes  # only URL-triggered invocations pay for the HTTP stack's imports

        return routes.handle(spec, event, context)
    request = parse_event(event, spec.name, request_id=getattr(context, "aws_request_id", None))
    if request.trigger == "fleet" and request.database is not None:
        # A fan-out's member: its failure is recorded in its database and reported by the fan-out.
        # Raised, Lambda would retry this invocation and start the member again outside the bound.
        try:
            return runner.execute(spec, request, context)
        except PgkeeperError as exc:
            return {"run_id": request.run_id, "job": spec.name, "database": request.database, "status": "failed",
                    "error": str(exc)[:4000]}
    return runner.execute(spec, request, context)
