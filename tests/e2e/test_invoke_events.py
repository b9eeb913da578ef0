"""Every file in events/, run end to end: `pgkeeper invoke <Function> --event events/<file>` against a
fresh database seeded from demo/schema.sql, with the example plan (plan/pgkeeper-plan.yaml, found
through the template's PGKEEPER_PLAN=/opt/pgkeeper-plan.yaml and the plan layer, as in Lambda).

The table EVENTS says, per event file, which function runs it, the status expected, and a check of
one outcome a user can see. A job's issue adds its rows here; an event file without a row fails
`test_every_event_file_has_a_row`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgkeeper.backup.verify import scratch_prefix

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

Conn = psycopg.Connection


@dataclass(frozen=True)
class Row:
    event: str
    function: str
    status: str | None
    """The job's status in the result; None for a function-URL event (the result is an HTTP response)."""
    check: Callable[[Conn, dict[str, Any]], None]
    """Asserts one visible outcome, given the test database and the invocation's result."""
    prepare: Callable[[Conn], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra variables for the env-vars file's Parameters section."""
    needs_s3: bool = False
    """Runs with moto's S3 (a bucket in PGKEEPER_BACKUP_BUCKET), through AWS_ENDPOINT_URL."""

    @property
    def job(self) -> str:
        return JOBS[self.function]


JOBS = {"RefreshFunction": "refresh", "CleanupFunction": "cleanup", "VacuumFunction": "vacuum",
        "BackupFunction": "backup"}
SECRET = "whsec_" + base64.b64encode(b"e2e-signing-secret-of-24b").decode()


def run_recorded(conn: Conn, result: dict, trigger: str) -> None:
    """The run is in pgkeeper.runs with the status and trigger the invocation reported."""
    row = conn.execute("SELECT job, status, trigger FROM pgkeeper.runs WHERE run_id::text = %s",
                       (result["run_id"],)).fetchone()
    assert row == (result["job"], result["status"], trigger)


# --- refresh ------------------------------------------------------------------------------------


def _dashboard_has_description(conn: Conn, result: dict) -> None:
    # The seed's drift: the app's query failed with `column "description" does not exist`.
    rows = conn.execute('SELECT count(description) FROM "mv_dashboard_companions"').fetchone()
    assert rows[0] > 0
    outcomes = {v["name"]: v["outcome"] for v in result["report"]["views"]}
    assert outcomes["public.mv_dashboard_companions"] == "repaired"


def _scheduled_refresh(conn: Conn, result: dict) -> None:
    _dashboard_has_description(conn, result)
    run_recorded(conn, result, "schedule")


def _add_messages(conn: Conn) -> None:
    conn.execute("""INSERT INTO "Message" (id, role, content, "companionId", "userId", "createdAt")
                    SELECT 'msg_e2e_' || g, 'user', 'late', 'cmp_0001', 'user_1', timestamp '2031-01-01'
                    FROM generate_series(1, 7) g""")


def _classic_refresh_sees_new_rows(conn: Conn, result: dict) -> None:
    day = conn.execute("SELECT messages FROM mv_daily_messages WHERE day = date '2031-01-01'").fetchone()
    assert day == (7,)
    run_recorded(conn, result, "schedule")


def _drop_summary_index(conn: Conn) -> None:
    conn.execute("DROP INDEX user_subscription_summary_user_id_key")


def _cache_cleared_without_touching_views(conn: Conn, result: dict) -> None:
    # clear_cache runs alone: the drifted dashboard view is left exactly as it was.
    columns = conn.execute("SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = "
                           "'mv_dashboard_companions'::regclass AND attnum > 0").fetchall()
    assert ("description",) not in columns
    run_recorded(conn, result, "invoke")


def _refused_and_nothing_ran(reason: str) -> Callable[[Conn, dict], None]:
    def check(conn: Conn, result: dict) -> None:
        assert result["statusCode"] == 401
        assert json.loads(result["body"])["error"] == reason
        runs = conn.execute("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'pgkeeper' "
                            "AND tablename = 'runs'").fetchone()[0]
        if runs:
            assert conn.execute("SELECT count(*) FROM pgkeeper.runs").fetchone() == (0,)

    return check


def _repair_recreates_views_with_their_indexes(conn: Conn, result: dict) -> None:
    outcomes = {v["name"]: v["outcome"] for v in result["report"]["views"]}
    assert set(outcomes.values()) == {"repaired"}, outcomes
    index = conn.execute("SELECT 1 FROM pg_catalog.pg_indexes WHERE indexname = "
                         "'user_subscription_summary_user_id_key'").fetchone()
    assert index == (1,)
    run_recorded(conn, result, "invoke")


# --- other jobs: a first check each; their issues sharpen it ------------------------------------


def _vacuum_ran(conn: Conn, result: dict) -> None:
    assert result["report"]["counts"]["left"] == 0
    run_recorded(conn, result, "schedule")


def _analyze_only(conn: Conn, result: dict) -> None:
    report = result["report"]
    assert report["mode"] == "analyze" and report["counts"]["vacuumed"] == 0
    run_recorded(conn, result, "schedule")


def _backup_in_bucket(conn: Conn, result: dict) -> None:
    import boto3

    bucket = result["_bucket"]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith(".json") for k in keys) and len(keys) >= 2, keys
    run_recorded(conn, result, result.get("_trigger", "schedule"))


