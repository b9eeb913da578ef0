"""`pgkeeper invoke`: run one function of template.yaml locally, the way `sam local invoke` would.

The function is resolved from the template (Handler, CodeUri, Layers, Environment with Globals,
Timeout, MemorySize) and run in a fresh interpreter — its own sys.path (code dir, then the layers'
python/ dirs) and its own environment (the template's variables, overridden as SAM overrides them,
plus Lambda's AWS_* variables) — so nothing of the caller's process leaks in, as in a container.

Differences from `sam local invoke`, on purpose:
- the interpreter is the caller's Python (with its installed packages), not the runtime's image;
- an env value under /opt/ (where Lambda mounts layers) is mapped to the layer's local ContentUri,
  so PGKEEPER_PLAN=/opt/pgkeeper-plan.yaml finds plan/pgkeeper-plan.yaml;
- AWS_ENDPOINT_URL* and AWS_CA_BUNDLE pass through from the caller (a container could not reach a
  local endpoint such as moto anyway), as do PATH, HOME and the locale;
- the working directory is the caller's, so relative paths in an env-vars file mean what they say.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EventError
from .template import UNRESOLVED, FunctionConfig, Template, TemplateError

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
INIT_LIMIT_S = 10.0
"""Lambda gives a function's init (imports) 10 s of its own, outside the invocation's timeout."""

_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM", "AWS_CA_BUNDLE", "AWS_PROFILE",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Invocation:
    function: FunctionConfig
    env: dict[str, str]
    sys_path: list[str]
    event: Any
    notes: list[str]


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`Key=Value` or SAM's `ParameterKey=Key,ParameterValue=Value`, each item one parameter."""
    out: dict[str, str] = {}
    for item in items or []:
        if item.startswith("ParameterKey="):
            key_part, _, value_part = item.partition(",")
            key = key_part.removeprefix("ParameterKey=")
            if not value_part.startswith("ParameterValue="):
                raise ConfigError(f"--parameter-overrides {item!r}: expected ParameterKey=K,ParameterValue=V")
            out[key] = value_part.removeprefix("ParameterValue=")
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--parameter-overrides {item!r}: expected Key=Value")
        out[key] = value
    return out


def read_event(source: str | None, stdin: Any = None) -> Any:
    """The event from a file, from stdin (`-`), or {} when none is given (as `sam local invoke`)."""
    if source is None:
        return {}
    if source == "-":
        text, where = (stdin or sys.stdin).read(), "stdin"
    else:
        try:
            text, where = Path(source).read_text(encoding="utf-8"), source
        except OSError as exc:
            raise EventError(f"cannot read event file {source}: {exc.strerror}", reason="bad_event_file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"event {where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                         reason="bad_event_file") from None


def read_env_vars(path: str | None) -> dict[str, dict[str, Any]]:
    """SAM's env-vars file: {"Parameters": {...}} for every function, {"<LogicalId>": {...}} for one."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read env-vars file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"env-vars file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    shape = 'expected {"Parameters": {"NAME": "value"}, "<FunctionLogicalId>": {"NAME": "value"}}'
    if not isinstance(data, dict):
        raise ConfigError(f"env-vars file {path}: {shape}")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"env-vars file {path}: {key!r} is not an object; {shape}")
    return data


def stringify(value: Any) -> str:
    """Lambda takes strings only; SAM turns unresolved intrinsics, lists and None into ""."""
    if value is UNRESOLVED or value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


@contextlib.contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (None: unset) these variables for the block, then give the caller's values back."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(saved)


def _apply(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def function_env(fn: FunctionConfig, env_vars: dict[str, dict[str, Any]], shell: dict[str, str],
                 region: str) -> tuple[dict[str, str], list[str]]:
    """The function's environment as `sam local invoke` builds it, with /opt/ paths mapped to layers."""
    overrides: dict[str, Any] = dict(env_vars.get("Parameters", {}))
    specific = env_vars.get(fn.logical_id) or env_vars.get(fn.function_name)
    if specific:
        overrides.update(specific)

    env = {
        "AWS_SAM_LOCAL": "true",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(fn.timeout_s)),
        "AWS_LAMBDA_FUNCTION_HANDLER": fn.handler,
        "AWS_LAMBDA_FUNCTION_NAME": fn.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"aws/lambda/{fn.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LAMBDA_TASK_ROOT": str(fn.code_dir),
        "_HANDLER": fn.handler,
    }
    for name in _CREDENTIALS + _PASS_THROUGH:
        if shell.get(name):
            env[name] = shell[name]
    for name, value in shell.items():
        if name.startswith("AWS_ENDPOINT_URL"):
            env[name] = value

    notes: list[str] = []
    for name, value in fn.environment.items():
        # Priority as in SAM: env-vars file, then the caller's shell, then the template.
        if name in overrides:
            value = overrides[name]
        elif name in shell:
            value = shell[name]
        text = stringify(value)
        if text.startswith("/opt/"):
            text, note = map_opt_path(fn, name, text)
            if note:
                notes.append(note)
        env[name] = text
    ignored = sorted(set(overrides) - set(fn.environment))
    if ignored:
        notes.append(f"env-vars not declared by {fn.logical_id} in the template, ignored (as SAM does): "
                     f"{', '.join(ignored)}")
    return env, notes


