"""The runner's promises, whatever the job: runs recorded, one run per database, failures raise."""

from __future__ import annotations

import traceback

import psycopg
import pytest

from pgkeeper import runner
from pgkeeper.db import locks
from pgkeeper.errors import ConfigError, DatabaseUnavailableError, EventError, JobFailedError
from pgkeeper.events import JobEvent
from pgkeeper.jobs import JobContext, JobSpec, Options


class ProbeOptions(Options):
    fail: bool = False
    crash: bool = False
    duplicate: bool = False
    status: str | None = None
    drop_main_session: bool = False
    no_status: bool = False


def _probe(ctx: JobContext) -> dict:
    with ctx.db.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe_marks (run_id text)")
        conn.execute("INSERT INTO probe_marks VALUES (%s)", [ctx.run_id])
    if ctx.options.crash:
        raise RuntimeError("boom")
    if ctx.options.duplicate:
        with ctx.db.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE probe_unique (v text PRIMARY KEY)")
            conn.execute("INSERT INTO probe_unique VALUES ('row-value-42'), ('row-value-42')")
    if ctx.options.drop_main_session:
        # What an idle-timeout of a NAT or proxy does to the session holding the advisory lock.
        with ctx.db.connect(autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [ctx.db.conn.info.backend_pid])
    if ctx.options.status:
        return {"status": ctx.options.status}
    if ctx.options.no_status:
        return {"marked": 1}
    if ctx.options.fail:
        return {"status": "failed", "errors": ["probe failed on purpose"]}
    return {"status": "succeeded", "marked": 1}


PROBE = JobSpec(name="probe", options=ProbeOptions, run=_probe)


@pytest.fixture()
def env(use_db, write_plan):
    write_plan({"version": 1})
    return use_db


def _runs(pg: psycopg.Connection) -> list[tuple]:
    return pg.execute("SELECT job, trigger, status, report, error FROM pgkeeper.runs ORDER BY started_at").fetchall()


def test_a_run_is_recorded_with_its_report(env, pg, lambda_context):
    result = runner.execute(PROBE, JobEvent(job="probe", trigger="schedule"), lambda_context())
    assert result["status"] == "succeeded"
    [(job, trigger, status, report, error)] = _runs(pg)
    assert (job, trigger, status, error) == ("probe", "schedule", "succeeded", None)
    assert report["marked"] == 1 and "duration_s" in report
    assert pg.execute("SELECT count(*) FROM probe_marks").fetchone()[0] == 1


def test_second_concurrent_run_is_skipped_and_does_nothing(env, pg, lambda_context):
    with psycopg.connect(env, autocommit=True) as holder:
        assert locks.try_lock(holder, "probe")
        result = runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    assert result["status"] == "skipped"
    assert "holds the lock" in result["report"]["reason"]
    assert [r[2] for r in _runs(pg)] == ["skipped"]
    assert pg.execute("SELECT to_regclass('probe_marks')").fetchone()[0] is None


def test_lock_is_released_after_a_run(env, pg, lambda_context):
    runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    with psycopg.connect(env, autocommit=True) as other:
        assert locks.try_lock(other, "probe")


def test_a_failed_job_is_recorded_then_raised(env, pg, lambda_context):
    with pytest.raises(JobFailedError) as err:
        runner.execute(PROBE, JobEvent(job="probe", options={"fail": True}), lambda_context())
    assert "probe failed on purpose" in str(err.value)
    assert [r[2] for r in _runs(pg)] == ["failed"]


def test_a_crashing_job_is_recorded_with_its_error_then_raised(env, pg, lambda_context):
    with pytest.raises(JobFailedError):
        runner.execute(PROBE, JobEvent(job="probe", options={"crash": True}), lambda_context())
    [(_, _, status, _, error)] = _runs(pg)
    assert status == "failed" and "RuntimeError: boom" in error


def test_unknown_options_are_refused_before_anything_runs(env, pg, lambda_context):
    with pytest.raises(EventError) as err:
        runner.execute(PROBE, JobEvent(job="probe", options={"dryrun": True}), lambda_context())
    assert "dryrun" in str(err.value) and "unknown key" in str(err.value)
    assert pg.execute("SELECT to_regclass('pgkeeper.runs')").fetchone()[0] is None


def test_unreachable_database_is_one_clear_error(write_plan, monkeypatch, lambda_context):
    write_plan({"version": 1, "database": {"connect_timeout_s": 1, "connect_retries": 0}})
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secretpw@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailableError) as err:
        runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    assert "127.0.0.1:1/none" in str(err.value) and "secretpw" not in str(err.value)


