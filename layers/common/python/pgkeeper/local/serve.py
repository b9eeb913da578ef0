"""`pgkeeper serve`: every function of template.yaml as a local function URL, through the same handlers.

`http://127.0.0.1:8787/refresh/...` reaches RefreshFunction as if it were its function URL: the
HTTP request becomes a payload 2.0 event (base64 body for non-text content types, as Lambda
does) and the function's own `lambda_handler` answers it. Long jobs continue on a background
thread (the in-process `AsyncInvoker`), so `202` + `GET /runs/{id}` behave as deployed.

The server also answers the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`,
like `sam local start-lambda`), so code that invokes a function with boto3 can be pointed at it
with `AWS_ENDPOINT_URL_LAMBDA`.

Like one Lambda execution environment, it handles one function request at a time (Powertools'
resolver keeps the current event on the class); asynchronous runs proceed in parallel.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..errors import DispatchError, PgkeeperError
from ..webhooks.dispatch import set_invoker
from .context import LocalContext
from .invoke import prepare
from .template import FunctionConfig, Template, TemplateError

MAX_BODY = 6 * 1024 * 1024  # a function URL's request payload limit
SOCKET_TIMEOUT_S = 30.0
_QUERY = re.compile(r"\?[^\s\"]*")


def _redact_query(line: str) -> str:
    """An access-log line without query values: a caller may put a token or a secret there."""
    return _QUERY.sub(lambda m: "?" + "&".join(f"{k}=…" for k, _ in parse_qsl(m.group(0)[1:], keep_blank_values=True)),
                      line)
_TEXT_TYPES = re.compile(r"^(text/|application/(json|javascript|xml|x-www-form-urlencoded)|[^;]*\+(json|xml))", re.I)
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")

Handler = Callable[[Any, Any], Any]


@dataclass
class ServedFunction:
    prefix: str
    """URL path prefix: `refresh` for RefreshFunction."""
    logical_id: str
    function_name: str
    timeout_s: float
    handler: Handler

    def context(self) -> LocalContext:
        return LocalContext(timeout_s=self.timeout_s, name=self.function_name)


def prefix_for(logical_id: str) -> str:
    """RefreshFunction → refresh; a name without the suffix is just lower-cased."""
    name = logical_id.removesuffix("Function") or logical_id
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def url_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
              source_ip: str = "127.0.0.1") -> dict[str, Any]:
    """A function URL (payload format 2.0) event for one HTTP request."""
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers.items():
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    now = datetime.now(tz=UTC)
    content_type = lowered.get("content-type", "")
    is_text = not body or bool(_TEXT_TYPES.match(content_type))
    if is_text and body:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            is_text = False  # bytes that are not text travel base64-encoded whatever the header says
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "pgkeeper-local",
            "domainName": lowered.get("host", "localhost"),
            "domainPrefix": "pgkeeper-local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        event["queryStringParameters"] = params
    if body:
        event["body"] = body.decode("utf-8") if is_text else base64.b64encode(body).decode()
    return event


class LocalInvoker:
    """The in-process `AsyncInvoker`: the function's handler on a background thread."""

    def __init__(self, functions: dict[str, ServedFunction]) -> None:
        self.by_name = {f.function_name: f for f in functions.values()} | {f.logical_id: f for f in functions.values()}
        self.threads: list[threading.Thread] = []

    def invoke_async(self, function_name: str, payload: dict[str, Any]) -> None:
        fn = self.by_name.get(function_name)
        if fn is None:
            raise DispatchError(f"no function {function_name!r} is served here")
        thread = threading.Thread(target=_run_async, args=(fn, payload), name=f"async-{fn.prefix}", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()


def _run_async(fn: ServedFunction, payload: dict[str, Any]) -> None:
    try:
        fn.handler(payload, fn.context())
    except PgkeeperError as exc:
        # Already recorded in the run history by the runner; Lambda would log it and retry.
        print(f"pgkeeper serve: async {fn.prefix} run failed: {exc.reason}: {exc}", file=sys.stderr, flush=True)


class UrlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], functions: dict[str, ServedFunction]) -> None:
        super().__init__(address, RequestHandler)
        self.functions = functions
        self.invoker = LocalInvoker(functions)
        # Powertools' resolver keeps the current event on its class: one function request at a time.
        self.handler_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # getsockname() of an AF_INET socket
        return f"http://{host}:{port}"


