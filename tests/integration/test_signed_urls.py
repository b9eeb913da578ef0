"""Signed function URL requests over real HTTP, against `pgkeeper serve` running as a subprocess.

Every accepted request must have run the refresh job (a run row, and the materialized view now
counts the rows inserted before the request); every refused one must have run nothing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from standardwebhooks.webhooks import Webhook

from pgkeeper.webhooks.sign import job_body, new_secret, sign

ROOT = Path(__file__).resolve().parents[2]
PGKEEPER = str(Path(sys.executable).with_name("pgkeeper"))
NODE_CLIENT = ROOT / "clients" / "pgkeeper.mjs"
SHELL_CLIENT = ROOT / "clients" / "pgkeeper-trigger.sh"
OLD, NEW = new_secret(), new_secret()


class Server:
    """`pgkeeper serve --port 0` as a subprocess; its URL is the first line it prints."""

    def __init__(self, tmp: Path, name: str, variables: dict[str, str], extra_env: dict[str, str] | None = None):
        env_file = tmp / f"{name}-env.json"
        env_file.write_text(json.dumps({"Parameters": variables}))
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [PGKEEPER, "serve", "--port", "0", "--template", str(ROOT / "template.yaml"), "--env-vars", str(env_file),
             "--function", "RefreshFunction"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log.open("wb"), env={**os.environ, **(extra_env or {})},
        )
        first = self.proc.stdout.readline().decode()  # EOF (b"") if it dies: no hang
        if not first.startswith("pgkeeper serve: http"):
            self.stop()
            pytest.fail(f"pgkeeper serve did not start: {first!r}\n{self.log.read_text()[-3000:]}")
        self.base = first.split(": ", 1)[1].strip()
        self.url = self.base + "/refresh"
        self.output: list[bytes] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_drainer"):
            self._drainer.join(timeout=10)  # every line the process wrote is in `output`


def http(url: str, method: str = "POST", headers: dict[str, str] | None = None,
         body: bytes | str | None = None) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def signed_post(server: Server, body: str, secret: str = NEW, **kw) -> tuple[int, dict, dict[str, str]]:
    headers = sign(secret, body=body, **kw)
    status, answer = http(server.url + "/", "POST", {**headers, "content-type": "application/json"}, body)
    return status, answer, headers


def signed_get(server: Server, path: str, secret: str = NEW) -> tuple[int, dict]:
    route, _, query = path.partition("?")
    return http(server.url + path, "GET", sign(secret, method="GET", path=route, query=query))


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def database(admin_url: str) -> Iterator[str]:
    """One database for the module's servers: a table and a materialized view counting its rows."""
    name = f"pgk_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    url = make_conninfo(**params)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE events (id serial PRIMARY KEY)")
        c.execute("CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events")
    yield url
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plans")
    (tmp / "plan.yaml").write_text("version: 1\n")  # no views: every matview in public is refreshed
    (tmp / "bearer.yaml").write_text("version: 1\nsigning:\n  allow_bearer: true\n")
    return {"default": tmp / "plan.yaml", "bearer": tmp / "bearer.yaml"}


def _variables(database: str, plan: Path, **more: str) -> dict[str, str]:
    return {"DATABASE_URL": database, "PGKEEPER_PLAN": str(plan), "PGKEEPER_WEBHOOK_SECRETS": f"{NEW},{OLD}", **more}