def test_connections_carry_timeouts_and_application_name(env, write_plan, lambda_context):
    from pgkeeper.config import get_plan
    from pgkeeper.db import Database

    db = Database.from_settings(get_plan().database, "probe")
    with db.connect(purpose="check") as conn:
        got = conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'), "
            "current_setting('lock_timeout')"
        ).fetchone()
    assert got == ("pgkeeper/probe/check", "5min", "3s")


def test_a_database_error_is_reported_by_its_primary_message_without_the_row_it_quotes(env, pg, lambda_context):
    with pytest.raises(JobFailedError) as err:
        runner.execute(PROBE, JobEvent(job="probe", options={"duplicate": True}), lambda_context())
    assert "duplicate key value violates unique constraint" in str(err.value)
    [(_, _, status, _, error)] = _runs(pg)
    assert status == "failed" and "UniqueViolation: duplicate key value" in error
    assert "row-value-42" not in str(err.value) and "row-value-42" not in error


def test_a_job_returning_an_unknown_status_is_recorded_as_failed_with_its_report(env, pg, lambda_context):
    for status in ("weird", "skipped", None):
        with pytest.raises(JobFailedError) as err:
            options = {"status": status} if status else {"no_status": True}
            runner.execute(PROBE, JobEvent(job="probe", options=options), lambda_context())
        assert f"unknown status {status!r}" in str(err.value)  # a missing status is no success
    assert [(r[2], r[3].get("status")) for r in _runs(pg)] == [("failed", "weird"), ("failed", "skipped"),
                                                                ("failed", None)]


def test_a_run_whose_locking_session_dropped_is_still_recorded(env, pg, lambda_context):
    result = runner.execute(PROBE, JobEvent(job="probe", options={"drop_main_session": True}), lambda_context())
    assert result["status"] == "succeeded"
    assert [r[2] for r in _runs(pg)] == ["succeeded"]
    with psycopg.connect(env, autocommit=True) as other:  # the lock went with the session
        assert locks.try_lock(other, "probe")


def test_an_unparsable_url_is_a_config_error_that_does_not_quote_the_password(write_plan, monkeypatch,
                                                                             lambda_context):
    write_plan({"version": 1})
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p%zzsecretpw@127.0.0.1/app")
    with pytest.raises(ConfigError) as err:
        runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    assert "cannot be parsed" in str(err.value)
    assert "secretpw" not in "".join(traceback.format_exception(err.value))


def test_options_in_the_url_are_kept_beside_the_plans_timeouts(env, write_plan, monkeypatch):
    from pgkeeper.config import get_plan
    from pgkeeper.db import Database

    monkeypatch.setenv("DATABASE_URL", env + " options='-c search_path=app,public'")
    db = Database.from_settings(get_plan().database, "probe")
    with db.connect() as conn:
        got = conn.execute("SELECT current_setting('search_path'), current_setting('lock_timeout')").fetchone()
    assert got == ("app,public", "3s")


def test_a_queued_run_older_than_lambdas_event_age_is_reported_failed_not_queued(env, pg):
    """An async invocation that never ran (Lambda gave up on the event) must not read 'queued' for ever."""
    from pgkeeper.db import runs

    runs.ensure_schema(pg)
    lost, recent, other = runs.new_run_id(), runs.new_run_id(), runs.new_run_id()
    for run_id in (lost, recent, other):
        runs.queue(pg, run_id, "backup", "url", None, {})
    pg.execute("UPDATE pgkeeper.runs SET started_at = now() - interval '7 hours' WHERE run_id IN (%s, %s)",
               [lost, other])

    assert runs.get_run(pg, lost)["status"] == "failed"
    assert "never started" in runs.get_run(pg, lost)["error"]
    assert runs.get_run(pg, recent)["status"] == "queued"  # still within the event age: it may yet run
    assert pg.execute("SELECT status FROM pgkeeper.runs WHERE run_id = %s", [other]).fetchone()[0] == "queued"

    runs.queue(pg, runs.new_run_id(), "backup", "url", None, {})  # the next accepted run sweeps the rest
    assert pg.execute("SELECT status FROM pgkeeper.runs WHERE run_id = %s", [other]).fetchone()[0] == "failed"
    assert runs.get_run(pg, recent)["status"] == "queued"