class RequestHandler(BaseHTTPRequestHandler):
    server: UrlServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = SOCKET_TIMEOUT_S
    """A client that stops sending (a half-written request, an idle keep-alive) is dropped, not waited for."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (unknown method, malformed request line, header too long) as
        JSON like every other answer, never its HTML page."""
        self.close_connection = True
        self.request_version = self.protocol_version  # an unparsable request line reads as HTTP/0.9: no headers
        with contextlib.suppress(OSError):  # the client may already be gone
            reason = {501: "method_not_supported"}.get(code, "bad_request" if code < 500 else "server_error")
            self._send(code, {"error": reason,
                              "message": message or self.responses.get(code, ("",))[0]})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        sys.stderr.write(f"pgkeeper serve: {self.address_string()} {_redact_query(format % args)}\n")

    def _dispatch(self) -> None:
        raw_path, _, query = self.path.partition("?")
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._send(411, {"error": "length_required", "message": "send a Content-Length"})
        declared = self.headers.get("content-length")
        if declared is None and self.command in ("POST", "PUT", "PATCH"):
            return self._send(411, {"error": "length_required", "message": "send a Content-Length"})
        try:
            length = int(declared or 0)
        except ValueError:
            return self._send(400, {"error": "bad_request", "message": "Content-Length is not a number"})
        if length < 0:
            return self._send(400, {"error": "bad_request", "message": "Content-Length is negative"})
        if length > MAX_BODY:
            return self._send(413, {"error": "payload_too_large", "message": f"body over {MAX_BODY} bytes"})
        body = self.rfile.read(length) if length else b""
        invoke = _INVOKE_PATH.match(raw_path)
        if invoke and self.command == "POST":
            return self._invoke_api(unquote(invoke.group(1)), body)
        parts = raw_path.split("/", 2)
        fn = self.server.functions.get(parts[1]) if len(parts) > 1 else None
        if fn is None:
            prefixes = ", ".join(f"/{p}" for p in sorted(self.server.functions))
            return self._send(404, {"error": "no_function", "message": f"no function at this path; served: {prefixes}"})
        path = "/" + (parts[2] if len(parts) > 2 else "")
        event = url_event(self.command, path, query, dict(self.headers.items()), body, self.client_address[0])
        with self.server.handler_lock:
            try:
                result = fn.handler(event, fn.context())
            except Exception:  # what Lambda does with an unhandled error: log it, answer 502
                traceback.print_exc(file=sys.stderr)
                return self._send(502, {"Message": "Internal Server Error"})
        self._send_result(result)

    def _invoke_api(self, name: str, body: bytes) -> None:
        fn = self.server.invoker.by_name.get(name)
        if fn is None:
            return self._send(404, {"Type": "User", "message": f"Function not found: {name}"},
                              {"x-amzn-errortype": "ResourceNotFoundException"})
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return self._send(400, {"Type": "User", "message": "payload is not JSON"},
                              {"x-amzn-errortype": "InvalidRequestContentException"})
        if self.headers.get("x-amz-invocation-type") == "Event":
            self.server.invoker.invoke_async(fn.function_name, payload)
            return self._send(202, None)
        try:
            result = fn.handler(payload, fn.context())
        except Exception as exc:  # Lambda's runtime boundary: the error becomes the invoke's answer
            traceback.print_exc(file=sys.stderr)
            return self._send(200, {"errorMessage": str(exc), "errorType": type(exc).__name__},
                              {"x-amz-function-error": "Unhandled"})
        self._send(200, result)

    def _send_result(self, result: Any) -> None:
        # A function URL treats anything but a {"statusCode": ...} dict as a 200 JSON body.
        if not (isinstance(result, dict) and "statusCode" in result):
            return self._send(200, result)
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        self._write(int(result["statusCode"]), data, headers, result.get("cookies") or [])

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body, default=str).encode()
        self._write(status, data, {"content-type": "application/json", **(headers or {})}, [])

    def _write(self, status: int, data: bytes, headers: dict[str, str], cookies: list[str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        for cookie in cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


# Lambda's own per-function variables: they differ between functions and are not the app's settings.
_RUNTIME_VARS = re.compile(r"^(AWS_LAMBDA_|LAMBDA_TASK_ROOT$|_HANDLER$)")


def load_functions(template_path: str | Path, *, env_vars_path: str | None = None,
                   parameter_overrides: dict[str, str] | None = None,
                   only: list[str] | None = None) -> tuple[dict[str, ServedFunction], dict[str, str], list[str]]:
    """The template's functions, their handlers imported in this process, and the environment to set.

    The environment is each function's, built as `pgkeeper invoke` builds it (template, env-vars
    file, /opt/ mapped to layers); one process serves them all, so a variable two functions set
    differently is reported and the first function's value kept.
    """
    template = Template(template_path, parameter_overrides)
    ids = only or template.function_ids()
    functions: dict[str, ServedFunction] = {}
    env: dict[str, str] = {}
    owner: dict[str, str] = {}
    notes: list[str] = []
    for logical_id in ids:
        inv = prepare(template_path, logical_id, event=None, env_vars_path=env_vars_path,
                      parameter_overrides=parameter_overrides)
        notes += [n for n in inv.notes if n not in notes]
        for name, value in inv.env.items():
            if _RUNTIME_VARS.match(name):
                continue
            if name in env and env[name] != value:
                notes.append(f"{name} differs between {owner[name]} and {logical_id}; serving {owner[name]}'s value")
                continue
            env.setdefault(name, value)
            owner.setdefault(name, logical_id)
        fn = inv.function
        try:
            handler = _import_handler(fn)
        except (ImportError, SyntaxError) as exc:
            # Lambda would fail every invocation of this one function (Runtime.ImportModuleError);
            # the others still work, so serve them and answer this one's URL with 502.
            notes.append(f"{logical_id}: cannot import {fn.handler} ({type(exc).__name__}: {exc}); its URL answers 502")
            handler = _import_failed(logical_id, exc)
        prefix = prefix_for(logical_id)
        functions[prefix] = ServedFunction(prefix=prefix, logical_id=logical_id, function_name=fn.function_name,
                                           timeout_s=fn.timeout_s, handler=handler)
    return functions, env, notes


def _import_handler(fn: FunctionConfig) -> Handler:
    """`module.function` from the function's code dir, under a module name of its own: every
    function's module is called `app`, and all of them live in this one process."""
    module_path, _, attr = fn.handler.rpartition(".")
    file = fn.code_dir / (module_path.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"pgkeeper_serve_{fn.logical_id}", file)
    if spec is None or spec.loader is None or not file.is_file():
        raise TemplateError(f"{fn.logical_id}: handler module {file} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise TemplateError(f"{fn.logical_id}: {file.name} has no function {attr!r}")
    return handler


def _import_failed(logical_id: str, exc: BaseException) -> Handler:
    message = f"Unable to import module for {logical_id}: {type(exc).__name__}: {exc}"

    def handler(event: Any, context: Any) -> Any:
        raise RuntimeError(message)

    return handler


def serve(functions: dict[str, ServedFunction], host: str = "127.0.0.1", port: int = 8787,
          ready: Callable[[UrlServer], None] | None = None) -> None:
    """Serve until interrupted; `ready` is called once the socket listens (the port may be 0)."""
    server = UrlServer((host, port), functions)
    set_invoker(server.invoker)
    try:
        if ready:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        set_invoker(None)
        deadline = time.monotonic() + 5.0
        for thread in server.invoker.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
