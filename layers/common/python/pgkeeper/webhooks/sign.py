"""The caller's side: sign a request the way `pgkeeper.webhooks.verify` checks it.

Used by `pgkeeper sign` / `pgkeeper trigger`, the tests and the benchmark; `clients/` holds the
same ten lines for Node and for a POSIX shell.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from .verify import signed_payload


def new_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def job_body(job: str, options: dict[str, Any] | None = None, run_async: bool | None = None) -> str:
    """The JSON body of `POST /`: it names the job, so the signature authorises exactly that run."""
    body: dict[str, Any] = {"job": job, "options": options or {}}
    if run_async is not None:
        body["async"] = run_async
    return json.dumps(body, separators=(",", ":"))


def sign(secret: str, *, body: str = "", method: str = "POST", path: str = "/", query: str = "",
         webhook_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for this request (a body-less one signs its request line)."""
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    payload = signed_payload(method, path, query, body)
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), payload)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