def test_a_rotated_database_secret_is_read_again_at_the_first_failed_connect(env, aws, monkeypatch, lambda_context,
                                                                             pg):
    """Secrets are cached for minutes; a rotation must not fail runs until the cache expires."""
    import uuid

    import boto3
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(env)
    where = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{params['dbname']}"
    stale = f"postgresql://pgk_rotated_away:old-pw@{where}"
    current = f"postgresql://{params.get('user', 'postgres')}@{where}"
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name=f"pgkeeper-db-{uuid.uuid4().hex[:6]}", SecretString=stale)["ARN"]
    monkeypatch.setenv("PGKEEPER_DATABASE_SECRET_ARN", arn)

    from pgkeeper.config import get_plan
    from pgkeeper.db import Database

    settings = get_plan().database.model_copy(update={"connect_retries": 0, "connect_timeout_s": 2})
    db = Database.from_settings(settings, "probe")  # resolves, and caches, the stale secret
    client.put_secret_value(SecretId=arn, SecretString=current)  # the rotation
    with db.connect(purpose="check") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == params.get("user", "postgres")

    # A run started now (the secret still cached as rotated) records its run: no stale URL anywhere.
    result = runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    assert result["status"] == "succeeded"


def test_a_secret_that_stays_wrong_is_one_clear_error_without_its_password(env, aws, monkeypatch, write_plan,
                                                                      lambda_context):
    import uuid

    import boto3

    wrong = "postgresql://pgk_no_such_role:pw@127.0.0.1:5432/postgres"
    arn = boto3.client("secretsmanager").create_secret(Name=f"pgkeeper-db-{uuid.uuid4().hex[:6]}",
                                                        SecretString=wrong)["ARN"]
    monkeypatch.setenv("PGKEEPER_DATABASE_SECRET_ARN", arn)
    write_plan({"version": 1, "database": {"connect_timeout_s": 2, "connect_retries": 0}})
    with pytest.raises(DatabaseUnavailableError) as err:
        runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    assert "pgk_no_such_role" in str(err.value) and ":pw@" not in str(err.value)


def test_a_run_still_running_after_its_invocation_ended_reads_failed_and_a_live_one_is_left_alone(env, pg,
                                                                                                 lambda_context):
    """A run killed mid-way (Lambda timeout, out of memory) never records its end: once its own
    deadline has passed it reads failed. Rows from before runs carried a deadline: after an hour."""
    from pgkeeper.db import runs

    runs.ensure_schema(pg)
    killed, live, legacy = runs.new_run_id(), runs.new_run_id(), runs.new_run_id()
    for run_id in (killed, live, legacy):
        runs.start(pg, run_id, "vacuum", "schedule", None, {}, deadline_s=900)
    pg.execute("UPDATE pgkeeper.runs SET started_at = now() - interval '16 minutes', "
               "deadline_at = now() - interval '2 minutes' WHERE run_id = %s", [killed])
    pg.execute("UPDATE pgkeeper.runs SET started_at = now() - interval '10 minutes' WHERE run_id = %s", [live])
    pg.execute("UPDATE pgkeeper.runs SET started_at = now() - interval '2 hours', deadline_at = NULL "
               "WHERE run_id = %s", [legacy])

    runner.execute(PROBE, JobEvent(job="probe"), lambda_context())  # any run's start sweeps
    status = dict(pg.execute("SELECT run_id::text, status FROM pgkeeper.runs").fetchall())
    assert status[killed] == "failed" and status[live] == "running" and status[legacy] == "failed"
    assert "did not finish" in runs.get_run(pg, killed)["error"]


# ------------------------------------------------------------------ runs are a state machine


def test_a_redelivered_event_for_a_finished_run_does_nothing(env, pg, lambda_context):
    """Lambda delivers asynchronous events at least once: the same run_id twice runs once."""
    from pgkeeper.db import runs

    run_id = runs.new_run_id()
    first = runner.execute(PROBE, JobEvent(job="probe", trigger="async", run_id=run_id), lambda_context())
    again = runner.execute(PROBE, JobEvent(job="probe", trigger="async", run_id=run_id), lambda_context())
    assert first["status"] == "succeeded"
    assert again["status"] == "succeeded" and again["report"]["duplicate"] is True
    assert pg.execute("SELECT count(*) FROM probe_marks").fetchone()[0] == 1
    assert [r[2] for r in _runs(pg)] == ["succeeded"]
    assert _runs(pg)[0][3]["marked"] == 1  # the first run's report, not overwritten


def test_a_duplicate_during_a_run_leaves_the_first_runs_row_running(env, pg, lambda_context):
    from pgkeeper.db import runs

    run_id = runs.new_run_id()
    runs.ensure_schema(pg)
    with psycopg.connect(env, autocommit=True) as first:  # the first delivery: lock held, row running
        assert locks.try_lock(first, "probe")
        assert runs.start(first, run_id, "probe", "async", None, {}, deadline_s=900) is None
        dup = runner.execute(PROBE, JobEvent(job="probe", trigger="async", run_id=run_id), lambda_context())
        assert dup["status"] == "running" and dup["report"]["duplicate"] is True
        assert [r[2] for r in _runs(pg)] == ["running"]
        # Even a duplicate that got past the check cannot overwrite the row: skipped only replaces queued.
        runs.record_skipped(pg, run_id, "probe", "async", None, {}, "lock held")
        assert [r[2] for r in _runs(pg)] == ["running"]
    assert pg.execute("SELECT to_regclass('probe_marks')").fetchone()[0] is None


