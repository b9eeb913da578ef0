"""How a long job continues after its function URL request answered 202.

In Lambda the function invokes itself asynchronously (`InvocationType=Event`) with the direct
event `{"job", "options", "trigger": "async", "run_id", "request_id"}`, which
`triggers.parse_event` accepts; the queued run row becomes `running` under the same id. Locally
`pgkeeper serve` installs an invoker that runs the same handler on a background thread.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from ..errors import DispatchError


class AsyncInvoker(Protocol):
    def invoke_async(self, function_name: str, payload: dict[str, Any]) -> None:
        """Start `function_name` with `payload` and return without waiting; DispatchError if it cannot."""
        ...


class LambdaInvoker:
    """`lambda:InvokeFunction` on the function itself (the template grants exactly that)."""

    def __init__(self) -> None:
        self._client: Any = None

    def invoke_async(self, function_name: str, payload: dict[str, Any]) -> None:
        import botocore.exceptions

        try:
            if self._client is None:
                from ..aws import client

                self._client = client("lambda", attempts=1)  # a retried Invoke could start the job twice
            resp = self._client.invoke(FunctionName=function_name, InvocationType="Event",
                                       Payload=json.dumps(payload).encode())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            from ..aws import describe_error

            raise DispatchError(f"cannot invoke {function_name} asynchronously: "
                                f"{describe_error(exc, 'lambda')}") from exc
        if resp.get("StatusCode") != 202:
            raise DispatchError(f"asynchronous invoke of {function_name} answered {resp.get('StatusCode')}")


_invoker: AsyncInvoker | None = None


def get_invoker() -> AsyncInvoker:
    global _invoker
    if _invoker is None:
        _invoker = LambdaInvoker()
    return _invoker


def set_invoker(invoker: AsyncInvoker | None) -> None:
    """`pgkeeper serve` runs continuations in-process; None restores the Lambda invoker."""
    global _invoker
    _invoker = invoker


def self_function_name(context: Any) -> str:
    """This function's name: from the context (set by Lambda and by `pgkeeper serve`), else the env."""
    name = getattr(context, "function_name", None) or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if not name:
        raise DispatchError("cannot tell which function to continue in (no context.function_name)")
    return name
