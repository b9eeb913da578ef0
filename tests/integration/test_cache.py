"""Cache invalidation against the real Redis: over redis:// and through the Upstash REST adapter
with the real upstash-redis client, directly and end to end through the refresh job. Each test
works under its own key prefix in a dedicated DB index and removes its keys afterwards."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from test_refresh import refresh
from upstash_adapter import UpstashAdapter

from pgkeeper import cache
from pgkeeper.budget import Budget
from pgkeeper.errors import JobFailedError, PlanError
from pgkeeper.jobs import as_dict
from pgkeeper.log import metrics
from pgkeeper.plan import Plan, parse_plan
from pgkeeper.refresh.job import JOB as REFRESH

ROOT = Path(__file__).resolve().parents[2]
CACHE_DB = 9
CACHE_ENV = ("PGKEEPER_CACHE_SECRET_ARN", "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "REDIS_URL")
TOKEN = "test-upstash-token"


@pytest.fixture(scope="session")
def cache_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{CACHE_DB}"


@pytest.fixture(scope="session")
def adapter(cache_url: str) -> Iterator[UpstashAdapter]:
    server = UpstashAdapter(cache_url, TOKEN).start()
    yield server
    server.stop()


@pytest.fixture()
def r(cache_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cache_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture()
def ns(r: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; everything under it is removed afterwards."""
    prefix = f"pgkt:{uuid.uuid4().hex[:8]}:"
    yield prefix
    batch = []
    for key in r.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)


@pytest.fixture()
def no_cache_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in CACHE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(params=["redis", "upstash"])
def backend(request, no_cache_env, cache_url, adapter) -> str:
    """Each test runs over redis:// and over Upstash REST (real client, adapter, same Redis)."""
    if request.param == "redis":
        no_cache_env.setenv("REDIS_URL", cache_url)
    else:
        no_cache_env.setenv("UPSTASH_REDIS_REST_URL", adapter.url)
        no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    return request.param


def make_plan(views: dict[str, dict], **settings) -> Plan:
    data = {"refresh": {"views": [{"name": name, "cache": spec} for name, spec in views.items()]},
            "cache": settings}
    return parse_plan(data, base_dir=Path("."), source="test-plan")


def seed(r: redis.Redis, keys: list[str], value: str = "cached") -> None:
    for i in range(0, len(keys), 5000):
        r.mset({k: value for k in keys[i:i + 5000]})


def count(r: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(match=pattern, count=5000))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_only_the_refreshed_views_matching_keys_go_and_versions_are_bumped(backend, r, ns):
    seed(r, [f"{ns}dashboard:companions:{i}" for i in range(50)] + [f"{ns}dashboard:featured"])
    seed(r, [f"{ns}user:{i}:profile" for i in range(20)] + [f"{ns}dashboards-archive"])
    r.set(f"{ns}dashboard:version", 7)
    plan = make_plan({
        "mv_dashboard_companions": {"patterns": [f"{ns}dashboard:*"], "version_keys": [f"{ns}dashboard:version"]},
        "mv_user_stats": {"patterns": [f"{ns}user:*"]},
    })
    report = as_dict(cache.invalidate_after_refresh(plan, [plan.refresh.views[0]], Budget(60)))

    assert report["status"] == "succeeded" and report["backend"] == backend
    [view] = report["views"]
    assert view["view"] == "mv_dashboard_companions"
    # The version key matches the pattern too: bumped first, then unlinked with the rest.
    assert view["versions"] == {f"{ns}dashboard:version": 8} and view["versions_bumped"] == 1
    assert view["keys_deleted"] == 52 and view["errors"] == [] and view["duration_ms"] >= 0
    assert count(r, f"{ns}dashboard:*") == 0
    assert count(r, f"{ns}user:*") == 20, "the other view did not refresh: its keys stay"
    assert r.get(f"{ns}dashboards-archive") == "cached", "a near-miss of the pattern stays"