@pytest.fixture(scope="module")
def server(database: str, plans: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("serve-a"), "a", _variables(database, plans["default"]))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def second_server(database: str, plans: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Another process (another "Lambda instance") sharing the database, hence the replay store."""
    s = Server(tmp_path_factory.mktemp("serve-b"), "b", _variables(database, plans["default"]))
    yield s
    s.stop()


@pytest.fixture()
def pg(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


def run_count(pg: psycopg.Connection) -> int:
    """Runs recorded in the module's database; 0 before any request made pgkeeper create its schema."""
    if pg.execute("SELECT to_regclass('pgkeeper.runs')").fetchone()[0] is None:
        return 0
    return pg.execute("SELECT count(*) FROM pgkeeper.runs").fetchone()[0]


def add_event_and_expect_refresh(pg: psycopg.Connection) -> int:
    pg.execute("INSERT INTO events DEFAULT VALUES")
    return pg.execute("SELECT count(*) FROM events").fetchone()[0]


def view_count(pg: psycopg.Connection) -> int:
    return pg.execute("SELECT n FROM event_count").fetchone()[0]


def assert_ran(pg: psycopg.Connection, answer: dict, webhook_id: str, expected_rows: int) -> None:
    assert answer["status"] == "succeeded", answer
    row = pg.execute("SELECT job, trigger, status FROM pgkeeper.runs WHERE run_id = %s AND request_id = %s",
                     [answer["run_id"], webhook_id]).fetchone()
    assert row == ("refresh", "url", "succeeded")
    assert view_count(pg) == expected_rows  # the view was really refreshed


# --------------------------------------------------------------------------------------- tests


def test_request_signed_by_the_python_library_runs_once_and_its_replay_is_refused(
        server: Server, second_server: Server, pg: psycopg.Connection) -> None:
    expected = add_event_and_expect_refresh(pg)
    body = job_body("refresh")
    msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(tz=UTC)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(NEW).sign(msg_id, now, body), "content-type": "application/json"}

    status, answer = http(server.url + "/", "POST", headers, body)
    assert status == 200
    assert_ran(pg, answer, msg_id, expected)

    before = run_count(pg)
    status, answer = http(server.url + "/", "POST", headers, body)
    assert (status, answer["error"]) == (409, "replayed")
    # The same bytes sent to another process sharing the store: still refused.
    status, answer = http(second_server.url + "/", "POST", headers, body)
    assert (status, answer["error"]) == (409, "replayed")
    assert run_count(pg) == before


