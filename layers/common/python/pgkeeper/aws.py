"""Every AWS client pgkeeper makes: short connect timeouts, bounded retries, one clear error when a
service cannot be reached.

In private subnets without a NAT gateway or VPC endpoint, an AWS call waits for a route that does
not exist; botocore's defaults (60 s connect, 60 s read, several attempts) would spend the whole
Lambda timeout there and end as "Task timed out". Bounded, the call fails in seconds and says
which service did not answer and what the deployment needs.
"""

from __future__ import annotations

import os
from typing import Any

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
"""For the small API calls (Secrets Manager, Lambda Invoke, S3 listing and heads). S3 part uploads
take their own longer read timeout (backup/store.py)."""
ATTEMPTS = 2
READ_TIMEOUT_ENV = "PGKEEPER_AWS_READ_TIMEOUT_S"
"""Overrides READ_TIMEOUT_S (seconds) for the small calls, e.g. on a slow link."""

SERVICE_NAMES = {"secretsmanager": "Secrets Manager", "lambda": "Lambda", "s3": "S3"}


def client(service: str, *, read_timeout_s: float | None = None, attempts: int = ATTEMPTS, **config: Any) -> Any:
    """A boto3 client whose calls give up after seconds, not minutes (AWS_ENDPOINT_URL is honoured)."""
    import boto3
    from botocore.config import Config

    read = read_timeout_s if read_timeout_s is not None else float(os.environ.get(READ_TIMEOUT_ENV) or READ_TIMEOUT_S)
    return boto3.client(service, config=Config(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=read,
        retries={"mode": "standard", "total_max_attempts": attempts}, **config))


def describe_error(exc: BaseException, service: str) -> str:
    """What went wrong with a call to `service`, in one line: unreachable (what to do), else the
    error code the service answered, else the exception's class."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", type(exc).__name__)
    return unreachable(exc, service) or str(code)


def unreachable(exc: BaseException, service: str) -> str | None:
    """When `exc` says the service could not be reached (no route, no answer), the one line to tell
    the user; None for any other error (access denied, not found: the service answered)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if not isinstance(exc, (BotoConnectionError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError)):
        return None
    name = SERVICE_NAMES.get(service, service)
    endpoint = getattr(exc, "kwargs", {}).get("endpoint_url", "its endpoint")
    return (f"{name} did not answer at {endpoint} ({type(exc).__name__}); in private subnets the functions "
            f"need a NAT gateway or the VPC endpoints the template creates (VpcEndpoints=true)")