def test_version_key_outside_the_patterns_is_bumped_and_kept(backend, r, ns):
    r.set(f"{ns}v:dash", 41)
    seed(r, [f"{ns}dash:{i}" for i in range(5)])
    plan = make_plan({"mv": {"patterns": [f"{ns}dash:*"], "version_keys": [f"{ns}v:dash", f"{ns}v:new"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "succeeded"
    assert r.get(f"{ns}v:dash") == "42" and r.get(f"{ns}v:new") == "1", "a missing version key starts at 1"
    assert report["keys_deleted"] == 5 and report["versions_bumped"] == 2


def test_views_without_cache_keys_mean_no_cache_work_at_all(no_cache_env):
    plan = parse_plan({"refresh": {"views": [{"name": "mv_plain"}]}}, base_dir=Path("."), source="t")
    assert cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)) is None
    assert cache.clear_all(plan, Budget(60)).status == "succeeded"


def test_100k_matching_keys_are_cleared_in_bounded_batches(backend, r, ns):
    matching = [f"{ns}dash:{i}" for i in range(100_000)]
    others = [f"{ns}other:{i}" for i in range(20_000)]
    seed(r, matching)
    seed(r, others)
    plan = make_plan({"mv": {"patterns": [f"{ns}dash:*"]}}, batch_size=500, scan_count=1000)

    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(120)))

    assert report["status"] == "succeeded", report.get("errors")
    assert report["keys_deleted"] == 100_000
    assert count(r, f"{ns}dash:*") == 0 and count(r, f"{ns}other:*") == 20_000
    # Bounded work per call: no UNLINK names more than batch_size keys, and the SCAN walked the
    # keyspace in COUNT-sized steps, so there were at least keyspace/COUNT calls.
    assert report["max_unlink_keys"] <= 500
    assert report["calls"] >= 120_000 // 1000
    # Measured and reported (bench/cache.py compares it with KEYS+DEL); not asserted as a time,
    # since the property under test is the batching, not this machine's load.
    assert report["max_call_ms"] > 0


def test_command_error_fails_that_item_but_the_rest_is_still_invalidated(backend, r, ns):
    r.set(f"{ns}v:broken", "not-a-number")
    r.set(f"{ns}v:ok", 1)
    seed(r, [f"{ns}a:{i}" for i in range(10)] + [f"{ns}b:{i}" for i in range(10)])
    plan = make_plan({
        "mv_a": {"patterns": [f"{ns}a:*"], "version_keys": [f"{ns}v:broken", f"{ns}v:ok"]},
        "mv_b": {"patterns": [f"{ns}b:*"]},
    })
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))

    assert report["status"] == "failed"
    a, b = report["views"]
    assert a["status"] == "failed" and "INCR" in a["errors"][0] and "not an integer" in a["errors"][0]
    assert a["versions"] == {f"{ns}v:ok": 2} and a["keys_deleted"] == 10
    assert b["status"] == "succeeded" and b["keys_deleted"] == 10
    assert r.get(f"{ns}v:broken") == "not-a-number"
    assert count(r, f"{ns}a:*") == 0 and count(r, f"{ns}b:*") == 0


def test_a_key_that_is_not_utf8_is_cleared_or_reported_never_a_crash(backend, r, ns):
    raw = redis.Redis(connection_pool=r.connection_pool)  # same DB, bytes in and out
    raw.set(ns.encode() + b"bin:\xff\xfe", b"x")
    plan = make_plan({"mv_bin": {"patterns": [f"{ns}bin:*"]}, "mv_next": {"version_keys": [f"{ns}v"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    if backend == "redis":
        assert report["status"] == "succeeded" and report["keys_deleted"] == 1
    else:  # upstash-redis decodes every key as UTF-8: the view fails with a reason, the next one still runs
        assert report["status"] == "failed" and "not UTF-8" in report["views"][0]["errors"][0]
        assert report["views"][1]["status"] == "succeeded" and r.get(f"{ns}v") == "1"
        raw.delete(ns.encode() + b"bin:\xff\xfe")


@pytest.mark.parametrize("kind", ["redis", "upstash"])
def test_cache_down_gives_a_failed_report_not_an_exception(kind, no_cache_env, r, ns):
    port = closed_port()
    if kind == "redis":
        no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    else:
        no_cache_env.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{port}")
        no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    plan = make_plan({"mv_a": {"patterns": [f"{ns}a:*"]}, "mv_b": {"version_keys": [f"{ns}v"]}})
    metrics.clear_metrics()

    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))

    assert report["status"] == "failed" and report["backend"] == kind
    assert any("unreachable" in e for e in report["errors"])
    assert [v["status"] for v in report["views"]] == ["not_attempted", "not_attempted"]
    assert report["keys_deleted"] == 0
    assert metrics.metric_set["CacheInvalidationFailed"]["Value"] == [1.0]
    assert metrics.metric_set["KeysInvalidated"]["Value"] == [0.0]
    metrics.clear_metrics()


@pytest.mark.parametrize("kind", ["redis", "upstash"])
def test_a_cache_that_accepts_but_never_answers_times_out(kind, no_cache_env, ns):
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        if kind == "redis":
            no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
        else:
            no_cache_env.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{port}")
            no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
        plan = make_plan({"mv": {"patterns": [f"{ns}a:*"]}}, timeout_ms=300, connect_timeout_ms=300)
        report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "failed"
    assert "Timeout" in " ".join(report["errors"]), report["errors"]


def test_no_call_starts_that_cannot_finish_before_the_deadline(backend, r, ns):
    seed(r, [f"{ns}a:{i}" for i in range(10)])
    plan = make_plan({"mv": {"patterns": [f"{ns}a:*"]}}, timeout_ms=2000, connect_timeout_ms=2000)
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(3, reserve_s=0)))
    assert report["status"] == "failed" and report["calls"] == 0
    assert "remaining time" in " ".join(report["errors"])
    assert count(r, f"{ns}a:*") == 10


