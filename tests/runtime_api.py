"""A built function run as Lambda runs it, for the tests of what ships.

`LambdaFunction` lays out one function of a `make build` output the way Lambda does, in a private
mount namespace (`lambda_sandbox.py`): its code read-only at /var/task, its layers merged read-only
at /opt, the runtime's packages (boto3, awslambdaric) at /var/runtime, a fresh writable /tmp, and
every other mount read-only. CPython 3.13 starts `python -m awslambdaric app.lambda_handler` there,
with Lambda's environment variables, and the runtime client talks to `RuntimeApi`: the Runtime API
(next invocation, response, error, init error; request id and deadline headers) served on loopback
by this process. The same server answers Lambda's Invoke API for this function (through
AWS_ENDPOINT_URL_LAMBDA), so the 202 path's asynchronous self-invocation really goes out through
boto3 and comes back as the function's next invocation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from quiet_http import QuietHandler, QuietServer

from pgkeeper.local.invoke import stringify
from pgkeeper.local.template import Template

SANDBOX = Path(__file__).with_name("lambda_sandbox.py")
PREFIX = "/2018-06-01/runtime"
INVOKE_PREFIX = "/2015-03-31/functions/"


def sandbox_problem() -> str | None:
    """Why this machine cannot lay a function out as Lambda does (None when it can)."""
    if os.geteuid() != 0:
        return "the Lambda layout needs root (a private mount namespace with read-only binds)"
    if shutil.which("unshare") is None:
        return "the Lambda layout needs unshare (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine refuses a private mount namespace: {probe.stderr.strip()}"
    return None


@dataclass
class Invocation:
    event: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline_ms: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    kind: str = ""  # "response" or "error"
    body: bytes = b""

    def result(self) -> Any:
        return json.loads(self.body)


class RuntimeApi:
    """Lambda's Runtime API and Invoke API for one function, on 127.0.0.1."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.timeout_s = timeout_s
        self.pending: queue.Queue[Invocation | None] = queue.Queue()
        self.by_id: dict[str, Invocation] = {}
        self.init_error: bytes | None = None
        self.async_invocations: list[Invocation] = []
        self.ready_at: float | None = None
        """time.monotonic() of the first `next` request: the function's init is done (Lambda's Init Duration)."""
        self._server = QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.pending.put(None)
        self._server.shutdown()
        self._server.server_close()

    def submit(self, event: bytes) -> Invocation:
        inv = Invocation(event, deadline_ms=int((time.time() + self.timeout_s) * 1000))
        self.by_id[inv.request_id] = inv
        self.pending.put(inv)
        return inv

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                if api.ready_at is None:
                    api.ready_at = time.monotonic()
                inv = api.pending.get()
                if inv is None:  # stop(): the function is gone; end this request's thread
                    return self._reply(410)
                self._reply(200, inv.event, {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn":
                        f"arn:aws:lambda:us-east-1:123456789012:function:{api.function_name}",
                    "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=0",
                })

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if self.path == f"{PREFIX}/init/error":
                    api.init_error = body
                    return self._reply(202, b'{"status":"OK"}')
                if self.path.startswith(f"{PREFIX}/invocation/"):
                    request_id, _, kind = self.path.removeprefix(f"{PREFIX}/invocation/").partition("/")
                    inv = api.by_id.get(request_id)
                    if inv is None or kind not in ("response", "error"):
                        return self._reply(400)
                    inv.kind, inv.body = kind, body
                    inv.done.set()
                    return self._reply(202, b'{"status":"OK"}')
                if self.path.startswith(INVOKE_PREFIX):  # boto3's lambda.invoke, through AWS_ENDPOINT_URL_LAMBDA
                    name = self.path.removeprefix(INVOKE_PREFIX).split("/", 1)[0]
                    if name.split(":")[-1] != api.function_name:
                        message = json.dumps({"Type": "User", "Message": f"Function not found: {name}"}).encode()
                        return self._reply(404, message, {"x-amzn-ErrorType": "ResourceNotFoundException"})
                    inv = api.submit(body)
                    if self.headers.get("X-Amz-Invocation-Type") == "Event":
                        api.async_invocations.append(inv)
                        return self._reply(202)
                    inv.done.wait(api.timeout_s + 5)
                    headers = {"X-Amz-Function-Error": "Unhandled"} if inv.kind == "error" else {}
                    return self._reply(200, inv.body, headers)
                return self._reply(404)

        return Handler


