"""Function URL requests. Signed-request verification lands with the signed-URL issue; until then
every URL request is refused, so an unconfigured deployment never runs a job for an anonymous caller."""

from __future__ import annotations

import json
from typing import Any

from .jobs import JobSpec


def handle(spec: JobSpec, event: Any, context: Any) -> dict:
    body = {"error": "signing_not_configured", "message": "function URL triggers are not enabled yet"}
    return {"statusCode": 401, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
