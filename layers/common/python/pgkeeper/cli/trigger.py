"""`pgkeeper trigger URL --job refresh`: sign a request, send it, print the answer.

URL is the function URL (or a `pgkeeper serve` prefix such as http://127.0.0.1:8787/refresh).
Exit status: 0 for a 2xx answer (and, with --wait, a run that did not fail), 1 otherwise, 2 when
the request could not be sent at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ..errors import ConfigError
from .sign import add_request_arguments, build

FINAL = ("succeeded", "partial", "failed", "skipped")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trigger", help="sign and send a request to a function URL, print the answer")
    p.add_argument("url", help="function URL, e.g. https://abc.lambda-url.eu-west-1.on.aws/")
    add_request_arguments(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--run", metavar="RUN_ID", help="fetch that run (GET /runs/RUN_ID) instead of starting one")
    what.add_argument("--health", action="store_true", help="GET /health instead of starting a job")
    p.add_argument("--detail", action="store_true", help="with --health: the detailed health report")
    p.add_argument("--wait", action="store_true", help="after a 202, poll /runs/<id> until the run ends")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for an answer / the run")
    p.set_defaults(func=run)


def send(args: argparse.Namespace, method: str, path: str) -> tuple[int, dict]:
    headers, body = build(args, method=method, path=path)
    base = args.url.rstrip("/")
    if urlsplit(base).scheme not in ("http", "https"):
        raise ConfigError(f"URL must start with https:// (or http:// for a local server): {args.url}")
    req = urllib.request.Request(base + path, data=body.encode() if body else None,  # noqa: S310 (checked)
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:  # noqa: S310 (scheme checked above)
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        answer = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        answer = {"raw": raw.decode("utf-8", "replace")}
    return status, answer if isinstance(answer, dict) else {"answer": answer}


def run(args: argparse.Namespace) -> int:
    if args.run:
        method, path = "GET", f"/runs/{args.run}"
    elif args.health:
        method, path = "GET", "/health" + ("?detail=1" if args.detail else "")
    else:
        method, path = "POST", "/"
    try:
        status, answer = send(args, method, path)
        _print(status, answer)
        if status == 202 and args.wait and answer.get("run_id"):
            status, answer = _wait(args, answer["run_id"])
            _print(status, answer)
            return 0 if status < 400 and answer.get("status") != "failed" else 1
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        print(f"pgkeeper: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    return 0 if status < 400 else 1


def _wait(args: argparse.Namespace, run_id: str) -> tuple[int, dict]:
    deadline = time.monotonic() + args.timeout
    delay = 0.5
    while True:
        status, answer = send(args, "GET", f"/runs/{run_id}")
        if status >= 400 or answer.get("status") in FINAL or time.monotonic() > deadline:
            return status, answer
        print(f"run {run_id}: {answer.get('status')}", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _print(status: int, answer: dict) -> None:
    print(f"HTTP {status}", file=sys.stderr)
    print(json.dumps(answer, indent=2))
