"""`pgkeeper plan check` against a live database: what the next run would refuse, per object.

Exit codes: 0 the plan matches, 1 problems (each named), 2 unusable input (plan, env-vars file,
no database URL, no database). The env-vars file is SAM's, as `pgkeeper invoke` takes it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgkeeper.cli import main

TABLES = """
CREATE TABLE sessions (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
INSERT INTO sessions
SELECT g, now() + CASE WHEN g <= 40 THEN interval '-1 hour' ELSE interval '1 hour' END
FROM generate_series(1, 100) g;
"""
GOOD = {"table": "sessions", "expiry_column": "expires_at"}


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for name in ("PGKEEPER_BACKUP_BUCKET", "PGKEEPER_DATABASE_SECRET_ARN", "PGKEEPER_PG_BIN_DIR"):
        monkeypatch.delenv(name, raising=False)


def check(capsys, *args: str) -> tuple[int, dict | None, str]:
    """Run `pgkeeper plan check`; its exit code, its JSON report (None if none) and its stderr."""
    code = main(["plan", "check", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def write(tmp_path: Path, name: str, data: dict | str) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_a_clean_plan_exits_0_and_says_what_the_run_would_delete(use_db, pg, tmp_path, capsys):
    pg.execute(TABLES)
    plan = write(tmp_path, "plan.yaml", {"version": 1, "cleanup": {"targets": [GOOD]}})

    code, report, err = check(capsys, "--plan", plan)

    assert code == 0, report
    assert report is not None and report["problems"] == []
    assert "cleanup.targets[0] (sessions): would delete about 40 of 100 rows of public.sessions (counted); " \
           "the safety rail allows 50" in report["notes"]
    assert "matches" in err


def test_a_target_over_the_safety_rail_exits_1_and_is_named(use_db, pg, tmp_path, capsys):
    pg.execute(TABLES)
    plan = write(tmp_path, "plan.yaml", {"version": 1, "cleanup": {"targets": [GOOD], "max_fraction": 0.25}})

    code, report, err = check(capsys, "--plan", plan)

    assert code == 1
    assert report is not None
    [problem] = report["problems"]
    assert problem.startswith("cleanup.targets[0] (sessions): would refuse: safety rail: the condition matches "
                              "40 of 100 rows")
    assert "max_fraction 0.25" in problem and "Nothing was deleted" not in problem
    assert "1 problem(s)" in err
    assert pg.execute("SELECT count(*) FROM sessions").fetchone()[0] == 100

    allowed = write(tmp_path, "large.yaml", {"version": 1, "cleanup": {
        "targets": [{**GOOD, "allow_large": True}], "max_fraction": 0.25}})
    code, report, _ = check(capsys, "--plan", allowed)
    assert code == 0 and report is not None
    assert any("allow_large: no safety rail" in n for n in report["notes"])


def test_a_role_lacking_privileges_is_named_per_object(db_url, pg, tmp_path, capsys, monkeypatch):
    pg.execute(TABLES)
    pg.execute("CREATE MATERIALIZED VIEW mv_sessions AS SELECT count(*) AS n FROM sessions")
    role = f"pgk_check_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg.execute(f"GRANT SELECT ON sessions TO {role}")
        params = conninfo_to_dict(db_url)
        params["user"] = role
        monkeypatch.setenv("DATABASE_URL", make_conninfo(**params))
        plan = write(tmp_path, "plan.yaml", {
            "version": 1,
            "cleanup": {"targets": [GOOD]},
            "vacuum": {"analyze": ["sessions"]},
            "refresh": {"views": [{"name": "mv_sessions"}]},
        })

        code, report, _ = check(capsys, "--plan", plan)

        assert code == 1
        assert report is not None
        problems = report["problems"]
        assert any(p.startswith("cleanup.targets[0] (sessions): the database user lacks DELETE on public.sessions")
                   for p in problems), problems
        assert any(p.startswith("vacuum.analyze[0]: the database user may not analyze public.sessions")
                   for p in problems), problems
        assert any(p.startswith("refresh.views[0]: the database user does not own public.mv_sessions")
                   for p in problems), problems

        # Owning role membership is enough, for every job.
        pg.execute(f"GRANT postgres TO {role}")
        code, report, _ = check(capsys, "--plan", plan)
        assert code == 0, report
    finally:
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE {role}")


def test_the_env_vars_file_supplies_the_database_and_the_bucket(db_url, pg, aws, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    boto3.client("s3").create_bucket(Bucket="pgk-check-bucket")
    pg.execute(TABLES)
    plan = write(tmp_path, "plan.yaml", {"version": 1, "cleanup": {"targets": [GOOD]}, "backup": {}})
    env = write(tmp_path, "env.json", json.dumps({
        "Parameters": {"DATABASE_URL": db_url},
        "BackupFunction": {"PGKEEPER_BACKUP_BUCKET": "pgk-check-bucket"},
    }))

    code, report, err = check(capsys, "--plan", plan, "--env-vars", env)

    assert code == 0, report
    assert report is not None and report["database"].endswith("/" + conninfo_to_dict(db_url)["dbname"])
    assert "DATABASE_URL" not in os.environ and "PGKEEPER_BACKUP_BUCKET" not in os.environ

    missing = write(tmp_path, "missing.json", json.dumps({
        "Parameters": {"DATABASE_URL": db_url}, "BackupFunction": {"PGKEEPER_BACKUP_BUCKET": "pgk-no-such"}}))
    code, report, _ = check(capsys, "--plan", plan, "--env-vars", missing)
    assert code == 1
    assert report is not None and report["problems"] == ["backup: bucket pgk-no-such does not exist"]

    # Without the file, the bucket (required by the plan's backup section) and the database are missing.
    code, report, err = check(capsys, "--plan", plan)
    assert code == 2 and report is None
    assert "no database configured" in err


@pytest.mark.parametrize(("env", "plan", "expected"), [
    ("{not json", {"version": 1}, "is not valid JSON"),
    ('{"Parameters": ["DATABASE_URL"]}', {"version": 1}, "is not an object"),
    ("{}", "cleanup: {targets: [{table: sessions}]}\n", "needs `expiry_column`"),
    ("{}", "cleanup: [unclosed\n", "not valid YAML"),
])
def test_unusable_input_exits_2(use_db, tmp_path, capsys, env, plan, expected):
    code, report, err = check(capsys, "--plan", write(tmp_path, "plan.yaml", plan),
                              "--env-vars", write(tmp_path, "env.json", env))
    assert code == 2 and report is None
    assert expected in err


def test_a_missing_plan_or_env_file_exits_2(use_db, tmp_path, capsys):
    code, _, err = check(capsys, "--plan", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err
    code, _, err = check(capsys, "--plan", write(tmp_path, "plan.yaml", {"version": 1}),
                         "--env-vars", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read env-vars file" in err


def test_an_unreachable_database_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    plan = write(tmp_path, "plan.yaml", {"version": 1, "database": {"connect_retries": 0}})
    code, report, err = check(capsys, "--plan", plan)
    assert code == 2 and report is None
    assert "cannot connect to 127.0.0.1:1/postgres" in err
    # --offline never connects.
    assert check(capsys, "--plan", plan, "--offline")[0] == 0


@pytest.mark.parametrize("direct", [True, False])
def test_a_neon_pooler_host_is_reported(db_url, pg, tmp_path, capsys, monkeypatch, direct):
    params = conninfo_to_dict(db_url)
    # libpq connects to hostaddr; the host name is what pgkeeper inspects (and swaps).
    params.update(host="ep-cool-name-123456-pooler.us-east-2.aws.neon.tech", hostaddr="127.0.0.1")
    monkeypatch.setenv("DATABASE_URL", make_conninfo(**params))
    plan = write(tmp_path, "plan.yaml", {"version": 1, "database": {"use_direct_host": direct}})

    code, report, _ = check(capsys, "--plan", plan)

    assert report is not None
    if direct:
        assert code == 0, report
        assert any("pgkeeper connects to the direct host ep-cool-name-123456.us-east-2.aws.neon.tech" in n
                   for n in report["notes"])
    else:
        assert code == 1
        assert any(p.startswith("database: ep-cool-name-123456-pooler.us-east-2.aws.neon.tech is Neon's "
                                "connection pooler") and "use_direct_host is false" in p
                   for p in report["problems"]), report


def test_env_values_do_not_leak_into_a_failed_check(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    env = write(tmp_path, "env.json", json.dumps({"Parameters": {"DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}}))
    code, _, _ = check(capsys, "--plan", write(tmp_path, "plan.yaml", "version: [\n"), "--env-vars", env)
    assert code == 2
    assert "DATABASE_URL" not in os.environ
