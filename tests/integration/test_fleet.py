"""A fleet from one deployment: fan-out over several real databases through the local Lambda Invoke API.

The functions are served as `pgkeeper serve` serves them (its UrlServer, in this process); the
coordinator's invocations of itself go out through boto3's Lambda client (AWS_ENDPOINT_URL_LAMBDA) to
that server's Invoke API, which runs each on a thread of its own, as Lambda runs each in an instance.
What a user sees is read back from each database's own run history.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from s3_proxy import max_overlap

from pgkeeper import config, fleet
from pgkeeper.errors import EventError
from pgkeeper.local.context import LocalContext
from pgkeeper.local.serve import UrlServer, load_functions
from pgkeeper.webhooks import routes
from pgkeeper.webhooks.sign import new_secret, sign

ROOT = Path(__file__).resolve().parents[2]
SECRET = new_secret()
SLOW_VIEW = "CREATE MATERIALIZED VIEW slow AS SELECT pg_sleep({s}) IS NULL AS slept, clock_timestamp() AS at"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


class Served:
    def __init__(self, server: UrlServer, functions: dict[str, Any]) -> None:
        self.server = server
        self.functions = functions

    @property
    def url(self) -> str:
        return self.server.url

    def handler(self, prefix: str) -> Callable[[Any, Any], Any]:
        return self.functions[prefix].handler

    def context(self, prefix: str, timeout_s: float) -> LocalContext:
        return LocalContext(timeout_s, name=self.functions[prefix].function_name)

    def wait_for_invocations(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while any(t.is_alive() for t in self.server.invoker.threads) and time.monotonic() < deadline:
            for thread in list(self.server.invoker.threads):
                thread.join(0.2)


@pytest.fixture()
def members(make_database: Callable[..., str]) -> Callable[[int, float], list[str]]:
    def make(count: int, sleep_s: float) -> list[str]:
        urls = []
        for _ in range(count):
            url = make_database()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SLOW_VIEW.format(s=sleep_s))
            urls.append(url)
        return urls
    return make


@pytest.fixture()
def served(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    servers: list[UrlServer] = []

    def start(plan: dict[str, Any], urls: dict[str, str]) -> Served:
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(yaml.safe_dump(plan))
        functions, env, _notes = load_functions(ROOT / "template.yaml", only=["RefreshFunction", "BackupFunction"])
        for name, value in {**env, **urls, "PGKEEPER_PLAN": str(plan_file), "PGKEEPER_WEBHOOK_SECRETS": SECRET,
                            "PGKEEPER_BACKUP_BUCKET": "pgk-fleet"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        config.reset()
        routes.reset()  # the Lambda client is built anew, for the endpoint below
        server = UrlServer(("127.0.0.1", 0), functions)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", server.url)
        return Served(server, functions)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    routes.reset()
    config.reset()


def _fleet_plan(names: list[str], concurrency: int, **extra: Any) -> dict[str, Any]:
    return {"version": 1, "fleet": {"concurrency": concurrency, "poll_s": 0.1, "databases": [
        {"name": n, "database": {"url_env": f"FLEET_URL_{n.upper()}", "connect_timeout_s": 1, "connect_retries": 0}}
        for n in names]}, **extra}


def _runs(url: str, but: str | None = None) -> list[tuple]:
    """The database's runs, but the fan-out's own (`but`: it is recorded in the first member's)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT run_id::text, job, trigger, status, started_at, finished_at, error "
                            "FROM pgkeeper.runs ORDER BY started_at").fetchall()
    return [r for r in rows if r[0] != but]


