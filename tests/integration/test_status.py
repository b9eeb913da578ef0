"""`pgkeeper status` and signed `GET /status`: per silence window the last proof and whether it is
overdue (the silence alarms' rule), per job the last success/failure/skip, the next scheduled runs,
the newest verified backup; exit 1 naming what is overdue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pgkeeper.cleanup.job import JOB as CLEANUP
from pgkeeper.cli import main as cli
from pgkeeper.handler import handle
from pgkeeper.local.context import LocalContext
from pgkeeper.status import next_fire

ROOT = Path(__file__).resolve().parents[2]
SCHEDULES = {"timezone": "UTC", "enabled": "true", "refresh": "cron(0 * * * ? *)", "cleanup": "cron(30 * * * ? *)",
             "vacuum": "cron(0 4 ? * SUN *)", "analyze": "cron(15 * * * ? *)", "backup": "cron(0 3 * * ? *)"}


@pytest.fixture()
def history(use_db: str, pg: psycopg.Connection, write_plan, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database with runs of every kind: a cleanup proven just now (a real run), a backup proven
    30 hours ago (its window is 26), a refresh that failed an hour ago and none that succeeded, a
    skipped vacuum, an ANALYZE proven an hour ago and no weekly VACUUM ever."""
    monkeypatch.setenv("PGKEEPER_SCHEDULES", json.dumps(SCHEDULES))
    monkeypatch.delenv("PGKEEPER_SILENCE_HOURS", raising=False)
    pg.execute("CREATE TABLE tokens (id int PRIMARY KEY, expires_at timestamptz)")
    write_plan({"version": 1, "cleanup": {"targets": [{"table": "tokens", "expiry_column": "expires_at"}]}})
    assert handle(CLEANUP, {"job": "cleanup", "options": {}}, LocalContext(60))["status"] == "succeeded"
    pg.execute("""
        INSERT INTO pgkeeper.runs (run_id, job, trigger, status, options, started_at, finished_at, report, error,
                                   alarm_window)
        VALUES (gen_random_uuid(), 'backup', 'schedule', 'succeeded', '{}', now() - interval '30 hours',
                now() - interval '30 hours', '{"key": "backups/db/2026/12/05/x.dump.zst", "bytes": 1234}', NULL,
                'backup'),
               (gen_random_uuid(), 'refresh', 'schedule', 'failed', '{}', now() - interval '1 hour',
                now() - interval '1 hour', NULL, 'ViewsFailed: relation "mv" does not exist', NULL),
               (gen_random_uuid(), 'vacuum', 'schedule', 'skipped', '{}', now() - interval '2 hours',
                now() - interval '2 hours', '{"reason": "another vacuum run holds the lock"}', NULL, NULL),
               (gen_random_uuid(), 'vacuum', 'schedule', 'succeeded', '{"mode": "analyze"}',
                now() - interval '1 hour', now() - interval '1 hour', '{}', NULL, 'analyze')""")
    return use_db