def test_a_failed_run_retried_by_lambda_runs_again_under_the_same_id(env, pg, lambda_context):
    from pgkeeper.db import runs

    run_id = runs.new_run_id()
    with pytest.raises(JobFailedError):
        runner.execute(PROBE, JobEvent(job="probe", trigger="async", run_id=run_id, options={"crash": True}),
                       lambda_context())
    result = runner.execute(PROBE, JobEvent(job="probe", trigger="async", run_id=run_id), lambda_context())
    assert result["status"] == "succeeded"
    assert pg.execute("SELECT status, attempts, error FROM pgkeeper.runs").fetchall() == [("succeeded", 2, None)]


def test_a_run_records_its_deadline_from_the_invocations_budget(env, pg, lambda_context):
    runner.execute(PROBE, JobEvent(job="probe"), lambda_context(timeout_s=120))
    left = pg.execute("SELECT extract(epoch FROM deadline_at - started_at) FROM pgkeeper.runs").fetchone()[0]
    assert 100 < float(left) <= 121


def test_the_run_history_is_bounded_and_keeps_each_jobs_newest_of_every_status(env, pg, write_plan,
                                                                                lambda_context):
    from pgkeeper.db import runs

    write_plan({"version": 1, "database": {"run_history_days": 30}})
    runs.ensure_schema(pg)
    for days, status in ((40, "succeeded"), (50, "succeeded"), (60, "failed"), (70, "failed"), (5, "succeeded")):
        pg.execute("INSERT INTO pgkeeper.runs (run_id, job, trigger, status, started_at, finished_at) "
                   "VALUES (gen_random_uuid(), 'old', 'schedule', %s, now() - make_interval(days => %s), now())",
                   [status, days])
    pg.execute("INSERT INTO pgkeeper.runs (run_id, job, trigger, status, started_at) "
               "VALUES (gen_random_uuid(), 'old', 'url', 'queued', now() - interval '40 days')")
    runner.execute(PROBE, JobEvent(job="probe"), lambda_context())
    left = pg.execute("SELECT job, status, (now() - started_at) > interval '30 days' FROM pgkeeper.runs "
                      "WHERE job = 'old' ORDER BY started_at").fetchall()
    # The queued row, 40 days old, was swept to failed at the run's start and is now the newest failure
    # (kept, however old); the 60- and 70-day failures and the 40- and 50-day successes are gone.
    assert left == [("old", "failed", True), ("old", "succeeded", False)]
    assert pg.execute("SELECT count(*) FROM pgkeeper.runs WHERE job = 'probe'").fetchone()[0] == 1


def test_migrating_the_schema_as_it_was_before_versioning_keeps_its_rows(pg):
    """Databases pgkeeper already ran on have schema pgkeeper without pgkeeper.migrations."""
    from pgkeeper.db import runs

    for m in runs.migrations():
        if m.version <= 3:  # the schema as it stood before runs became a state machine
            pg.execute(m.text.encode())
    pg.execute("INSERT INTO pgkeeper.runs (run_id, job, trigger, status, report) VALUES "
               "('7f1c1e9c-2f36-4d64-9d7a-0d3c1a2b3c4d', 'backup', 'schedule', 'succeeded', '{\"key\": \"k\"}')")
    pg.execute("INSERT INTO pgkeeper.vacuum_backlog (schema_name, table_name, action, reason) "
               "VALUES ('public', 't', 'vacuum', 'dead tuples')")
    assert runs.schema_version(pg) == 0
    runs.ensure_schema(pg)
    assert runs.schema_version(pg) == runs.migrations()[-1].version
    run = runs.get_run(pg, "7f1c1e9c-2f36-4d64-9d7a-0d3c1a2b3c4d")
    assert run["status"] == "succeeded" and run["report"] == {"key": "k"} and run["attempts"] == 1
    assert pg.execute("SELECT count(*) FROM pgkeeper.vacuum_backlog").fetchone()[0] == 1
    runs.ensure_schema(pg)  # idempotent
    assert pg.execute("SELECT count(*) FROM pgkeeper.migrations").fetchone()[0] == len(runs.migrations())