def _labelled_backup_kept_everything(conn: Conn, result: dict) -> None:
    report = result["report"]
    assert "-before-migration.pgdump.zst" in report["key"] and report["verification"]["ok"]
    assert report["pruned"] == [] and "kept" not in report  # prune: false
    _backup_in_bucket(conn, {**result, "_trigger": "invoke"})


def _backup_dry_run_uploaded_nothing(conn: Conn, result: dict) -> None:
    import boto3

    assert result["report"]["dry_run"] is True and result["report"]["backups"] == 0
    assert boto3.client("s3").list_objects_v2(Bucket=result["_bucket"]).get("Contents", []) == []
    run_recorded(conn, result, "invoke")


def _backup_restore_tested(conn: Conn, result: dict) -> None:
    verification = result["report"]["verification"]
    assert verification["mode"] == "restore" and verification["restore"]["rows_match"] is True
    assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                        [scratch_prefix(result["run_id"]) + "%"]).fetchone()[0] == 0
    run_recorded(conn, result, "invoke")


def _cleanup_ran(conn: Conn, result: dict) -> None:
    # Expired sessions and used/expired tokens are gone; live ones stay (demo/schema.sql seeds both).
    left = conn.execute("""SELECT (SELECT count(*) FILTER (WHERE expires_at < now()) FROM sessions),
                                  (SELECT count(*) FROM sessions),
                                  (SELECT count(*) FILTER (WHERE expires_at < now() OR used_at IS NOT NULL)
                                   FROM password_reset_tokens),
                                  (SELECT count(*) FILTER (WHERE expires_at < now()) FROM refresh_tokens)""").fetchone()
    assert left == (0, 4000, 0, 0), left
    assert {t["target"]: t["outcome"] for t in result["report"]["targets"]} == {
        "sessions": "done", "password-reset-tokens": "done", "email-verification-tokens": "done",
        "refresh-tokens": "done"}
    run_recorded(conn, result, "schedule")


_COUNTS = """SELECT n.nspname || '.' || c.relname, (xpath('/row/n/text()', query_to_xml(
                 format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1"""


def _dry_run_deletes_nothing() -> tuple[Callable[[Conn], None], Callable[[Conn, dict], None]]:
    before: list[tuple] = []

    def prepare(conn: Conn) -> None:
        before[:] = conn.execute(_COUNTS).fetchall()

    def check(conn: Conn, result: dict) -> None:
        assert before and conn.execute(_COUNTS).fetchall() == before
        assert result["report"].get("rows_deleted", 0) == 0
        run_recorded(conn, result, "invoke")

    return prepare, check


_DRY_RUN = _dry_run_deletes_nothing()

