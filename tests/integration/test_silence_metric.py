"""The dead-man's switch and heartbeat pings: a run that did the work prints `WorkProven` for its silence window (the
EMF line CloudWatch turns into the metric the template's silence alarms watch) and records the
window in pgkeeper.runs; a run that proves nothing (a dry run, chosen tables) prints none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from quiet_http import QuietHandler, QuietServer

from pgkeeper.errors import JobFailedError
from pgkeeper.handler import handle
from pgkeeper.local.context import LocalContext
from pgkeeper.metric_names import NAMESPACE, SERVICE, WORK_PROVEN

ROOT = Path(__file__).resolve().parents[2]


def emf_metrics(printed: str) -> list[dict[str, Any]]:
    """Every metric in the EMF lines printed: name, namespace, dimension values, value."""
    found = []
    for line in printed.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dims in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.append({"name": metric["Name"], "namespace": directive["Namespace"],
                                  "dimensions": {d: doc[d] for d in dims}, "value": doc[metric["Name"]]})
    return found


def proven(printed: str) -> list[dict[str, Any]]:
    return [m for m in emf_metrics(printed) if m["name"] == WORK_PROVEN]


@pytest.fixture()
def tokens(use_db: str, pg: psycopg.Connection, write_plan) -> str:
    pg.execute("CREATE TABLE tokens (id int PRIMARY KEY, expires_at timestamptz)")
    pg.execute("INSERT INTO tokens SELECT g, now() + (g - 3) * interval '1 day' FROM generate_series(1, 10) g")
    write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]},
                "vacuum": {"analyze": ["tokens"]}})
    return use_db


def _window_of(pg: psycopg.Connection, run_id: str) -> str | None:
    return pg.execute("SELECT alarm_window FROM pgkeeper.runs WHERE run_id::text = %s", [run_id]).fetchone()[0]


def test_a_cleanup_run_proves_its_window_in_the_metric_and_the_run_row(tokens, pg, capsys):
    from pgkeeper.cleanup.job import JOB

    result = handle(JOB, {"job": "cleanup", "options": {}}, LocalContext(60))

    assert result["status"] == "succeeded" and result["report"]["alarm_window"] == "cleanup"
    assert proven(capsys.readouterr().out) == [{"name": WORK_PROVEN, "namespace": NAMESPACE,
                                                "dimensions": {"service": SERVICE, "window": "cleanup"},
                                                "value": [1.0]}]
    assert _window_of(pg, result["run_id"]) == "cleanup"


def test_a_dry_run_proves_nothing(tokens, pg, capsys):
    from pgkeeper.cleanup.job import JOB

    result = handle(JOB, {"job": "cleanup", "options": {"dry_run": True}}, LocalContext(60))

    assert result["status"] == "succeeded" and "alarm_window" not in result["report"]
    assert proven(capsys.readouterr().out) == []
    assert _window_of(pg, result["run_id"]) is None


def test_the_hourly_analyze_and_the_weekly_vacuum_prove_separate_windows(tokens, pg, capsys):
    from pgkeeper.vacuum.job import JOB

    analyze = handle(JOB, json.loads((ROOT / "events" / "vacuum-analyze.json").read_text()), LocalContext(60))
    vacuum = handle(JOB, json.loads((ROOT / "events" / "vacuum-scheduled.json").read_text()), LocalContext(60))
    chosen = handle(JOB, {"job": "vacuum", "options": {"tables": ["tokens"]}}, LocalContext(60))

    windows = [m["dimensions"]["window"] for m in proven(capsys.readouterr().out)]
    assert windows == ["analyze", "vacuum"]  # a run of chosen tables is no weekly vacuum
    assert [_window_of(pg, r["run_id"]) for r in (analyze, vacuum, chosen)] == ["analyze", "vacuum", None]


# --- heartbeat pings --------------------------------------------------------------------------------

class PingServer:
    """Records what healthchecks.io or Cronitor would receive; `hang` keeps every request waiting."""

    def __init__(self, hang: bool = False) -> None:
        self.received: list[tuple[str, str, str]] = []  # (method, path with query, body)
        self.release = threading.Event()
        server = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if hang:
                    server.release.wait(30)
                server.received.append((self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ping/abc-123"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def pings() -> Iterator[PingServer]:
    server = PingServer()
    yield server
    server.close()


def test_a_run_pings_start_and_success_with_its_summary(tokens, pg, write_plan, pings):
    from pgkeeper.cleanup.job import JOB

    write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]},
                "heartbeat": {"urls": {"cleanup": pings.url, "backup": pings.url + "-other"}}})
    result = handle(JOB, {"job": "cleanup", "options": {}}, LocalContext(60))

    assert [(m, p) for m, p, _ in pings.received] == [("POST", "/ping/abc-123/start"), ("POST", "/ping/abc-123")]
    assert pings.received[1][2] == result["report"]["summary"] and "deleted 3 rows" in pings.received[1][2]
    assert result["report"]["heartbeat"] == {"start": "ok", "success": "ok"}


def test_a_failed_run_pings_fail_with_its_first_error(tokens, pg, write_plan, pings):
    from pgkeeper.cleanup.job import JOB

    pg.execute("INSERT INTO tokens SELECT g, now() - interval '1 day' FROM generate_series(100, 200) g")
    write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]},
                "heartbeat": {"urls": {"cleanup": pings.url}, "style": "cronitor"}})
    with pytest.raises(JobFailedError):
        handle(JOB, {"job": "cleanup", "options": {}}, LocalContext(60))  # the safety rail refuses 104 of 111

    (m1, start, _), (m2, fail, _) = pings.received
    assert (m1, m2) == ("GET", "GET") and start == "/ping/abc-123?state=run"
    query = parse_qs(urlsplit(fail).query)
    assert query["state"] == ["fail"] and query["message"][0].startswith("cleanup failed: deleted 0 rows")


def test_a_dry_run_pings_nothing(tokens, write_plan, pings):
    from pgkeeper.cleanup.job import JOB

    write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]},
                "heartbeat": {"urls": {"cleanup": pings.url}}})
    handle(JOB, {"job": "cleanup", "options": {"dry_run": True}}, LocalContext(60))
    assert pings.received == []


def test_a_ping_service_that_hangs_delays_the_job_by_its_timeout_only_and_is_reported(tokens, pg, write_plan):
    from pgkeeper.cleanup.job import JOB

    hanging = PingServer(hang=True)
    try:
        write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]},
                    "heartbeat": {"urls": {"cleanup": hanging.url}, "timeout_s": 0.5}})
        context = LocalContext(60)
        result = handle(JOB, {"job": "cleanup", "options": {}}, context)
    finally:
        hanging.close()
    assert result["status"] == "succeeded"  # the job's outcome is its own
    assert pg.execute("SELECT count(*) FROM tokens").fetchone() == (7,)
    assert result["report"]["heartbeat"] == {"start": "TimeoutError: timed out", "success": "TimeoutError: timed out"}
    assert context.get_remaining_time_in_millis() > 55_000  # two pings of 0.5 s, not the service's pace


def test_the_templates_silence_alarm_watches_exactly_what_the_runner_printed(tokens, capsys):
    """Not a constant copied into a test: the EMF the real run printed against the deployed alarm."""
    from pgkeeper.cleanup.job import JOB
    from pgkeeper.local.template import load_template

    handle(JOB, {"job": "cleanup", "options": {}}, LocalContext(60))
    [printed] = proven(capsys.readouterr().out)
    alarms = [r["Properties"] for r in load_template(ROOT / "template.yaml")["Resources"].values()
              if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("MetricName") == printed["name"]]
    watching = [a for a in alarms if {d["Name"]: d["Value"] for d in a["Dimensions"]} == printed["dimensions"]]
    assert len(watching) == 1, alarms
    assert watching[0]["Namespace"] == printed["namespace"]
    assert watching[0]["TreatMissingData"] == "breaching"