def test_fan_out_runs_every_database_within_the_bound_and_reports_the_unreachable_one(members, served):
    urls = members(4, 0.4)
    names = ["a", "b", "c", "d", "gone"]
    env = {f"FLEET_URL_{n.upper()}": u for n, u in zip(names, [*urls, UNREACHABLE], strict=True)}
    s = served(_fleet_plan(names, concurrency=2), env)
    before = datetime.now(UTC)

    result = s.handler("refresh")({"job": "refresh"}, s.context("refresh", 120))

    report = result["report"]
    assert result["status"] == "failed"  # succeeded only when every member is
    assert report["counts"] == {"succeeded": 4, "failed": 1}
    assert report["summary"].startswith("4 of 5 databases succeeded: gone failed (could not record the run in gone")
    by_name = {m["database"]: m for m in report["databases"]}
    assert {n: by_name[n]["status"] for n in names} == {"a": "succeeded", "b": "succeeded", "c": "succeeded",
                                                        "d": "succeeded", "gone": "failed"}
    assert report["max_running"] <= 2
    # The fan-out itself is in the first member's run history, as it ended.
    (fan,) = [r for r in _runs(urls[0]) if r[0] == result["run_id"]]
    assert fan[1:4] == ("refresh", "fleet", "failed")
    intervals = []
    for name, url in zip(names[:4], urls, strict=True):
        (run,) = _runs(url, but=result["run_id"])  # its own run history, in its own database
        assert run[0] == by_name[name]["run_id"] and run[1:4] == ("refresh", "fleet", "succeeded")
        intervals.append((run[4], run[5]))
        with psycopg.connect(url) as conn:  # the view was really refreshed, by this fan-out
            assert conn.execute("SELECT at FROM slow").fetchone()[0] > before
    assert max_overlap(intervals) == 2  # in parallel, and never more than the bound


def test_a_fan_out_longer_than_its_invocation_continues_in_a_new_one_and_keeps_the_bound(members, served,
                                                                                          monkeypatch):
    urls = members(3, 0.5)
    names = ["x", "y", "z"]
    s = served(_fleet_plan(names, concurrency=1), {f"FLEET_URL_{n.upper()}": u for n, u in zip(names, urls,
                                                                                                strict=True)})
    monkeypatch.setattr(fleet, "CONTINUE_RESERVE_S", 0.3)

    first = s.handler("refresh")({"job": "refresh"}, s.context("refresh", 2.0))
    assert first["status"] == "continued" and first["report"]["continuations"] == 1
    s.wait_for_invocations()

    (fan,) = [r for r in _runs(urls[0]) if r[0] == first["run_id"]]
    assert fan[3] == "succeeded"  # recorded by the invocation that finished it
    intervals = []
    for url in urls:
        (run,) = _runs(url, but=first["run_id"])
        assert run[3] == "succeeded", run
        intervals.append((run[4], run[5]))
    assert max_overlap(intervals) == 1  # the bound holds across the hand-over


