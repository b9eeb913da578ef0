"""Standard Webhooks verification of a function URL request, with pgkeeper's additions.

The HMAC itself is checked by the `standardwebhooks` library (HMAC-SHA256 over
`{id}.{timestamp}.{payload}`, `hmac.compare_digest`, ±5 min window). Around it we add what the
library leaves out or reports too coarsely for a caller to act on:

- every failure has its own reason code (`missing_signature`, `stale_timestamp`,
  `future_timestamp`, `bad_signature`, ...), decided before the library is asked, so no branch
  ever depends on the library's message text;
- several secrets are tried (rotation), and one early Secrets Manager re-read on failure;
- a request without a body signs its request line instead: the payload of `GET /runs/abc` is
  the string `GET /runs/abc`. Otherwise every body-less request would carry the same signed
  payload (``""``) and a signature made for `/runs/A` would be valid for `/runs/B` or `/health`;
  the replay store would catch an exact resend, but binding the path means a signature
  authorises exactly one read, as the job in a POST body authorises exactly one action. Hence only
  POST may carry a body (a signed POST body resent as `GET /runs/x` would verify, path unbound);
- the opt-in bearer mode (`Authorization: Bearer <secret>`), compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ..errors import AuthError, EventError
from .secrets import SecretSource

MAX_ID_LEN = 200
_ID = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it is also the replay-store key
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIG_ENTRY = re.compile(r"^v[0-9]+[a-z]*,[A-Za-z0-9+/]+={0,2}$")  # v1 is checked; other versions are skipped
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass(frozen=True)
class SignedRequest:
    """What verification needs from an HTTP request; `headers` keys are lower case."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_url_event(cls, event: Mapping) -> SignedRequest:
        """From a function URL payload 2.0 event; a base64 body is decoded before anything else."""
        http = (event.get("requestContext") or {}).get("http") or {}
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise EventError("isBase64Encoded is set but the body is not base64", reason="bad_body") from None
        else:
            body = raw.encode("utf-8")
        return cls(
            method=str(http.get("method") or "GET").upper(),
            path=event.get("rawPath") or http.get("path") or "/",
            query=event.get("rawQueryString") or "",
            headers=headers,
            body=body,
        )


@dataclass(frozen=True)
class Verified:
    scheme: str
    """`standard-webhooks` or `bearer`."""
    webhook_id: str | None
    """The id to remember in the replay store (None in bearer mode: nothing to remember)."""
    body: str


def signed_payload(method: str, path: str, query: str, body: str) -> str:
    """The payload the signature covers: the raw body, or the request line when there is none."""
    if body:
        return body
    line = f"{method.upper()} {path or '/'}"
    return f"{line}?{query}" if query else line


class Verifier:
    def __init__(self, secrets: SecretSource, *, tolerance_s: int = 300, allow_bearer: bool = False,
                 secret_cache_s: float = 300.0) -> None:
        self.secrets = secrets
        self.tolerance_s = tolerance_s
        self.allow_bearer = allow_bearer
        self.secret_cache_s = secret_cache_s
        self._hooks: dict[str, Webhook] = {}

    def verify(self, request: SignedRequest) -> Verified:
        """Raises AuthError (401) with a reason code, or EventError (400) for an undecodable body or
        a body on a request other than POST."""
        secrets = self.secrets.current(self.secret_cache_s)
        if not secrets:
            raise AuthError("function URL requests are refused: no signing secret is configured "
                            "(PGKEEPER_WEBHOOK_SECRET_ARN or PGKEEPER_WEBHOOK_SECRETS)",
                            reason="signing_not_configured")
        h = request.headers
        present = [name for name in SIGNATURE_HEADERS if h.get(name)]
        if not present and h.get("authorization"):
            return self._verify_bearer(request, secrets)
        if len(present) < len(SIGNATURE_HEADERS):
            missing = [name for name in SIGNATURE_HEADERS if name not in present]
            raise AuthError(f"missing header(s): {', '.join(missing)}", reason="missing_signature")

        webhook_id, stamp, signature = (h[name].strip() for name in SIGNATURE_HEADERS)
        if len(webhook_id) > MAX_ID_LEN or not _ID.match(webhook_id):
            raise AuthError(f"webhook-id must be 1-{MAX_ID_LEN} printable ASCII characters", reason="bad_webhook_id")
        if not _TIMESTAMP.match(stamp):
            raise AuthError("webhook-timestamp must be integer seconds since the epoch", reason="bad_timestamp")
        self._check_window(int(stamp))
        entries = signature.split()
        if not entries or not all(_SIG_ENTRY.match(e) for e in entries):
            raise AuthError("webhook-signature must be space-separated v1,<base64> entries", reason="bad_signature")
        body = _text(request.body)
        if body and request.method != "POST":
            # A body is signed instead of the request line: a signed POST body sent as `GET /runs/x`
            # would verify with its path unbound. Only `POST /` takes a body.
            raise EventError(f"{request.method} takes no body (only POST / does)", reason="bad_body")
        payload = signed_payload(request.method, request.path, request.query, body)
        headers = {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": signature}

        if self._matches(secrets, payload, headers):
            return Verified("standard-webhooks", webhook_id, body)
        refreshed = self.secrets.refresh()
        if refreshed and refreshed != secrets and self._matches(refreshed, payload, headers):
            return Verified("standard-webhooks", webhook_id, body)
        # The library rejects a timestamp that crossed the window edge since our check; say so.
        self._check_window(int(stamp))
        raise AuthError("no signature matches an active secret", reason="bad_signature")

    def _check_window(self, stamp: int) -> None:
        now = time.time()  # the library checks against the same real clock
        if stamp < now - self.tolerance_s:
            raise AuthError(f"webhook-timestamp is more than {self.tolerance_s} s old", reason="stale_timestamp")
        if stamp > now + self.tolerance_s:
            raise AuthError(f"webhook-timestamp is more than {self.tolerance_s} s in the future",
                            reason="future_timestamp")

    def _matches(self, secrets: list[str], payload: str, headers: dict[str, str]) -> bool:
        for secret in secrets:
            hook = self._hooks.get(secret)
            if hook is None:
                hook = self._hooks[secret] = Webhook(secret)
            try:
                hook.verify(payload, headers, json_parse=False)
                return True
            except WebhookVerificationError:
                continue
        return False

    def _verify_bearer(self, request: SignedRequest, secrets: list[str]) -> Verified:
        if not self.allow_bearer:
            raise AuthError("bearer tokens are not accepted here; sign the request (Standard Webhooks)",
                            reason="bearer_not_allowed")
        scheme, _, token = request.headers["authorization"].strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be `Bearer <secret>`", reason="bad_token")
        token_b = token.strip().encode()
        if _any_equal(token_b, secrets):
            return Verified("bearer", None, _text(request.body))
        refreshed = self.secrets.refresh()
        if refreshed and _any_equal(token_b, refreshed):
            return Verified("bearer", None, _text(request.body))
        raise AuthError("bearer token matches no active secret", reason="bad_token")


def _any_equal(token: bytes, secrets: list[str]) -> bool:
    # compare against every secret, match or not, so the timing does not tell which one matched
    return sum(hmac.compare_digest(token, s.encode()) for s in secrets) > 0


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("the body is not UTF-8 text", reason="bad_body") from None
