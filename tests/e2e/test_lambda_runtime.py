"""The built bundle as Lambda runs it (tests/runtime_api.py): what `pgkeeper invoke` cannot show.

The event files run through this tier in test_invoke_events.py; here, the signed function-URL path
(synchronous, and the 202 path whose self-invocation goes out through boto3 and comes back as the
function's next invocation), a cold start's init error as Lambda reports it, and the layout itself.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_invoke_events import EVENTS, SECRET, _add_messages, _load_demo

from pgkeeper.webhooks.sign import job_body, sign

URL_EVENT = json.loads((EVENTS / "url-refresh-unsigned.json").read_text())


def url_event(method: str, path: str, body: str = "", query: str = "") -> dict[str, Any]:
    """A function-URL event (payload 2.0) as Lambda delivers a signed request."""
    event = copy.deepcopy(URL_EVENT)
    event["rawPath"], event["rawQueryString"], event["body"] = path, query, body
    event["requestContext"]["http"].update({"method": method, "path": path})
    event["requestContext"]["timeEpoch"] = int(time.time() * 1000)
    event["headers"].update(sign(SECRET, body=body, method=method, path=path, query=query))
    return event


@pytest.fixture()
def demo(make_database: Callable[..., str], database_template: Callable[..., str]) -> str:
    """A copy of the demo database (demo/schema.sql) the plan layer's views are written for, with
    seven messages on a day no view has counted yet."""
    url = make_database(template=database_template("demo", _load_demo))
    with psycopg.connect(url, autocommit=True) as conn:
        _add_messages(conn)
    return url


def messages_counted(db_url: str) -> Any:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT messages FROM mv_daily_messages WHERE day = date '2031-01-01'").fetchone()


def test_a_signed_request_runs_the_job_and_answers_with_its_result(demo: str, lambda_function: Callable[..., Any]):
    fn = lambda_function("RefreshFunction", env={"DATABASE_URL": demo, "PGKEEPER_WEBHOOK_SECRETS": SECRET})

    answer = fn.invoke(url_event("POST", "/", job_body("refresh", run_async=False))).result()

    assert answer["statusCode"] == 200, answer
    result = json.loads(answer["body"])
    assert (result["job"], result["status"]) == ("refresh", "succeeded")
    assert messages_counted(demo) == (7,)
    # The deployed function knows its schedules and silence windows (the template's environment).
    status = fn.invoke(url_event("GET", "/status")).result()
    assert status["statusCode"] == 200, status
    windows = {w["window"]: w for w in json.loads(status["body"])["windows"]}
    assert windows["refresh"]["last_proven"] is not None and not windows["refresh"]["overdue"]
    assert windows["backup"]["overdue"] and windows["backup"]["schedule"] == "cron(0 3 * * ? *)"


def test_the_202_path_continues_in_an_asynchronous_invocation_of_the_same_function(
        demo: str, lambda_function: Callable[..., Any]):
    fn = lambda_function("RefreshFunction", env={"DATABASE_URL": demo, "PGKEEPER_WEBHOOK_SECRETS": SECRET})

    answer = fn.invoke(url_event("POST", "/", job_body("refresh", run_async=True))).result()

    assert answer["statusCode"] == 202, answer
    run_id = json.loads(answer["body"])["run_id"]
    [continued] = fn.api.async_invocations  # boto3's Invoke (InvocationType=Event), to this function
    assert json.loads(continued.event)["run_id"] == run_id
    fn.wait(continued)
    assert continued.kind == "response", continued.body
    poll = fn.invoke(url_event("GET", f"/runs/{run_id}")).result()
    assert poll["statusCode"] == 200 and json.loads(poll["body"])["status"] == "succeeded", poll
    assert messages_counted(demo) == (7,)


def test_unusable_configuration_is_an_init_error_lambda_reports(db_url: str, lambda_function: Callable[..., Any]):
    fn = lambda_function("RefreshFunction", env={"DATABASE_URL": db_url,
                                                 "PGKEEPER_WEBHOOK_SECRETS": f"{SECRET},whsec_not-base64!"})
    deadline = time.monotonic() + 60
    while fn.api.init_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fn.api.init_error is not None, fn.log()
    error = json.loads(fn.api.init_error)
    assert error["errorType"] == "ConfigError"
    assert error["errorMessage"] == "PGKEEPER_WEBHOOK_SECRETS: secret #2: the part after whsec_ is not valid base64"
    assert "not-base64" not in fn.log()


def test_the_function_runs_on_python_3_13_with_only_tmp_writable(db_url: str, lambda_function: Callable[..., Any]):
    """The tier's own claim, read off the running function process."""
    fn = lambda_function("VacuumFunction", env={"DATABASE_URL": db_url})
    answer = fn.invoke(json.loads((EVENTS / "vacuum-analyze.json").read_text()))
    assert answer.kind == "response", answer.body
    pid = fn.proc.pid
    assert Path(f"/proc/{pid}/exe").resolve().name.startswith("python3.13")
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/var/task")
    top: dict[str, list[str]] = {}  # mount point -> options of the mount on top (later lines stack over earlier)
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        top[fields[4]] = fields[5].split(",")
    writable = [point for point, options in top.items() if "rw" in options
                and not point.startswith(("/proc", "/sys")) and point not in ("/dev", "/dev/pts")]
    assert writable == ["/tmp"]
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    assert environ["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.13" and environ["LAMBDA_TASK_ROOT"] == "/var/task"