def test_a_request_names_one_database_and_its_run_is_read_back_there(members, served):
    urls = members(2, 0.0)
    s = served(_fleet_plan(["one", "two"], concurrency=2),
               {"FLEET_URL_ONE": urls[0], "FLEET_URL_TWO": urls[1]})
    body = json.dumps({"job": "refresh", "database": "two"})
    headers = {**sign(SECRET, body=body), "content-type": "application/json"}
    req = urllib.request.Request(s.url + "/refresh/", data=body.encode(), headers=headers, method="POST")
    answer = json.loads(urllib.request.urlopen(req).read())
    assert answer["status"] == "succeeded"
    assert [r[0] for r in _runs(urls[1])] == [answer["run_id"]]
    assert _runs(urls[0]) == []  # the other member ran nothing (it holds the deployment's replay store)

    path = f"/runs/{answer['run_id']}"
    get = urllib.request.Request(s.url + "/refresh" + path + "?database=two",
                                 headers=sign(SECRET, method="GET", path=path, query="database=two"))
    run = json.loads(urllib.request.urlopen(get).read())
    assert run["status"] == "succeeded" and run["trigger"] == "url"

    unknown = json.dumps({"job": "refresh", "database": "three"})
    req = urllib.request.Request(s.url + "/refresh/", data=unknown.encode(), method="POST",
                                 headers={**sign(SECRET, body=unknown), "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400
    assert "no database 'three' in the plan's fleet; known: one, two" in err.value.read().decode()


def test_a_signed_request_without_a_database_fans_out_and_names_each_run(members, served):
    urls = members(2, 0.0)
    s = served(_fleet_plan(["p", "q"], concurrency=2), {"FLEET_URL_P": urls[0], "FLEET_URL_Q": urls[1]})
    body = json.dumps({"job": "refresh"})
    req = urllib.request.Request(s.url + "/refresh/", data=body.encode(), method="POST",
                                 headers={**sign(SECRET, body=body), "content-type": "application/json"})
    answer = json.loads(urllib.request.urlopen(req).read())
    assert answer["status"] == "queued" and answer["fleet"] is True and set(answer["databases"]) == {"p", "q"}
    s.wait_for_invocations()
    for name, url in (("p", urls[0]), ("q", urls[1])):
        (run,) = _runs(url, but=answer["run_id"])
        assert run[0] == answer["databases"][name]["run_id"] and run[3] == "succeeded"
    path = answer["poll"]
    get = urllib.request.Request(s.url + "/refresh" + path, headers=sign(SECRET, method="GET", path=path))
    fan = json.loads(urllib.request.urlopen(get).read())  # the fan-out itself, from the first member's history
    assert fan["status"] == "succeeded" and fan["report"]["counts"] == {"succeeded": 2}


def test_each_members_backups_live_under_its_own_name_with_its_own_retention(members, served):
    urls = members(2, 0.0)
    plan = _fleet_plan(["alpha", "beta"], concurrency=2)
    plan["fleet"]["databases"][1]["backup"] = {"retention": {"daily": 1, "min_keep": 1}}
    s = served(plan, {"FLEET_URL_ALPHA": urls[0], "FLEET_URL_BETA": urls[1]})
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="pgk-fleet")

    result = s.handler("backup")({"job": "backup"}, s.context("backup", 120))
    assert result["status"] == "succeeded", result
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="pgk-fleet")["Contents"])
    assert [k.split("/")[1] for k in keys] == ["alpha", "alpha", "beta", "beta"]  # dump + manifest each
    assert all(k.startswith("pgkeeper/") for k in keys)


def test_plan_names_the_member_whose_overrides_are_wrong(tmp_path):
    from pgkeeper.errors import PlanError
    from pgkeeper.plan import load_plan

    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "fleet": {"databases": [
        {"name": "ok"}, {"name": "bad", "backup": {"retention": {"daily": -1}}}, {"name": "ok"}]}}))
    with pytest.raises(PlanError) as err:
        load_plan(bad)
    assert "database name 'ok' appears twice" in str(err.value)
    bad.write_text(yaml.safe_dump({"version": 1, "fleet": {"databases": [
        {"name": "ok"}, {"name": "bad", "backup": {"retention": {"daily": -1}}, "signing": {}}]}}))
    with pytest.raises(PlanError) as err:
        load_plan(bad)
    assert "fleet.databases[1].signing: unknown key" in str(err.value)
    bad.write_text(yaml.safe_dump({"version": 1, "fleet": {"databases": [
        {"name": "ok"}, {"name": "bad", "backup": {"retention": {"daily": -1}}}]}}))
    with pytest.raises(PlanError) as err:
        load_plan(bad)
    assert "fleet.databases[1] (bad): backup.retention.daily: Input should be greater than or equal to 0" \
        in str(err.value)


def test_a_database_named_without_a_fleet_is_refused():
    from pgkeeper.plan import Plan

    with pytest.raises(EventError, match="has no fleet"):
        Plan().for_database("x")


def test_status_shows_each_database_and_names_the_unreachable_one(members, served, capsys, monkeypatch):
    from pgkeeper.cli import main as cli

    urls = members(2, 0.0)
    s = served(_fleet_plan(["m1", "m2", "gone"], concurrency=3),
               {"FLEET_URL_M1": urls[0], "FLEET_URL_M2": urls[1], "FLEET_URL_GONE": UNREACHABLE})
    assert s.handler("refresh")({"job": "refresh"}, s.context("refresh", 60))["status"] == "failed"
    monkeypatch.setenv("PGKEEPER_SCHEDULES", json.dumps({"timezone": "UTC", "enabled": "true",
                                                          "refresh": "cron(0 * * * ? *)"}))
    capsys.readouterr()
    assert cli(["status", "--json"]) == 1
    out, err = capsys.readouterr()
    status = json.loads(out)
    assert set(status["databases"]) == {"m1", "m2", "gone"}
    assert "error" in status["databases"]["gone"] and "gone: unreachable" in status["overdue"]
    for name in ("m1", "m2"):
        refresh = next(w for w in status["databases"][name]["windows"] if w["window"] == "refresh")
        assert refresh["last_proven"] is not None and not refresh["overdue"], refresh
    assert "gone: unreachable" in err


