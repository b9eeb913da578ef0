"""`pgkeeper sign`: print the headers and body of a signed function URL request.

For callers that send the request themselves (a curl line, a CI step, a test). `pgkeeper
trigger` signs and sends in one go.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ConfigError
from ..webhooks import sign as signing
from ..webhooks.secrets import SecretSource, check_secret

CALLER_SECRET_ENV = "PGKEEPER_WEBHOOK_SECRET"  # noqa: S105 (the name of an env var)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sign", help="print a signed function URL request (headers and body)")
    add_request_arguments(p)
    p.add_argument("--get", metavar="PATH", help="sign a body-less GET of PATH (/runs/<id>, /health) instead")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print {method, path, headers, body} as JSON")
    out.add_argument("--event", action="store_true",
                     help="print a function URL (payload 2.0) event for `pgkeeper invoke` / `sam local invoke -e`; "
                          "valid for 5 minutes and once, so it cannot be a file in events/")
    p.add_argument("--new-secret", action="store_true", help="print a fresh whsec_ secret and exit")
    p.set_defaults(func=run)


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", help="the job the body names (refresh, cleanup, vacuum, backup)")
    p.add_argument("--options", default="{}", help='job options as JSON, e.g. \'{"views": ["daily_sales"]}\'')
    p.add_argument("--async", dest="run_async", action="store_true", default=None,
                   help="ask for 202 + asynchronous run even for a short job")
    p.add_argument("--secret", help=f"whsec_ secret (default: ${CALLER_SECRET_ENV}, else the first of "
                                    "$PGKEEPER_WEBHOOK_SECRETS / the secret in $PGKEEPER_WEBHOOK_SECRET_ARN); "
                                    "prefer the env var: arguments show up in `ps`")


def resolve_secret(arg: str | None) -> str:
    """The secret to sign with: argument, caller env, else the first active server-side secret."""
    secret = (arg or os.environ.get(CALLER_SECRET_ENV, "")).strip()
    if secret:
        check_secret(secret, "the signing secret")
        return secret
    secrets = SecretSource().current()
    if not secrets:
        raise ConfigError(f"no secret: pass --secret or set {CALLER_SECRET_ENV} (or PGKEEPER_WEBHOOK_SECRETS)")
    return secrets[0]


def parse_options(text: str) -> dict[str, Any]:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options is not JSON: {exc.msg}") from None
    if not isinstance(options, dict):
        raise ConfigError("--options must be a JSON object")
    return options


def build(args: argparse.Namespace, *, method: str, path: str) -> tuple[dict[str, str], str]:
    """Headers and body for `method path` (a POST names the job; a GET signs its request line)."""
    secret = resolve_secret(args.secret)
    if method == "POST":
        if not args.job:
            raise ConfigError("--job is required to run a job")
        body = signing.job_body(args.job, parse_options(args.options), args.run_async)
        headers = signing.sign(secret, body=body, method=method, path=path)
        headers["content-type"] = "application/json"
        return headers, body
    route, _, query = path.partition("?")
    return signing.sign(secret, method=method, path=route, query=query), ""


def run(args: argparse.Namespace) -> int:
    if args.new_secret:
        print(signing.new_secret())
        return 0
    method, path = ("GET", args.get) if args.get else ("POST", "/")
    if not path.startswith("/"):
        raise ConfigError("--get takes a path starting with / (e.g. /runs/<run_id>)")
    headers, body = build(args, method=method, path=path)
    if args.event:
        from ..local.serve import url_event

        route, _, query = path.partition("?")
        print(json.dumps(url_event(method, route, query, headers, body.encode()), indent=2))
        return 0
    if args.json:
        print(json.dumps({"method": method, "path": path, "headers": headers, "body": body}, indent=2))
        return 0
    for name, value in headers.items():
        print(f"{name}: {value}")
    print()
    sys.stdout.write(body + ("\n" if body else ""))
    return 0