ROWS = [
    Row("refresh-scheduled.json", "RefreshFunction", "succeeded", _scheduled_refresh),
    Row("refresh-scheduled-classic.json", "RefreshFunction", "succeeded", _classic_refresh_sees_new_rows,
        prepare=_add_messages),
    Row("refresh-invoke-repair.json", "RefreshFunction", "succeeded", _repair_recreates_views_with_their_indexes,
        prepare=_drop_summary_index),
    Row("refresh-invoke-clear-cache.json", "RefreshFunction", "succeeded", _cache_cleared_without_touching_views),
    Row("url-refresh-unsigned.json", "RefreshFunction", None, _refused_and_nothing_ran("missing_signature"),
        env={"PGKEEPER_WEBHOOK_SECRETS": SECRET}),
    Row("url-refresh-stale.json", "RefreshFunction", None, _refused_and_nothing_ran("stale_timestamp"),
        env={"PGKEEPER_WEBHOOK_SECRETS": SECRET}),
    Row("vacuum-scheduled.json", "VacuumFunction", "succeeded", _vacuum_ran),
    Row("vacuum-analyze.json", "VacuumFunction", "succeeded", _analyze_only),
    Row("backup-scheduled.json", "BackupFunction", "succeeded", _backup_in_bucket, needs_s3=True),
    Row("backup-invoke-before-migration.json", "BackupFunction", "succeeded", _labelled_backup_kept_everything,
        needs_s3=True),
    Row("backup-invoke-dry-run.json", "BackupFunction", "succeeded", _backup_dry_run_uploaded_nothing, needs_s3=True),
    Row("backup-invoke-verify-restore.json", "BackupFunction", "succeeded", _backup_restore_tested, needs_s3=True),
    Row("cleanup-scheduled.json", "CleanupFunction", "succeeded", _cleanup_ran),
    Row("cleanup-dry-run.json", "CleanupFunction", "succeeded", _DRY_RUN[1], prepare=_DRY_RUN[0]),
]

# Event files that are not for `pgkeeper invoke` of one job (none yet), with the reason.
NOT_INVOKED: dict[str, str] = {}


def invoke(function: str, event: str | Path, env_file: Path | None = None, *extra: str,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pgkeeper.cli", "invoke", function, "--event", str(event),
           "--template", str(ROOT / "template.yaml"), *(["--env-vars", str(env_file)] if env_file else []), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=300)


FRESH_SEED_JOBS = {"vacuum", "cleanup"}
"""Rows of these jobs load demo/schema.sql into a new database themselves. The others get a copy of
a template database loaded once per session: the same catalog and rows, but neither the cumulative
statistics of the load (pg_stat_*, zero in a copy) nor its now(). Vacuum chooses its tables by those
statistics; cleanup's expected counts need the seed's expiry times (the nearest 6 minutes after the
load) still ahead of it."""


def _load_demo(conn: Conn) -> None:
    conn.execute((ROOT / "demo" / "schema.sql").read_text())


@pytest.fixture()
def seeded(request: pytest.FixtureRequest, make_database: Callable[..., str],
           database_template: Callable[..., str]) -> str:
    callspec = getattr(request.node, "callspec", None)
    row = callspec.params.get("row") if callspec else None
    if row is None or row.job not in FRESH_SEED_JOBS:
        return make_database(template=database_template("demo", _load_demo))
    url = make_database()
    with psycopg.connect(url, autocommit=True) as conn:
        _load_demo(conn)
    return url


def test_every_event_file_has_a_row():
    files = {p.name for p in EVENTS.glob("*.json")}
    covered = {r.event for r in ROWS} | set(NOT_INVOKED)
    assert files - covered == set(), "add a Row (or a NOT_INVOKED reason) for each new event file"
    assert covered - files == set(), "rows name event files that do not exist"


def _row_env(row: Row, seeded: str, request: pytest.FixtureRequest) -> tuple[dict[str, str], str | None]:
    """The function's variables for this row (over the template's), and its bucket when it needs S3."""
    variables = {"DATABASE_URL": seeded, **row.env}
    bucket = None
    if row.needs_s3:
        request.getfixturevalue("aws")
        import boto3

        bucket = "pgkeeper-e2e-backups"
        boto3.client("s3").create_bucket(Bucket=bucket)
        variables["PGKEEPER_BACKUP_BUCKET"] = bucket
    return variables, bucket


@pytest.mark.parametrize("row", ROWS, ids=[r.event for r in ROWS])
def test_event_file_runs_end_to_end(row: Row, seeded: str, tmp_path: Path, request: pytest.FixtureRequest):
    """`pgkeeper invoke` (what a developer runs: the source tree, this machine's Python)."""
    variables, bucket = _row_env(row, seeded, request)
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": variables}))
    with psycopg.connect(seeded, autocommit=True) as conn:
        if row.prepare:
            row.prepare(conn)
        proc = invoke(row.function, EVENTS / row.event, env_file)
        assert proc.returncode == 0, f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
        _check(row, conn, json.loads(proc.stdout), bucket)