class LambdaFunction:
    """One function of a build, started as Lambda starts it; `invoke(event)` runs one invocation."""

    def __init__(self, build_dir: Path, logical_id: str, *, python: str, runtime_dir: Path, scratch: Path,
                 env: dict[str, str]) -> None:
        template = Template(build_dir / "template.yaml")
        self.fn = template.function(logical_id)
        self.python = python
        self.runtime_dir = runtime_dir
        self.shared = scratch
        self.scratch = scratch / f"{logical_id}-{uuid.uuid4().hex[:6]}"
        self.overrides = env
        self.api = RuntimeApi(self.fn.function_name, self.fn.timeout_s)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.log_path = self.scratch / "function.log"

    def _opt(self) -> Path:
        """The function's layers merged in order into one directory, as Lambda extracts them into /opt;
        made once per set of layers (it is mounted read-only, so functions can share it)."""
        sources = "\n".join(str(layer.content_dir) for layer in self.fn.layers)  # these builds' layers, in order
        opt = self.shared / f"opt-{hashlib.sha256(sources.encode()).hexdigest()[:16]}"
        if opt.is_dir():
            return opt
        staging = self.shared / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        for layer in self.fn.layers:
            assert layer.content_dir is not None and layer.content_dir.is_dir(), f"layer {layer.logical_id} not built"
            shutil.copytree(layer.content_dir, staging, dirs_exist_ok=True, symlinks=True)
        try:
            staging.rename(opt)
        except OSError:  # made meanwhile by another function of this session
            shutil.rmtree(staging, ignore_errors=True)
        return opt

    def environment(self) -> dict[str, str]:
        """What Lambda's python3.13 runtime sets, then the template's variables with the test's overrides."""
        region = "us-east-1"
        env = {
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "AWS_LAMBDA_FUNCTION_NAME": self.fn.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.fn.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.fn.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/07/[$LATEST]0123456789abcdef",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "_HANDLER": self.fn.handler,
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
                               "/var/task/lib:/opt/lib",
            "PYTHONPATH": "/opt/python/lib/python3.13/site-packages:/opt/python:/var/runtime",
            # Credentials and endpoints of this test session (moto); Invoke comes back to this server.
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "AWS_SESSION_TOKEN": "test-session-token",
            "AWS_ENDPOINT_URL_LAMBDA": f"http://{self.api.address}",
        }
        if os.environ.get("AWS_ENDPOINT_URL"):
            env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
        for name, value in self.fn.environment.items():
            env[name] = stringify(self.overrides.get(name, value))
        unknown = set(self.overrides) - set(self.fn.environment)
        assert not unknown, f"{self.fn.logical_id} does not declare {sorted(unknown)} (Lambda would not set them)"
        return env

    def start(self) -> None:
        self.scratch.mkdir(parents=True)
        spec = {"task": str(self.fn.code_dir), "opt": str(self._opt()), "runtime": str(self.runtime_dir),
                "python": self.python, "handler": self.fn.handler, "env": self.environment()}
        self.api.start()
        log = self.log_path.open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-I", str(SANDBOX), json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds from start() until the runtime asked for its first event (init done)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.api.ready_at is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.fn.logical_id} did not get ready\n{self.log()[-4000:]}")
            time.sleep(0.002)
        return self.api.ready_at - self.started_at

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invoke(self, event: Any, timeout_s: float | None = None) -> Invocation:
        """One invocation; returns when the function answered (response or error)."""
        assert self.proc is not None, "start() first"
        inv = self.api.submit(json.dumps(event).encode())
        return self.wait(inv, timeout_s)

    def wait(self, inv: Invocation, timeout_s: float | None = None) -> Invocation:
        assert self.proc is not None
        deadline = time.monotonic() + (timeout_s or self.fn.timeout_s)
        while not inv.done.wait(0.05):
            if self.proc.poll() is not None:
                init = self.api.init_error.decode(errors="replace") if self.api.init_error else "none"
                raise AssertionError(f"{self.fn.logical_id} exited ({self.proc.returncode}); init error: {init}\n"
                                     f"{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.fn.logical_id} did not answer in time\n{self.log()[-4000:]}")
        return inv

    def stop(self) -> None:
        """Ends the function's process group (Lambda shuts the sandbox down)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.api.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
