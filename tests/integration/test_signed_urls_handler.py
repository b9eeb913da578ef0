"""The function URL handler called in-process: replay stores, failing dependencies, failing jobs,
the Lambda self-invocation path and the static `events/url-*.json` files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from upstash_adapter import running

from pgkeeper.errors import DatabaseUnavailableError, ReplayStoreUnavailableError
from pgkeeper.jobs import JobContext, JobSpec, Options
from pgkeeper.local.context import LocalContext
from pgkeeper.local.serve import url_event
from pgkeeper.webhooks import routes as url
from pgkeeper.webhooks.dispatch import set_invoker
from pgkeeper.webhooks.replay import PostgresReplayStore, RedisReplayStore
from pgkeeper.webhooks.session import UrlSession
from pgkeeper.webhooks.sign import job_body, new_secret, sign

ROOT = Path(__file__).resolve().parents[2]
PGKEEPER = str(Path(sys.executable).with_name("pgkeeper"))
SECRET = new_secret()


def _touch(ctx: JobContext) -> dict:
    with ctx.db.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS touched (run_id uuid)")
        conn.execute("INSERT INTO touched VALUES (%s)", [ctx.run_id])
    return {"status": "succeeded", "touched": 1}


TOUCH = JobSpec(name="touch", options=Options, run=_touch)
FAILING = JobSpec(name="touch", options=Options,
                  run=lambda ctx: {"status": "failed", "errors": ["view mv_x: relation does not exist"]})


@pytest.fixture()
def signing(use_db: str, write_plan: Callable, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PGKEEPER_WEBHOOK_SECRETS", SECRET)
    monkeypatch.delenv("PGKEEPER_WEBHOOK_SECRET_ARN", raising=False)
    write_plan({"version": 1})
    url.reset()
    yield
    url.reset()


def post_event(body: str, secret: str = SECRET, **kw) -> tuple[dict, dict[str, str]]:
    headers = sign(secret, body=body, **kw)
    return url_event("POST", "/", "", {**headers, "content-type": "application/json"}, body.encode()), headers


def answer(response: dict) -> tuple[int, dict]:
    return response["statusCode"], json.loads(response["body"])


def touched(pg: psycopg.Connection) -> int:
    exists = pg.execute("SELECT to_regclass('public.touched') IS NOT NULL").fetchone()[0]
    return pg.execute("SELECT count(*) FROM touched").fetchone()[0] if exists else 0


def test_database_down_fails_closed_with_503_and_runs_nothing(signing: None, monkeypatch: pytest.MonkeyPatch,
                                                              pg: psycopg.Connection) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    event, _ = post_event(job_body("touch"))
    status, body = answer(url.handle(TOUCH, event, LocalContext(30)))
    assert (status, body["error"]) == (503, "replay_store_unavailable")
    assert "127.0.0.1" not in body["message"]  # the host is for the log, not the caller
    assert touched(pg) == 0


def test_failed_job_answers_500_with_its_report_and_is_recorded(signing: None, pg: psycopg.Connection) -> None:
    event, headers = post_event(job_body("touch"))
    status, body = answer(url.handle(FAILING, event, LocalContext(30)))
    assert (status, body["error"]) == (500, "job_failed")
    assert body["report"]["errors"] == ["view mv_x: relation does not exist"]
    row = pg.execute("SELECT status, request_id FROM pgkeeper.runs WHERE run_id = %s", [body["run_id"]]).fetchone()
    assert row == ("failed", headers["webhook-id"])


def test_postgres_store_accepts_an_id_once_until_it_expires(db_url: str, pg: psycopg.Connection,
                                                            write_plan: Callable) -> None:
    from pgkeeper.db import Database
    from pgkeeper.plan.database import DatabaseSettings

    session = UrlSession(Database(db_url, DatabaseSettings(), "touch"))
    store, other = PostgresReplayStore(session), PostgresReplayStore(UrlSession(session.db))
    try:
        assert store.accept("msg_1", 660) is True
        assert store.accept("msg_1", 660) is False
        assert other.accept("msg_1", 660) is False  # another "instance", same table
        pg.execute("UPDATE pgkeeper.webhook_ids SET expires_at = now() - interval '1 second'")
        assert other.accept("msg_1", 660) is True  # expired: the timestamp window closed long ago
        pg.execute("INSERT INTO pgkeeper.webhook_ids VALUES ('msg_old', now() - interval '1 hour', now() - "
                   "interval '1 minute')")
        store._last_purge = float("-inf")
        assert store.accept("msg_2", 660) is True
        ids = {r[0] for r in pg.execute("SELECT webhook_id FROM pgkeeper.webhook_ids")}
        assert ids == {"msg_1", "msg_2"}  # the expired one was purged
    finally:
        session.close()


def test_url_session_reconnects_after_the_server_drops_it(db_url: str, pg: psycopg.Connection) -> None:
    from pgkeeper.db import Database
    from pgkeeper.plan.database import DatabaseSettings

    session = UrlSession(Database(db_url, DatabaseSettings(), "touch"))
    store = PostgresReplayStore(session)
    try:
        assert store.accept("msg_a", 660)
        pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'pgkeeper/touch/url' AND datname = current_database()")
        assert store.accept("msg_b", 660)  # a frozen container's dead connection is replaced
    finally:
        session.close()


def test_a_purge_that_cannot_get_its_locks_does_not_refuse_an_accepted_request(
        db_url: str, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgkeeper.db import Database
    from pgkeeper.plan.database import DatabaseSettings

    monkeypatch.setattr("pgkeeper.webhooks.session.LOCK_TIMEOUT_MS", 200)
    session = UrlSession(Database(db_url, DatabaseSettings(), "touch"))
    store = PostgresReplayStore(session)
    try:
        store._last_purge = float("inf")  # no purge while the table is created
        assert store.accept("msg_first", 660)
        pg.execute("INSERT INTO pgkeeper.webhook_ids VALUES ('msg_old', now() - interval '1 hour', now() - "
                   "interval '1 minute')")
        with psycopg.connect(db_url) as holder:  # another session holds the expired row: the purge waits
            holder.execute("SELECT 1 FROM pgkeeper.webhook_ids WHERE webhook_id = 'msg_old' FOR UPDATE")
            store._last_purge = float("-inf")
            assert store.accept("msg_new", 660) is True
            assert store.accept("msg_new", 660) is False
        ids = {r[0] for r in pg.execute("SELECT webhook_id FROM pgkeeper.webhook_ids")}
        assert ids == {"msg_first", "msg_new", "msg_old"}  # accepted and recorded; the purge is left for later
    finally:
        session.close()


TOKEN = "replay-test-token"


@pytest.fixture(params=["redis", "upstash"])
def cache_env(request: pytest.FixtureRequest, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The plan's cache over redis:// or over Upstash REST (real client, local adapter, same Redis)."""
    for name in ("PGKEEPER_CACHE_SECRET_ARN", "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "redis":
        monkeypatch.setenv("REDIS_URL", redis_url)
        yield request.param
        return
    with running(redis_url, TOKEN) as adapter:
        monkeypatch.setenv("UPSTASH_REDIS_REST_URL", adapter.url)
        monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
        yield request.param


def test_redis_store_accepts_once_and_fails_closed(cache_env: str, redis_url: str) -> None:
    import redis

    from pgkeeper.cache.connect import CacheTarget, open_client
    from pgkeeper.plan.cache import CachePlan

    first, second = RedisReplayStore(open_client(CachePlan())), RedisReplayStore(open_client(CachePlan()))
    msg = f"msg_{uuid.uuid4().hex}"
    assert first.accept(msg, 660) is True
    assert second.accept(msg, 660) is False
    assert 0 < redis.Redis.from_url(redis_url).ttl(f"pgkeeper:webhook-id:{msg}") <= 660
    unreachable = open_client(CachePlan(connect_timeout_ms=200), CacheTarget("redis", "redis://127.0.0.1:1/0"))
    with pytest.raises(ReplayStoreUnavailableError):
        RedisReplayStore(unreachable).accept(msg, 660)


def test_plan_can_put_the_replay_store_in_the_cache_redis(signing: None, cache_env: str, write_plan: Callable,
                                                          pg: psycopg.Connection) -> None:
    write_plan({"version": 1, "signing": {"replay_store": "redis"}})
    event, _ = post_event(job_body("touch"))
    assert answer(url.handle(TOUCH, event, LocalContext(30)))[0] == 200
    status, body = answer(url.handle(TOUCH, event, LocalContext(30)))
    assert (status, body["error"]) == (409, "replayed")
    assert touched(pg) == 1
    assert pg.execute("SELECT count(*) FROM pgkeeper.webhook_ids").fetchone()[0] == 0


@pytest.fixture()
def lambda_api(db_url: str, tmp_path: Path, write_plan: Callable, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`pgkeeper serve`, used here for its Lambda Invoke API (like `sam local start-lambda`); boto3's
    Lambda client in this process is pointed at it."""
    plan = write_plan({"version": 1})
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"DATABASE_URL": db_url, "PGKEEPER_PLAN": str(plan),
                                                   "PGKEEPER_WEBHOOK_SECRETS": SECRET}}))
    proc = subprocess.Popen([PGKEEPER, "serve", "--port", "0", "--env-vars", str(env_file), "--function",
                             "RefreshFunction"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=(tmp_path / "serve.log").open("wb"))
    first = proc.stdout.readline().decode()
    try:
        assert first.startswith("pgkeeper serve: http"), (tmp_path / "serve.log").read_text()[-2000:]
        api = first.split(": ", 1)[1].strip()
        for name, value in (("AWS_ENDPOINT_URL_LAMBDA", api), ("AWS_ACCESS_KEY_ID", "local"),
                            ("AWS_SECRET_ACCESS_KEY", "local"), ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_long_job_continues_through_an_asynchronous_lambda_invoke(signing: None, lambda_api: str,
                                                                  pg: psycopg.Connection) -> None:
    from pgkeeper.refresh.job import JOB as REFRESH

    pg.execute("CREATE TABLE t (x int)")
    pg.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
    pg.execute("INSERT INTO t VALUES (1), (2)")
    event, headers = post_event(job_body("refresh", run_async=True))
    # The real boto3 call (InvocationType=Event) on this function's name, answered by the local API.
    status, body = answer(url.handle(REFRESH, event, LocalContext(30, name="local-refresh")))
    assert status == 202, body
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = pg.execute("SELECT status, trigger, request_id FROM pgkeeper.runs WHERE run_id = %s",
                         [body["run_id"]]).fetchone()
        if run[0] not in ("queued", "running"):
            break
        time.sleep(0.02)  # poll interval, bounded by the deadline
    assert run == ("succeeded", "url", headers["webhook-id"])
    assert pg.execute("SELECT n FROM mv").fetchone()[0] == 2


def test_undispatchable_async_run_is_503_and_recorded_failed(signing: None, lambda_api: str,
                                                             pg: psycopg.Connection) -> None:
    event, _ = post_event(job_body("touch", run_async=True))
    status, body = answer(url.handle(TOUCH, event, LocalContext(30, name="no-such-function")))
    assert (status, body["error"]) == (503, "async_dispatch_failed")
    rows = pg.execute("SELECT status, error FROM pgkeeper.runs").fetchall()
    assert len(rows) == 1 and rows[0][0] == "failed" and "ResourceNotFound" in rows[0][1]
    assert touched(pg) == 0


def test_async_run_whose_dispatch_raises_unexpectedly_is_recorded_failed(signing: None,
                                                                         pg: psycopg.Connection) -> None:
    class BrokenInvoker:
        def invoke_async(self, function_name: str, payload: dict) -> None:
            raise RuntimeError("can't start new thread")

    set_invoker(BrokenInvoker())  # restored by the fixture's url.reset()
    event, _ = post_event(job_body("touch", run_async=True))
    with pytest.raises(RuntimeError):  # Lambda answers 502 and counts the error
        url.handle(TOUCH, event, LocalContext(30, name="local-touch"))
    rows = pg.execute("SELECT status, error FROM pgkeeper.runs").fetchall()
    assert rows == [("failed", "RuntimeError: can't start new thread")]  # not left 'queued' forever
    assert touched(pg) == 0


@pytest.mark.parametrize(("name", "status", "reason"), [
    ("url-refresh-unsigned.json", 401, "missing_signature"),
    ("url-refresh-stale.json", 401, "stale_timestamp"),
])
def test_static_url_events_are_refused_as_documented(signing: None, name: str, status: int, reason: str,
                                                     pg: psycopg.Connection) -> None:
    from pgkeeper.refresh.job import JOB as REFRESH

    event = json.loads((ROOT / "events" / name).read_text())
    got = answer(url.handle(REFRESH, event, LocalContext(30)))
    assert (got[0], got[1]["error"]) == (status, reason)


def test_signed_event_from_pgkeeper_sign_runs_through_pgkeeper_invoke(db_url: str, tmp_path: Path,
                                                                       write_plan: Callable,
                                                                       pg: psycopg.Connection) -> None:
    env = {**os.environ, "PGKEEPER_WEBHOOK_SECRET": SECRET}
    event = subprocess.run([PGKEEPER, "sign", "--job", "refresh", "--event"], env=env, capture_output=True,
                           check=True, timeout=30).stdout
    (tmp_path / "event.json").write_bytes(event)
    plan = write_plan({"version": 1})
    (tmp_path / "env.json").write_text(json.dumps({"Parameters": {
        "DATABASE_URL": db_url, "PGKEEPER_PLAN": str(plan), "PGKEEPER_WEBHOOK_SECRETS": SECRET}}))
    out = subprocess.run([PGKEEPER, "invoke", "RefreshFunction", "--event", str(tmp_path / "event.json"),
                          "--env-vars", str(tmp_path / "env.json")], cwd=ROOT, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    response = json.loads(out.stdout)
    assert response["statusCode"] == 200 and json.loads(response["body"])["status"] == "succeeded"
    assert pg.execute("SELECT count(*) FROM pgkeeper.webhook_ids").fetchone()[0] == 1


def test_a_slow_database_is_503_not_a_retry(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgkeeper.db import Database
    from pgkeeper.plan.database import DatabaseSettings

    monkeypatch.setattr("pgkeeper.webhooks.session.STATEMENT_TIMEOUT_MS", 200)
    session = UrlSession(Database(db_url, DatabaseSettings(), "touch"))
    calls = []
    try:
        with pytest.raises(DatabaseUnavailableError):
            session.run(lambda conn: calls.append(1) or conn.execute("SELECT pg_sleep(5)"))
        assert calls == [1]  # statement_timeout left the connection usable: no second attempt
    finally:
        session.close()


@pytest.mark.parametrize("run_async", [False, True])
def test_an_unknown_view_over_the_signed_url_is_400_and_records_nothing(signing: None, write_plan: Callable,
                                                                        pg: psycopg.Connection,
                                                                        run_async: bool) -> None:
    """A caller's typo is checked before the lock and the run row: no run, no metric, nothing queued."""
    from pgkeeper.refresh.job import JOB as REFRESH

    pg.execute("CREATE MATERIALIZED VIEW mv_real AS SELECT 1 AS n")
    event, _ = post_event(json.dumps({"job": "refresh", "options": {"views": ["mv_typo"]}, "async": run_async}))
    status, body = answer(url.handle(REFRESH, event, LocalContext(30, name="local-refresh")))
    assert (status, body["error"]) == (400, "unknown_views"), body
    assert "mv_typo" in body["message"] and "mv_real" in body["message"]
    assert pg.execute("SELECT count(*) FROM pgkeeper.runs").fetchone()[0] == 0