def test_the_plans_heartbeat_is_the_fan_outs_and_fails_when_a_member_does(members, served):
    from test_silence_metric import PingServer

    pings = PingServer()
    try:
        urls = members(2, 0.0)
        plan = _fleet_plan(["h1", "h2", "gone"], concurrency=3,
                           heartbeat={"style": "healthchecks", "timeout_s": 2, "urls": {"refresh": pings.url}})
        s = served(plan, {"FLEET_URL_H1": urls[0], "FLEET_URL_H2": urls[1], "FLEET_URL_GONE": UNREACHABLE})
        assert s.handler("refresh")({"job": "refresh"}, s.context("refresh", 60))["status"] == "failed"
        s.wait_for_invocations()
        paths = [path for _, path, _ in pings.received]
        # One start and one fail for the whole fleet; the members (inheriting the URL) ping nothing.
        assert paths == ["/ping/abc-123/start", "/ping/abc-123/fail"], pings.received
        assert "2 of 3 databases succeeded: gone failed" in pings.received[1][2]
    finally:
        pings.close()


def test_a_member_naming_its_own_url_never_falls_back_to_the_deployments_database(monkeypatch):
    """The template sets PGKEEPER_DATABASE_SECRET_ARN and local runs DATABASE_URL for the deployment's
    own database: a member with `url_env` (or only a `secret_arn_env`) must not inherit either."""
    from pgkeeper.db.dsn import resolve_url
    from pgkeeper.errors import ConfigError
    from pgkeeper.plan import Plan

    monkeypatch.setenv("PGKEEPER_DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:h-AbCdEf")
    monkeypatch.setenv("DATABASE_URL", "postgresql://home@home-host/home")
    monkeypatch.setenv("ANALYTICS_URL", "postgresql://a@analytics-host/analytics")
    plan = Plan.model_validate({"version": 1, "fleet": {"databases": [
        {"name": "analytics", "database": {"url_env": "ANALYTICS_URL"}},
        {"name": "other", "database": {"secret_arn_env": "OTHER_SECRET_ARN"}}]}})
    assert resolve_url(plan.for_database("analytics").database) == "postgresql://a@analytics-host/analytics"
    with pytest.raises(ConfigError, match="set OTHER_SECRET_ARN to a Secrets Manager secret ARN"):
        resolve_url(plan.for_database("other").database)  # not DATABASE_URL, not the home secret


def test_a_member_with_its_own_secret_takes_host_and_name_from_it_not_from_the_plan(aws, monkeypatch):
    import boto3

    from pgkeeper.db.dsn import resolve_url
    from pgkeeper.plan import Plan

    arn = boto3.client("secretsmanager").create_secret(Name="member-b", SecretString=json.dumps(
        {"username": "u", "password": "p", "host": "b.rds.example", "dbname": "bdb"}))["ARN"]
    plan = Plan.model_validate({"version": 1, "database": {"host": "home.rds.example", "name": "app"},
                                "heartbeat": {"urls": {"backup": "https://hc-ping.com/fleet-backup",
                                                       "vacuum": "https://hc-ping.com/fleet-vacuum"}},
                                "fleet": {"databases": [
                                    {"name": "b", "database": {"secret_arn": arn},
                                     "heartbeat": {"urls": {"backup": "https://hc-ping.com/b-backup"}}}]}})
    member = plan.for_database("b")
    assert resolve_url(member.database) == "postgresql://u:p@b.rds.example:5432/bdb"
    # Its heartbeat is its own: the fleet's vacuum check is not pinged by this member's vacuum runs.
    assert {k: str(v) for k, v in member.heartbeat.urls.items()} == {"backup": "https://hc-ping.com/b-backup"}