def test_node_client_signs_requests_the_server_accepts_once(server: Server, pg: psycopg.Connection) -> None:
    env = {**os.environ, "PGKEEPER_WEBHOOK_SECRET": NEW}
    signed = subprocess.run(["node", str(NODE_CLIENT), "sign", "--job", "refresh"], env=env, capture_output=True,
                            check=True, timeout=30)
    request = json.loads(signed.stdout)
    expected = add_event_and_expect_refresh(pg)
    status, answer = http(server.url + "/", "POST", request["headers"], request["body"])
    assert status == 200
    assert_ran(pg, answer, request["headers"]["webhook-id"], expected)
    assert http(server.url + "/", "POST", request["headers"], request["body"])[0] == 409

    # And as a command that signs and sends, waiting for an asynchronous run.
    expected = add_event_and_expect_refresh(pg)
    done = subprocess.run(["node", str(NODE_CLIENT), "trigger", server.url, "--job", "refresh", "--async", "--wait"],
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert view_count(pg) == expected


def test_shell_client_signs_requests_the_server_accepts_once(server: Server, pg: psycopg.Connection) -> None:
    env = {**os.environ, "PGKEEPER_WEBHOOK_SECRET": NEW, "PGKEEPER_SIGN_ONLY": "1"}
    signed = subprocess.run(["sh", str(SHELL_CLIENT), server.url, "refresh"], env=env, capture_output=True,
                            check=True, timeout=30)
    head, _, body = signed.stdout.decode().partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    expected = add_event_and_expect_refresh(pg)
    status, answer = http(server.url + "/", "POST", headers, body.strip())
    assert status == 200
    assert_ran(pg, answer, headers["webhook-id"], expected)
    assert http(server.url + "/", "POST", headers, body.strip())[0] == 409

    env.pop("PGKEEPER_SIGN_ONLY")
    expected = add_event_and_expect_refresh(pg)
    sent = subprocess.run(["sh", str(SHELL_CLIENT), server.url, "refresh", '{"dry_run":false}'], env=env,
                          capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr.decode()
    run = json.loads(sent.stdout)
    assert run["status"] == "succeeded" and view_count(pg) == expected
    fetched = subprocess.run(["sh", str(SHELL_CLIENT), "--get", server.url, f"/runs/{run['run_id']}"], env=env,
                             capture_output=True, timeout=30)
    assert fetched.returncode == 0, fetched.stderr.decode()
    assert json.loads(fetched.stdout)["run_id"] == run["run_id"]

    expected = add_event_and_expect_refresh(pg)
    waited = subprocess.run(["sh", str(SHELL_CLIENT), server.url, "refresh"], capture_output=True, timeout=60,
                            env={**env, "PGKEEPER_ASYNC": "1", "PGKEEPER_WAIT": "1"})
    assert waited.returncode == 0, waited.stderr.decode()
    assert b"queued; waiting" in waited.stderr
    assert json.loads(waited.stdout)["status"] == "succeeded" and view_count(pg) == expected


def _tampered() -> tuple[dict[str, str], str]:
    headers = sign(NEW, body=job_body("refresh"))
    return headers, job_body("refresh", {"dry_run": True})


def _without(header: str) -> tuple[dict[str, str], str]:
    body = job_body("refresh")
    headers = sign(NEW, body=body)
    del headers[header]
    return headers, body


REFUSALS = {
    "tampered body": (_tampered, 401, "bad_signature"),
    "wrong secret": (lambda: (sign(new_secret(), body=job_body("refresh")), job_body("refresh")), 401, "bad_signature"),
    "stale timestamp": (lambda: (sign(NEW, body=job_body("refresh"), timestamp=int(time.time()) - 600),
                                 job_body("refresh")), 401, "stale_timestamp"),
    "future timestamp": (lambda: (sign(NEW, body=job_body("refresh"), timestamp=int(time.time()) + 600),
                                  job_body("refresh")), 401, "future_timestamp"),
    "no headers": (lambda: ({}, job_body("refresh")), 401, "missing_signature"),
    "no webhook-id": (lambda: _without("webhook-id"), 401, "missing_signature"),
    "no webhook-timestamp": (lambda: _without("webhook-timestamp"), 401, "missing_signature"),
    "no webhook-signature": (lambda: _without("webhook-signature"), 401, "missing_signature"),
    "body names another job": (lambda: (sign(NEW, body=job_body("cleanup")), job_body("cleanup")), 400, "wrong_job"),
    "unknown option": (lambda: (sign(NEW, body=job_body("refresh", {"vacuum": True})),
                                job_body("refresh", {"vacuum": True})), 400, "bad_options"),
    "body not JSON": (lambda: (sign(NEW, body="job=refresh"), "job=refresh"), 400, "invalid_json"),
    "bearer when bearer mode is off": (lambda: ({"authorization": f"Bearer {NEW}"}, job_body("refresh")), 401,
                                       "bearer_not_allowed"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_requests_get_status_and_reason_and_run_nothing(server: Server, pg: psycopg.Connection,
                                                                case: str) -> None:
    make, want_status, want_reason = REFUSALS[case]
    headers, body = make()
    before = run_count(pg)
    status, answer = http(server.url + "/", "POST", {**headers, "content-type": "application/json"}, body)
    assert (status, answer.get("error")) == (want_status, want_reason), answer
    assert "Traceback" not in json.dumps(answer) and NEW not in json.dumps(answer)
    assert run_count(pg) == before


def test_old_and_new_secret_both_run_the_job_during_rotation(server: Server, pg: psycopg.Connection) -> None:
    for secret in (OLD, NEW):
        expected = add_event_and_expect_refresh(pg)
        status, answer, headers = signed_post(server, job_body("refresh"), secret=secret)
        assert status == 200
        assert_ran(pg, answer, headers["webhook-id"], expected)


def test_base64_encoded_body_is_verified_and_runs(server: Server, pg: psycopg.Connection) -> None:
    # An octet-stream body reaches the function base64-encoded (isBase64Encoded), as Lambda does.
    body = job_body("refresh")
    headers = sign(NEW, body=body)
    expected = add_event_and_expect_refresh(pg)
    status, answer = http(server.url + "/", "POST", {**headers, "content-type": "application/octet-stream"}, body)
    assert status == 200
    assert_ran(pg, answer, headers["webhook-id"], expected)


def test_second_process_runs_fresh_requests_but_not_replays(server: Server, second_server: Server,
                                                            pg: psycopg.Connection) -> None:
    expected = add_event_and_expect_refresh(pg)
    body = job_body("refresh")
    status, answer, headers = signed_post(second_server, body)
    assert status == 200
    assert_ran(pg, answer, headers["webhook-id"], expected)
    status, answer = http(server.url + "/", "POST", {**headers, "content-type": "application/json"}, body)
    assert (status, answer["error"]) == (409, "replayed")


def test_async_run_answers_202_and_can_be_polled_until_it_ends(server: Server, pg: psycopg.Connection) -> None:
    expected = add_event_and_expect_refresh(pg)
    status, answer, headers = signed_post(server, job_body("refresh", run_async=True))
    assert status == 202 and answer["status"] == "queued"
    run_id = answer["run_id"]
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, run = signed_get(server, f"/runs/{run_id}")
        assert status == 200, run
        seen.append(run["status"])
        if run["status"] not in ("queued", "running"):
            break
    assert seen[-1] == "succeeded", seen
    assert run["request_id"] == headers["webhook-id"] and run["trigger"] == "url"
    assert view_count(pg) == expected


def test_signed_get_is_bound_to_its_path_and_unknown_runs_are_404(server: Server, pg: psycopg.Connection) -> None:
    status, answer, _ = signed_post(server, job_body("refresh"))
    run_id = answer["run_id"]
    headers = sign(NEW, method="GET", path=f"/runs/{uuid.uuid4()}")
    assert http(server.url + f"/runs/{run_id}", "GET", headers)[1]["error"] == "bad_signature"
    status, answer = signed_get(server, f"/runs/{uuid.uuid4()}")
    assert (status, answer["error"]) == (404, "run_not_found")
    status, answer = signed_get(server, "/nothing-here")
    assert (status, answer["error"]) == (404, "not_found")
    status, answer = http(server.url + "/health", "DELETE", sign(NEW, method="DELETE", path="/health"))
    assert (status, answer["error"]) == (405, "method_not_allowed")
    # Unsigned, even a path that does not exist is refused before routing: nothing to discover.
    assert http(server.url + "/nothing-here", "GET")[1]["error"] == "missing_signature"


def test_health_reports_database_and_last_runs(server: Server, pg: psycopg.Connection) -> None:
    signed_post(server, job_body("refresh"))
    status, answer = signed_get(server, "/health")
    assert status == 200 and answer["database"]["reachable"] is True
    assert answer["last_runs"]["refresh"]["status"] == "succeeded"
    assert answer["database"]["latency_ms"] >= 0


def test_trigger_command_exits_by_the_answer(server: Server, pg: psycopg.Connection) -> None:
    env = {**os.environ, "PGKEEPER_WEBHOOK_SECRET": OLD}
    expected = add_event_and_expect_refresh(pg)
    ok = subprocess.run([PGKEEPER, "trigger", server.url, "--job", "refresh", "--async", "--wait", "--timeout", "60"],
                        env=env, capture_output=True, timeout=90)
    assert ok.returncode == 0, ok.stderr.decode()
    assert '"succeeded"' in ok.stdout.decode() and view_count(pg) == expected
    env["PGKEEPER_WEBHOOK_SECRET"] = new_secret()
    refused = subprocess.run([PGKEEPER, "trigger", server.url, "--job", "refresh"], env=env, capture_output=True,
                             timeout=60)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "bad_signature"


def test_bearer_mode_when_enabled_in_the_plan(database: str, plans: dict[str, Path], pg: psycopg.Connection,
                                              tmp_path: Path) -> None:
    s = Server(tmp_path, "bearer", _variables(database, plans["bearer"]))
    try:
        expected = add_event_and_expect_refresh(pg)
        status, answer = http(s.url + "/", "POST", {"authorization": f"Bearer {OLD}"}, job_body("refresh"))
        assert status == 200 and answer["status"] == "succeeded" and view_count(pg) == expected
        before = run_count(pg)
        status, answer = http(s.url + "/", "POST", {"authorization": "Bearer not-the-secret"}, job_body("refresh"))
        assert (status, answer["error"]) == (401, "bad_token")
        assert run_count(pg) == before
    finally:
        s.stop()


def test_secret_rotated_in_secrets_manager_is_used_without_restart(database: str, plans: dict[str, Path],
                                                                   pg: psycopg.Connection, aws: str,
                                                                   tmp_path: Path) -> None:
    import boto3

    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name=f"pgkeeper-webhook-{uuid.uuid4().hex[:6]}", SecretString=OLD)["ARN"]
    variables = _variables(database, plans["default"], PGKEEPER_WEBHOOK_SECRET_ARN=arn)
    variables["PGKEEPER_WEBHOOK_SECRETS"] = ""
    s = Server(tmp_path, "sm", variables)
    try:
        assert signed_post(s, job_body("refresh"), secret=OLD)[0] == 200
        # Rotation: both valid for a while, as a JSON list. The server has OLD cached (for 300 s),
        # so the first request signed with NEW forces the one early re-read.
        client.put_secret_value(SecretId=arn, SecretString=json.dumps([NEW, OLD]))
        expected = add_event_and_expect_refresh(pg)
        status, answer, headers = signed_post(s, job_body("refresh"), secret=NEW)
        assert status == 200, answer
        assert_ran(pg, answer, headers["webhook-id"], expected)
        assert signed_post(s, job_body("refresh"), secret=OLD)[0] == 200
    finally:
        s.stop()
    logs = s.log.read_text() + b"".join(s.output).decode()  # stderr, and the stdout the logger writes to
    assert "function URL request" in logs  # the request log lines are there to be checked
    assert OLD not in logs and NEW not in logs


def test_base64_flag_matches_what_lambda_sends() -> None:
    from pgkeeper.local.serve import url_event

    event = url_event("POST", "/", "", {"content-type": "application/octet-stream"}, b'{"job":"refresh"}')
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b'{"job":"refresh"}'
    event = url_event("POST", "/", "a=1", {"Content-Type": "application/json", "Cookie": "x=1; y=2"}, b"{}")
    assert event["isBase64Encoded"] is False and event["body"] == "{}"
    assert event["queryStringParameters"] == {"a": "1"} and event["cookies"] == ["x=1", "y=2"]


def _raw(server: Server, request: bytes) -> tuple[int, dict]:
    """One raw HTTP/1.1 exchange (for what urllib refuses to send)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(server.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body or b"{}")


@pytest.mark.parametrize(("request_bytes", "status", "error"), [
    (b"TRACE /refresh/ HTTP/1.1\r\nHost: x\r\n\r\n", 401, "missing_signature"),
    (b"CONNECT /refresh/ HTTP/1.1\r\nHost: x\r\n\r\n", 401, "missing_signature"),
    (b"BREW /refresh/ HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method_not_supported"),
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"POST /refresh/ HTTP/1.1\r\nHost: x\r\n\r\n", 411, "length_required"),
    (b"POST /refresh/ HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "bad_request"),
    (b"POST /refresh/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413, "payload_too_large"),
])
def test_serve_answers_every_malformed_request_in_json(server: Server, request_bytes: bytes, status: int,
                                                       error: str) -> None:
    assert _raw(server, request_bytes)[0] == status
    answer = _raw(server, request_bytes)[1]
    assert answer["error"] == error and answer["message"]


def test_serve_never_writes_a_query_strings_values_to_its_log(server: Server) -> None:
    http(server.url + "/health?token=supersecret-value&detail=1", "GET")
    time.sleep(0.2)
    log = server.log.read_text()
    assert "/health?token=…&detail=…" in log and "supersecret-value" not in log