def test_wrong_upstash_token_fails_the_invalidation_once(no_cache_env, adapter, r, ns):
    no_cache_env.setenv("UPSTASH_REDIS_REST_URL", adapter.url)
    no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", "not-the-token")
    seed(r, [f"{ns}a:1"])
    plan = make_plan({"mv_a": {"patterns": [f"{ns}a:*"]}, "mv_b": {"patterns": [f"{ns}b:*"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "failed" and report["calls"] == 1
    assert "Unauthorized" in report["errors"][0] and "not-the-token" not in json.dumps(report)
    assert r.exists(f"{ns}a:1") == 1


def test_no_configured_backend_is_a_clear_failed_report(no_cache_env):
    plan = make_plan({"mv": {"patterns": ["dash:*"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "failed"
    assert "UPSTASH_REDIS_REST_URL" in report["errors"][0] and "REDIS_URL" in report["errors"][0]
    assert report["views"][0]["status"] == "not_attempted"


def test_clear_all_clears_every_views_keys(backend, r, ns):
    seed(r, [f"{ns}a:{i}" for i in range(30)] + [f"{ns}b:{i}" for i in range(30)] + [f"{ns}keep"])
    plan = make_plan({
        "mv_a": {"patterns": [f"{ns}a:*"], "version_keys": [f"{ns}v:a"]},
        "mv_b": {"patterns": [f"{ns}b:*", f"{ns}a:*"]},
    })
    report = as_dict(cache.clear_all(plan, Budget(60)))
    assert report["status"] == "succeeded" and report["action"] == "clear"
    assert report["keys_deleted"] == 60 and report["versions_bumped"] == 1
    assert count(r, f"{ns}a:*") == 0 and count(r, f"{ns}b:*") == 0 and r.get(f"{ns}keep") == "cached"
    shared = report["views"][1]["patterns"][1]
    assert shared["pattern"] == f"{ns}a:*" and shared["note"].startswith("already cleared")


@pytest.mark.parametrize("kind", ["redis", "upstash"])
def test_cache_url_and_token_from_secrets_manager(kind, aws, no_cache_env, cache_url, adapter, r, ns):
    import boto3

    secret = cache_url if kind == "redis" else json.dumps({"url": adapter.url, "token": TOKEN})
    arn = boto3.client("secretsmanager").create_secret(Name=f"cache-{kind}", SecretString=secret)["ARN"]
    no_cache_env.setenv("PGKEEPER_CACHE_SECRET_ARN", arn)
    no_cache_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # the secret wins over env
    seed(r, [f"{ns}a:{i}" for i in range(3)])
    plan = make_plan({"mv": {"patterns": [f"{ns}a:*"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "succeeded" and report["backend"] == kind and report["keys_deleted"] == 3


def test_rest_token_is_never_sent_over_plain_http_to_a_remote_host(no_cache_env):
    no_cache_env.setenv("UPSTASH_REDIS_REST_URL", "http://cache.example.com")
    no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    plan = make_plan({"mv": {"patterns": ["dash:*"]}})
    report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    assert report["status"] == "failed" and "https://" in report["errors"][0]
    assert TOKEN not in json.dumps(report)


def test_plan_rejects_a_pattern_that_would_empty_the_whole_cache():
    with pytest.raises(PlanError) as err:
        make_plan({"mv": {"patterns": ["*"]}, "mv2": {}})
    assert err.value.problems == [
        "refresh.views[0].cache.patterns[0]: pattern '*' matches every key; name a prefix (e.g. 'dashboard:*')",
        "refresh.views[1].cache: name at least one of `patterns` or `version_keys`",
    ]


def test_refresh_handler_imports_no_cache_client_until_a_plan_needs_one():
    """Cold start: redis-py, upstash-redis and httpx load only when a view names cache keys."""
    probe = ("import json, sys; sys.path.insert(0, 'functions/refresh'); import app; "
             "print(json.dumps([m for m in ('redis', 'upstash_redis', 'httpx') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []


def test_check_reports_an_unreachable_cache(no_cache_env):
    no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    problems = cache.check(make_plan({"mv": {"patterns": ["dash:*"]}}))
    assert len(problems) == 1 and "does not answer PING" in problems[0]


class CuttingProxy:
    """A TCP forwarder to the real Redis that drops the connection instead of forwarding the
    client's `cut_at`-th send: the cache dies in the middle of a clear."""

    def __init__(self, upstream_port: int, cut_at: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = upstream_port
        self.cut_at = cut_at
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
                threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        sends = 0
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                sends += 1
                if sends >= self.cut_at:
                    break
                upstream.sendall(data)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()


def test_cache_lost_mid_clear_reports_what_was_done_and_stops(no_cache_env, cache_url, r, ns):
    seed(r, [f"{ns}a:{i}" for i in range(5000)] + [f"{ns}filler:{i}" for i in range(20_000)])
    seed(r, [f"{ns}b:{i}" for i in range(10)])
    host_port = cache_url.split("//", 1)[1].split("/", 1)[0]
    proxy = CuttingProxy(int(host_port.rsplit(":", 1)[1]), cut_at=15)  # handshake, PING, ~10 of 25 SCAN steps
    no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{proxy.port}/{CACHE_DB}")
    plan = make_plan({"mv_a": {"patterns": [f"{ns}a:*"]}, "mv_b": {"patterns": [f"{ns}b:*"]}}, scan_count=1000)
    try:
        report = as_dict(cache.invalidate_after_refresh(plan, plan.refresh.views, Budget(60)))
    finally:
        proxy.close()

    actually_deleted = 5000 - count(r, f"{ns}a:*")
    a, b = report["views"]
    assert report["status"] == "failed"
    assert a["status"] == "failed" and a["patterns"][0]["complete"] is False
    assert 0 < actually_deleted < 5000
    # Counted only when Redis confirmed: never more than what really went.
    assert 0 < a["keys_deleted"] <= actually_deleted
    assert b["status"] == "not_attempted" and count(r, f"{ns}b:*") == 10


# -- end to end through the refresh job: a real database whose views change, the runner recording ---

SCHEMA = """
CREATE TABLE "Companion" (id int PRIMARY KEY, category text NOT NULL, votes int NOT NULL);
INSERT INTO "Companion" VALUES (1, 'tutor', 10), (2, 'tutor', 5), (3, 'friend', 7);
CREATE MATERIALIZED VIEW mv_votes AS
  SELECT category, sum(votes)::int AS votes FROM "Companion" GROUP BY category;
CREATE UNIQUE INDEX ON mv_votes (category);
-- A view whose refresh fails once a companion has more than 100 votes (a stand-in for any failing
-- refresh: a bad row, a full disk, a lock the job could not get).
CREATE FUNCTION checked(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
  $$ BEGIN IF v > 100 THEN RAISE EXCEPTION 'vote count % out of range', v; END IF; RETURN v; END $$;
CREATE MATERIALIZED VIEW mv_checked AS SELECT id, checked(votes) AS votes FROM "Companion";
"""


@pytest.fixture()
def app_db(use_db: str, pg: psycopg.Connection) -> psycopg.Connection:
    pg.execute(SCHEMA)
    return pg


def plan_for(ns: str) -> dict:
    return {"version": 1, "refresh": {"views": [
        {"name": "mv_votes", "cache": {"patterns": [f"{ns}votes:*"], "version_keys": [f"{ns}v:votes"]}},
        {"name": "mv_checked", "cache": {"patterns": [f"{ns}checked:*"]}},
    ]}}


def seed_cache(r, ns: str) -> None:
    seed(r, [f"{ns}votes:page:{i}" for i in range(40)] + [f"{ns}checked:{i}" for i in range(15)]
         + [f"{ns}session:{i}" for i in range(5)])
    r.set(f"{ns}v:votes", 3)


def votes(pg: psycopg.Connection) -> dict[str, int]:
    return dict(pg.execute("SELECT category, votes FROM mv_votes").fetchall())


def test_refreshed_view_loses_its_keys_and_a_failed_view_keeps_them(backend, app_db, write_plan, r, ns,
                                                                     lambda_context):
    seed_cache(r, ns)
    write_plan(plan_for(ns))
    app_db.execute("""UPDATE "Companion" SET votes = 500 WHERE id = 3""")  # mv_votes changes, mv_checked fails

    with pytest.raises(JobFailedError) as failed:  # one view failed: the run fails, after the cache work
        refresh(lambda_context)
    report = failed.value.report

    outcomes = {v["name"]: v["outcome"] for v in report["views"]}
    assert outcomes == {"public.mv_votes": "refreshed", "public.mv_checked": "failed"}
    assert votes(app_db) == {"tutor": 15, "friend": 500}
    assert report["cache"]["status"] == "succeeded" and report["cache"]["backend"] == backend
    [view] = report["cache"]["views"]
    assert view["view"] == "mv_votes" and view["keys_deleted"] == 40 and view["versions"] == {f"{ns}v:votes": 4}
    assert count(r, f"{ns}votes:*") == 0
    assert count(r, f"{ns}checked:*") == 15, "the view that failed to refresh keeps its cache"
    assert count(r, f"{ns}session:*") == 5


def test_cache_down_leaves_the_refresh_done_and_the_run_partial(no_cache_env, app_db, write_plan, r, ns,
                                                                 lambda_context):
    no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    seed_cache(r, ns)
    write_plan({"version": 1, "refresh": {"views": [plan_for(ns)["refresh"]["views"][0]]}})
    app_db.execute("""UPDATE "Companion" SET votes = 50 WHERE id = 3""")

    result = refresh(lambda_context)

    assert result["status"] == "partial"
    report = result["report"]
    assert report["views"][0]["outcome"] == "refreshed" and votes(app_db) == {"tutor": 15, "friend": 50}
    assert report["cache"]["status"] == "failed"
    assert any("cache invalidation failed" in e for e in report["errors"])
    assert count(r, f"{ns}votes:*") == 40 and r.get(f"{ns}v:votes") == "3"
    [(status,)] = app_db.execute("SELECT status FROM pgkeeper.runs WHERE job = 'refresh'").fetchall()
    assert status == "partial"


def test_clear_cache_option_clears_every_views_keys_without_refreshing(backend, app_db, write_plan, r, ns,
                                                                        lambda_context):
    seed_cache(r, ns)
    write_plan(plan_for(ns))
    app_db.execute("""UPDATE "Companion" SET votes = 20 WHERE id = 3""")

    result = refresh(lambda_context, clear_cache=True)

    assert result["status"] == "succeeded"
    assert result["report"]["keys_deleted"] == 55 and result["report"]["versions_bumped"] == 1
    assert count(r, f"{ns}votes:*") == 0 and count(r, f"{ns}checked:*") == 0 and count(r, f"{ns}session:*") == 5
    assert votes(app_db) == {"tutor": 15, "friend": 7}, "clear_cache refreshes nothing"


def test_clear_cache_with_the_cache_down_fails_the_run(no_cache_env, app_db, write_plan, ns, lambda_context):
    no_cache_env.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{closed_port()}")
    no_cache_env.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    write_plan(plan_for(ns))
    with pytest.raises(JobFailedError) as failed:
        refresh(lambda_context, clear_cache=True)
    assert failed.value.report["status"] == "failed" and "unreachable" in failed.value.report["errors"][0]
    [(status,)] = app_db.execute("SELECT status FROM pgkeeper.runs WHERE job = 'refresh'").fetchall()
    assert status == "failed"


def test_plan_check_names_an_unreachable_cache(no_cache_env, app_db, ns):
    no_cache_env.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    plan = parse_plan(plan_for(ns), base_dir=Path("."), source="t")
    problems = REFRESH.check(plan, app_db)
    assert len(problems) == 1 and problems[0].startswith("cache: redis at 127.0.0.1:") and "PING" in problems[0]


def test_a_tight_budget_still_invalidates_the_views_that_refreshed(backend, app_db, write_plan, r, ns,
                                                                    lambda_context):
    """The next view may not eat the cache's time: a slow view is stopped early enough that the
    keys of the view refreshed before it are still invalidated."""
    app_db.execute("CREATE MATERIALIZED VIEW mv_slow AS SELECT 1 AS n FROM pg_sleep(30) WITH NO DATA")
    seed_cache(r, ns)
    plan = plan_for(ns)
    plan["refresh"]["views"] = [plan["refresh"]["views"][0], {"name": "mv_slow"}]
    plan["cache"] = {"connect_timeout_ms": 200, "timeout_ms": 300}
    write_plan(plan)
    app_db.execute("""UPDATE "Companion" SET votes = 50 WHERE id = 3""")

    result = refresh(lambda_context, timeout_s=4)

    report = result["report"]
    assert result["status"] == "partial"
    assert {v["name"]: v["outcome"] for v in report["views"]} == {"public.mv_votes": "refreshed",
                                                                  "public.mv_slow": "not_done"}
    assert report["cache"]["status"] == "succeeded"
    assert count(r, f"{ns}votes:*") == 0 and r.get(f"{ns}v:votes") == "4"
