"""A LambdaContext for local runs, whose remaining time counts down in real time like Lambda's."""

from __future__ import annotations

import time
import uuid


class LocalContext:
    def __init__(self, timeout_s: float = 900.0, name: str = "pgkeeper-local", memory_mb: int = 512) -> None:
        self._deadline = time.monotonic() + timeout_s
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
