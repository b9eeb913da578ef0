"""An AWS service that cannot be reached fails the job in seconds, naming the service and what the
deployment needs, instead of waiting out the Lambda timeout (private subnets without a route)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgkeeper import secrets
from pgkeeper.errors import ConfigError
from pgkeeper.handler import handle
from pgkeeper.local.context import LocalContext
from pgkeeper.refresh.job import JOB

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def silent_endpoint() -> Iterator[str]:
    """Accepts TCP connections and never answers: what a security group without egress looks like
    from inside the function once a route exists but nothing replies."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_secrets_manager_that_never_answers_fails_the_run_in_seconds_naming_it(
        silent_endpoint: str, aws: str, write_plan, monkeypatch: pytest.MonkeyPatch):
    write_plan({"version": 1})
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", silent_endpoint)
    monkeypatch.setenv("PGKEEPER_AWS_READ_TIMEOUT_S", "1")
    monkeypatch.setenv("PGKEEPER_DATABASE_SECRET_ARN",
                       "arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeeper-db-AbCdEf")
    secrets.reset_cache()
    context = LocalContext(60)
    event = json.loads((ROOT / "events" / "refresh-scheduled.json").read_text())

    with pytest.raises(ConfigError) as err:
        handle(JOB, event, context)

    assert str(err.value).startswith(
        "cannot read secret arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeeper-db-AbCdEf: "
        f"Secrets Manager did not answer at {silent_endpoint}/ (ReadTimeoutError); in private subnets the "
        "functions need a NAT gateway or the VPC endpoints the template creates (VpcEndpoints=true)")
    assert context.get_remaining_time_in_millis() > 50_000  # seconds, not the function's timeout