def test_status_names_what_is_overdue_and_exits_non_zero(history, capsys):
    assert cli(["status"]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == "pgkeeper status: overdue: refresh, vacuum, backup"
    lines = {line.split()[0]: line for line in out.splitlines() if "last proven" in line}  # the windows
    assert " ok " in lines["cleanup"] and " ok " in lines["analyze"]
    assert "OVERDUE" in lines["backup"] and "(window 26 h)" in lines["backup"]
    assert "last proven never" in lines["vacuum"]
    assert "newest verified backup:" in out and "x.dump.zst" in out


def test_status_json_has_every_window_and_job(history, capsys):
    assert cli(["status", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["overdue"] == ["refresh", "vacuum", "backup"]
    windows = {w["window"]: w for w in report["windows"]}
    assert set(windows) == {"refresh", "cleanup", "vacuum", "analyze", "backup"}
    assert windows["backup"]["silence_hours"] == 26 and windows["vacuum"]["silence_hours"] == 168
    checked = datetime.fromisoformat(report["checked_at"])
    assert datetime.fromisoformat(windows["backup"]["next_run"]) == next_fire("cron(0 3 * * ? *)", checked)
    jobs = {j["job"]: j for j in report["jobs"]}
    assert jobs["refresh"]["last_success"] is None
    assert jobs["refresh"]["last_failure_error"] == 'ViewsFailed: relation "mv" does not exist'
    assert jobs["vacuum"]["last_skipped"] is not None and jobs["cleanup"]["last_success"] is not None
    assert report["newest_verified_backup"]["key"] == "backups/db/2026/12/05/x.dump.zst"


def test_nothing_overdue_exits_zero(history, pg, capsys, monkeypatch):
    # Only what was proven recently is scheduled: disabled schedules expect nothing.
    monkeypatch.setenv("PGKEEPER_SCHEDULES", json.dumps({"timezone": "UTC", "cleanup": SCHEDULES["cleanup"],
                                                         "analyze": SCHEDULES["analyze"]}))
    assert cli(["status"]) == 0
    monkeypatch.setenv("PGKEEPER_SCHEDULES", json.dumps({**SCHEDULES, "enabled": "false"}))
    assert cli(["status"]) == 0


def test_next_fire_reads_eventbridge_cron_in_the_schedule_time_zone():
    monday = datetime(2026, 12, 7, 0, 50, tzinfo=UTC)
    assert next_fire("cron(0 4 ? * SUN *)", monday) == datetime(2026, 12, 13, 4, 0, tzinfo=UTC)
    assert next_fire("cron(0 3 * * ? *)", monday, "Europe/Berlin") == datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    assert next_fire("cron(0/15 9-17 ? * MON-FRI *)", monday) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert next_fire("cron(0 12 L * ? *)", monday) is None  # L/W/#: said to be unknown, never guessed
    assert next_fire("rate(5 minutes)", monday) is None
    assert next_fire("cron(5,35/10 * * * ? *)", monday) == datetime(2026, 12, 7, 0, 55, tzinfo=UTC)  # 5, 35, 45, 55


def test_status_reads_the_schedules_from_the_template_when_not_deployed(history, capsys, monkeypatch):
    monkeypatch.delenv("PGKEEPER_SCHEDULES")
    assert cli(["status", "--json", "--template", str(ROOT / "template.yaml"),
                "--parameter-overrides", "ParameterKey=BackupSchedule,ParameterValue=cron(0 2 * * ? *)",
                "BackupSilenceHours=48"]) == 1  # SAM's form and the short one, as `sam deploy` takes them
    windows = {w["window"]: w for w in json.loads(capsys.readouterr().out)["windows"]}
    assert windows["backup"]["schedule"] == "cron(0 2 * * ? *)" and windows["backup"]["silence_hours"] == 48
    assert not windows["backup"]["overdue"]  # proven 30 hours ago, within 48
    assert windows["vacuum"]["schedule"] == "cron(0 4 ? * SUN *)" and windows["vacuum"]["overdue"]


def test_pruning_the_history_keeps_each_windows_last_proof(pg):
    """vacuum proves two windows (the weekly VACUUM, the hourly ANALYZE): a short run history must not
    take the last weekly proof with it, or status would call a healthy window overdue."""
    from pgkeeper.db import runs

    runs.ensure_schema(pg)
    pg.execute("""
        INSERT INTO pgkeeper.runs (run_id, job, trigger, status, options, started_at, finished_at, alarm_window)
        VALUES (gen_random_uuid(), 'vacuum', 'schedule', 'succeeded', '{}', now() - interval '6 days',
                now() - interval '6 days', 'vacuum'),
               (gen_random_uuid(), 'vacuum', 'schedule', 'succeeded', '{}', now() - interval '3 days',
                now() - interval '3 days', 'analyze'),
               (gen_random_uuid(), 'vacuum', 'schedule', 'succeeded', '{}', now() - interval '2 days',
                now() - interval '2 days', 'analyze')""")
    assert runs.prune(pg, keep_days=1) == 1  # the older ANALYZE only
    rows = pg.execute("SELECT alarm_window FROM pgkeeper.runs ORDER BY started_at").fetchall()
    assert rows == [("vacuum",), ("analyze",)]


def test_schedules_enabled_given_as_a_json_boolean_is_read_as_meant():
    from pgkeeper.status import SCHEDULES_ENV, Deployment

    assert Deployment.from_env({SCHEDULES_ENV: json.dumps({**SCHEDULES, "enabled": True})}).enabled
    assert not Deployment.from_env({SCHEDULES_ENV: json.dumps({**SCHEDULES, "enabled": "false"})}).enabled