@pytest.mark.parametrize("row", ROWS, ids=[r.event for r in ROWS])
def test_event_file_runs_in_the_built_bundle_as_lambda_runs_it(row: Row, seeded: str, request: pytest.FixtureRequest,
                                                                 lambda_function: Callable[..., Any]):
    """What users deploy: the `make build` output under CPython 3.13 and awslambdaric, read-only
    /var/task and /opt, writable /tmp only (tests/runtime_api.py). Same events, same checks."""
    variables, bucket = _row_env(row, seeded, request)
    fn = lambda_function(row.function, env=variables)
    with psycopg.connect(seeded, autocommit=True) as conn:
        if row.prepare:
            row.prepare(conn)
        answer = fn.invoke(json.loads((EVENTS / row.event).read_text()))
        assert answer.kind == "response", f"{answer.body[-2000:]!r}\n{fn.log()[-4000:]}"
        _check(row, conn, answer.result(), bucket)


def _check(row: Row, conn: Conn, result: dict, bucket: str | None) -> None:
    if row.status is not None:
        assert (result["job"], result["status"]) == (row.job, row.status), result
        assert result["report"]["status"] == row.status
    row.check(conn, {**result, "_bucket": bucket})


def test_unknown_function_is_one_clear_line_listing_the_functions():
    proc = invoke("RefrehsFunction", EVENTS / "refresh-scheduled.json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "pgkeeper: unknown_function: function 'RefrehsFunction' is not in template.yaml; its functions are: "
        "BackupFunction, CleanupFunction, RefreshFunction, VacuumFunction")


def test_malformed_event_file_is_refused_before_anything_runs(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"job": "refresh", "options": {"repair": true,}}')
    proc = invoke("RefreshFunction", bad)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"pgkeeper: bad_event_file: event {bad} is not valid JSON: "
                                   "Expecting property name enclosed in double quotes at line 1, column 47")


def test_event_for_another_job_is_the_handlers_clear_error_in_lambdas_shape(seeded: str, tmp_path: Path):
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"DATABASE_URL": seeded}}))
    proc = invoke("RefreshFunction", "-", env_file, stdin=(EVENTS / "vacuum-scheduled.json").read_text())
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["errorType"] == "EventError"
    assert error["errorMessage"] == "this function runs job 'refresh'; the event names 'vacuum'"


def test_without_a_database_the_handler_says_how_to_configure_one():
    proc = invoke("RefreshFunction", EVENTS / "refresh-scheduled.json")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["errorType"] == "ConfigError"
    assert "set DATABASE_URL" in error["errorMessage"]


def _bootstrap_processes(mark: str) -> list[int]:
    """The function processes (`pgkeeper invoke`'s bootstrap) with `mark` (NAME=value) in their environment:
    this test's own, not those of tests running alongside (pytest-xdist)."""
    from pgkeeper.local.invoke import BOOTSTRAP

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (str(BOOTSTRAP).encode() in (entry / "cmdline").read_bytes()
                        and mark.encode() in (entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_terminated_invoke_stops_the_functions_process_too(seeded: str, tmp_path: Path):
    """`timeout 60 pgkeeper invoke ...` or a supervisor's SIGTERM must not leave the job running on."""
    import signal
    import time

    from psycopg import sql

    with psycopg.connect(seeded, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute("UPDATE sessions SET token = token || 'x'")  # dead tuples: the table needs a VACUUM
        conn.execute("SELECT pg_stat_force_next_flush()")
        # Every new session of this database vacuums slowly: the VACUUM below runs for seconds.
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_delay = '50ms'").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_limit = 1").format(sql.Identifier(dbname)))
        env_file = tmp_path / "env.json"
        env_file.write_text(json.dumps({"Parameters": {"DATABASE_URL": seeded}}))
        mark = f"DATABASE_URL={seeded}"  # this test's database: its function process, no other
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"job": "vacuum", "options": {"tables": ["sessions"]}}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgkeeper.cli", "invoke", "VacuumFunction", "--event", str(event),
             "--template", str(ROOT / "template.yaml"), "--env-vars", str(env_file)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND query LIKE 'VACUUM%%' AND state = 'active'").fetchone()[0]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert _bootstrap_processes(mark) != []
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM" in err
        deadline = time.monotonic() + 10
        while _bootstrap_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _bootstrap_processes(mark) == []