def map_opt_path(fn: FunctionConfig, name: str, value: str) -> tuple[str, str | None]:
    """/opt/X → <layer ContentUri>/X for the last of the function's layers that has X (Lambda mounts
    layers in order, later ones over earlier ones)."""
    rel = value.removeprefix("/opt/")
    local = [layer.content_dir for layer in fn.layers if layer.content_dir is not None]
    for content_dir in reversed(local):
        candidate = content_dir / rel
        if candidate.exists():
            return str(candidate), None
    where = ", ".join(str(content_dir) for content_dir in local) or "(no local layers)"
    return value, f"{name}={value}: no layer of {fn.logical_id} contains {rel} (looked in {where})"


def prepare(template_path: str | Path, function_id: str, *, event: Any, env_vars_path: str | None = None,
            parameter_overrides: dict[str, str] | None = None, shell: dict[str, str] | None = None) -> Invocation:
    shell = dict(os.environ if shell is None else shell)
    region = shell.get("AWS_REGION") or shell.get("AWS_DEFAULT_REGION") or "us-east-1"
    template = Template(template_path, parameter_overrides, pseudo_overrides={"AWS::Region": region})
    fn = template.function(function_id)
    env_vars = read_env_vars(env_vars_path)
    env, notes = function_env(fn, env_vars, shell, region)
    for layer in fn.layers:
        if layer.content_dir is None:
            notes.append(f"layer {layer.logical_id} is not in the template (an ARN?): not available locally, skipped")
    # Later layers shadow earlier ones in /opt, so they come first on sys.path.
    layer_paths = [str(p) for layer in reversed(fn.layers) for p in layer.import_paths()]
    return Invocation(function=fn, env=env, sys_path=[str(fn.code_dir), *layer_paths], event=event, notes=notes)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    payload: Any
    """The handler's result, or Lambda's error shape {"errorType", "errorMessage", ...}."""


def run(inv: Invocation, *, python: str | None = None) -> Outcome:
    """Run the handler in a fresh interpreter; logs go to our stderr, the result comes back as JSON."""
    fn = inv.function
    spec = {
        "handler": fn.handler,
        "sys_path": inv.sys_path,
        "event": inv.event,
        "timeout_s": fn.timeout_s,
        "function_name": fn.logical_id,
        "memory_mb": fn.memory_mb,
    }
    # -I: no PYTHONPATH, no user site, no script dir; sys.path is what the bootstrap sets, like Lambda's.
    proc = subprocess.Popen([python or sys.executable, "-I", str(BOOTSTRAP)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=inv.env, start_new_session=True)
    try:
        # The function runs in a session of its own (so a terminal's Ctrl-C reaches us first, and we can
        # answer as Lambda would): a signal sent to our pid alone would leave it running.
        with stop_on_signals():
            out, _ = proc.communicate(json.dumps(spec).encode(), timeout=fn.timeout_s + INIT_LIMIT_S + 5)
    except subprocess.TimeoutExpired:
        # Backstop only: the bootstrap's own watchdog answers at the function's timeout.
        _kill_group(proc)
        return Outcome(False, timeout_error(fn.timeout_s))
    except (KeyboardInterrupt, Stopped):
        _kill_group(proc)
        raise
    try:
        payload = json.loads(out.decode() or "null")
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict) or "ok" not in payload:
        return Outcome(False, {"errorType": "Runtime.ExitError",
                               "errorMessage": f"the function's process exited with status {proc.returncode} "
                                               "before returning a result"})
    return Outcome(bool(payload["ok"]), payload.get("result"))


def timeout_error(timeout_s: float) -> dict[str, str]:
    return {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {timeout_s:.2f} seconds"}


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt: a signal, not an error
    """`pgkeeper invoke` itself was told to stop (SIGTERM from `timeout`, a supervisor, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM/SIGHUP raise `Stopped` in it (the main thread's only: signals
    are delivered there), so what it started is stopped on the way out (`pgkeeper invoke`'s function,
    `pgkeeper restore`'s pg_restore and temporary archive) instead of outliving the command; the
    previous handlers are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


__all__ = ["Invocation", "Outcome", "TemplateError", "parse_overrides", "prepare", "read_env_vars", "read_event",
           "run"]
