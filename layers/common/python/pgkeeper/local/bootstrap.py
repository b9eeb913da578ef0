"""The process `pgkeeper invoke` starts: Lambda's runtime for one event, in a fresh interpreter.

Run as a script under `python -I`, it imports only the standard library until it has set sys.path
from the spec it reads on stdin, so the handler's modules come from the function's code dir and
layers, as in Lambda. What the handler prints (logs, EMF metrics) goes to stderr; the result — or
Lambda's error shape — is written as one JSON object to the original stdout, and nothing else is.
"""

from __future__ import annotations

import decimal
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from typing import Any


class _Answer:
    """Writes exactly one answer to the result pipe: the handler's, or the watchdog's at the timeout."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._sent = False

    def send(self, ok: bool, result: Any) -> bool:
        with self._lock:
            if self._sent:
                return False
            try:
                data = json.dumps({"ok": ok, "result": result}, default=_lambda_default)
            except (TypeError, ValueError) as exc:
                ok, data = False, json.dumps({"ok": False, "result": {
                    "errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"}})
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(self._fd, data.encode())
            os.close(self._fd)
            self._sent = True
            return ok


def _lambda_default(value: Any) -> Any:
    # The Python runtime's encoder accepts Decimal and nothing else beyond the json defaults.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(exc: BaseException, error_type: str | None = None, message: str | None = None,
           request_id: str | None = None) -> dict[str, Any]:
    shape: dict[str, Any] = {"errorMessage": message if message is not None else str(exc),
                             "errorType": error_type or type(exc).__name__}
    if request_id:
        shape["requestId"] = request_id
    frames: list[traceback.FrameSummary] = traceback.extract_tb(exc.__traceback__)
    # Like Lambda's, the trace starts in the function's code, not in the runtime calling it.
    if frames and frames[0].filename == __file__:
        frames = frames[1:]
    shape["stackTrace"] = traceback.format_list(frames)
    return shape


def _load_handler(handler: str) -> Any:
    module_path, _, name = handler.rpartition(".")
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _InitError(exc, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from exc
    except SyntaxError as exc:
        raise _InitError(exc, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}") from exc
    func = getattr(module, name, None)
    if not callable(func):
        err = AttributeError(name)
        raise _InitError(err, "Runtime.HandlerNotFound", f"Handler '{name}' missing on module '{module_name}'")
    return func


class _InitError(Exception):
    def __init__(self, cause: BaseException, error_type: str, message: str) -> None:
        super().__init__(message)
        self.cause, self.error_type, self.message = cause, error_type, message


def _watchdog(answer: _Answer, timeout_s: float, request_id: str) -> threading.Timer:
    def expire() -> None:
        message = f"Task timed out after {timeout_s:.2f} seconds"
        print(f"{request_id} {message}", file=sys.stderr, flush=True)
        answer.send(False, {"errorType": "Sandbox.Timedout", "errorMessage": message})
        # Like Lambda, stop everything the invocation started (pg_dump included) when time is up.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    return timer


def main() -> int:
    spec = json.loads(sys.stdin.buffer.read() or b"{}")
    answer = _Answer(os.dup(1))
    os.dup2(2, 1)  # from here on, anything printed is a log line on stderr
    sys.path[:0] = spec["sys_path"]

    try:
        handler = _load_handler(spec["handler"])
    except _InitError as exc:
        print(f"[ERROR] {exc.error_type}: {exc.message}", file=sys.stderr)
        answer.send(False, _error(exc.cause, exc.error_type, exc.message))
        return 1
    except Exception as exc:  # any other failure at init is reported with its own type, as Lambda does
        traceback.print_exc()
        answer.send(False, _error(exc))
        return 1

    from pgkeeper.local.context import LocalContext

    context = LocalContext(timeout_s=float(spec["timeout_s"]), name=spec["function_name"],
                           memory_mb=int(spec["memory_mb"]))
    timer = _watchdog(answer, float(spec["timeout_s"]), context.aws_request_id)
    timer.start()
    try:
        result = handler(spec["event"], context)
    except Exception as exc:  # the handler's failure becomes Lambda's error shape, exit 1
        timer.cancel()
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        answer.send(False, _error(exc, request_id=context.aws_request_id))
        return 1
    timer.cancel()
    return 0 if answer.send(True, result) else 1


if __name__ == "__main__":
    sys.exit(main())
