"""The refresh job against a real PostgreSQL: order, modes, locks, deadlines, options, the handler.

Each test builds its own small schema in a fresh database and runs the job the way Lambda does
(`runner.execute` with a counting-down context, or the real handler module), then looks at what a
user would look at: the views' contents, the report, the run history.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgkeeper import runner
from pgkeeper.db import locks
from pgkeeper.errors import EventError, JobFailedError
from pgkeeper.events import JobEvent
from pgkeeper.plan import load_plan
from pgkeeper.refresh.job import JOB, check

ROOT = Path(__file__).resolve().parents[2]


def refresh(lambda_context, timeout_s: float = 60, **options) -> dict:
    return runner.execute(JOB, JobEvent(job="refresh", options=options), lambda_context(timeout_s=timeout_s))


def refresh_failing(lambda_context, **options) -> dict:
    """A run in which some view fails: the runner raises after recording; the report comes with it."""
    with pytest.raises(JobFailedError) as failed:
        refresh(lambda_context, **options)
    return failed.value.report


def by_name(report: dict) -> dict[str, dict]:
    return {v["name"]: v for v in report["views"]}


def wait_for(predicate, what: str, timeout_s: float = 15.0, every_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)  # polling interval of a bounded wait, not a wait for something to happen
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


SALES = """
CREATE TABLE sales (id int PRIMARY KEY, amount int NOT NULL);
INSERT INTO sales SELECT g, g FROM generate_series(1, 10) g;
CREATE MATERIALIZED VIEW mv_a AS SELECT id, amount FROM sales;
CREATE UNIQUE INDEX ON mv_a (id);
CREATE VIEW v_mid AS SELECT id, amount * 2 AS doubled FROM mv_a;
CREATE MATERIALIZED VIEW mv_b AS SELECT sum(doubled)::int AS total, count(*)::int AS n FROM v_mid;
CREATE MATERIALIZED VIEW mv_c AS SELECT n, total FROM mv_b;
"""


def test_views_refresh_in_dependency_order_even_through_plain_views(use_db, pg, write_plan, lambda_context):
    pg.execute(SALES)
    # Listed backwards: the job must still refresh mv_a, then mv_b (reads mv_a via v_mid), then mv_c.
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_c"}, {"name": "mv_b"}, {"name": "mv_a"}]}})
    pg.execute("INSERT INTO sales SELECT g, g FROM generate_series(11, 20) g")

    result = refresh(lambda_context)

    assert result["status"] == "succeeded"
    assert [v["name"] for v in result["report"]["views"]] == ["public.mv_a", "public.mv_b", "public.mv_c"]
    # Only the right order makes the last view see the new rows.
    assert pg.execute("SELECT n, total FROM mv_c").fetchone() == (20, 420)


def test_without_views_every_matview_in_the_plans_schemas_is_refreshed_in_order(use_db, pg, write_plan,
                                                                              lambda_context):
    pg.execute(SALES)
    pg.execute("CREATE SCHEMA other; CREATE MATERIALIZED VIEW other.mv_elsewhere AS SELECT count(*) AS n FROM sales")
    pg.execute('CREATE SCHEMA "Reports"; CREATE MATERIALIZED VIEW "Reports"."Totals" AS SELECT sum(n) AS n FROM mv_c')
    write_plan({"version": 1, "refresh": {"schemas": ['"Reports"', "PUBLIC"]}})
    pg.execute("INSERT INTO sales VALUES (11, 11)")

    result = refresh(lambda_context)

    assert [v["name"] for v in result["report"]["views"]] == [
        "public.mv_a", "public.mv_b", "public.mv_c", '"Reports"."Totals"']
    assert pg.execute("SELECT n FROM mv_c").fetchone() == (11,)
    assert pg.execute('SELECT n FROM "Reports"."Totals"').fetchone() == (11,)
    assert pg.execute("SELECT n FROM other.mv_elsewhere").fetchone() == (10,), "not in the plan's schemas"


MODES = """
CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, team text);
INSERT INTO people SELECT g, 'p' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 't' || g % 2 END
FROM generate_series(1, 30) g;
CREATE MATERIALIZED VIEW mv_keyed AS SELECT id, name FROM people;
CREATE UNIQUE INDEX ON mv_keyed (id);
CREATE MATERIALIZED VIEW mv_unkeyed AS SELECT id, name FROM people;
CREATE MATERIALIZED VIEW mv_expr AS SELECT id, name FROM people;
CREATE UNIQUE INDEX ON mv_expr (lower(name));
CREATE MATERIALIZED VIEW mv_partial AS SELECT id, name FROM people;
CREATE UNIQUE INDEX ON mv_partial (id) WHERE id > 0;
CREATE MATERIALIZED VIEW mv_quiet AS SELECT id, name FROM people;
CREATE MATERIALIZED VIEW mv_nullkey AS SELECT team, id FROM people;
CREATE UNIQUE INDEX ON mv_nullkey (team, id);
CREATE MATERIALIZED VIEW mv_empty AS SELECT id, name FROM people WITH NO DATA;
CREATE UNIQUE INDEX ON mv_empty (id);
"""


def test_concurrent_when_a_plain_unique_index_exists_else_plain_with_a_warning(use_db, pg, write_plan,
                                                                             lambda_context):
    pg.execute(MODES)
    names = ["mv_keyed", "mv_unkeyed", "mv_expr", "mv_partial", "mv_quiet", "mv_nullkey", "mv_empty"]
    write_plan({"version": 1, "refresh": {"views": [
        {"name": n, **({"concurrently": False} if n == "mv_quiet" else {})} for n in names]}})
    pg.execute("INSERT INTO people VALUES (31, 'p31', 't1')")

    result = refresh(lambda_context)

    views = by_name(result["report"])
    mode = {n: views[f"public.{n}"]["mode"] for n in names}
    assert mode == {"mv_keyed": "concurrent", "mv_unkeyed": "plain", "mv_expr": "plain", "mv_partial": "plain",
                    "mv_quiet": "plain", "mv_nullkey": "concurrent", "mv_empty": "plain"}
    assert all(v["outcome"] == "refreshed" and v["rows"] == 31 for v in views.values())
    for n in ("mv_unkeyed", "mv_expr", "mv_partial"):
        assert "unique index" in views[f"public.{n}"]["warnings"][0]
    assert views["public.mv_quiet"]["warnings"] == [], "concurrently: false accepts a plain refresh silently"
    assert views["public.mv_keyed"]["warnings"] == []
    assert "holds NULLs" in views["public.mv_nullkey"]["warnings"][0]
    assert "not populated" in views["public.mv_empty"]["warnings"][0]
    assert pg.execute("SELECT count(*) FROM mv_empty").fetchone() == (31,)


def test_concurrently_true_on_a_view_without_unique_key_fails_that_view_only(use_db, pg, write_plan,
                                                                           lambda_context):
    pg.execute(MODES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_unkeyed", "concurrently": True},
                                                    {"name": "mv_keyed", "concurrently": True}]}})
    pg.execute("INSERT INTO people VALUES (31, 'p31', 't1')")

    report = refresh_failing(lambda_context)

    views = by_name(report)
    assert views["public.mv_unkeyed"]["outcome"] == "failed"
    assert "concurrently: true" in views["public.mv_unkeyed"]["error"]
    assert "CREATE UNIQUE INDEX" in views["public.mv_unkeyed"]["error"]
    assert pg.execute("SELECT count(*) FROM mv_unkeyed").fetchone() == (30,), "never refreshed in a blocking way"
    assert views["public.mv_keyed"]["outcome"] == "refreshed"
    assert pg.execute("SELECT count(*) FROM mv_keyed").fetchone() == (31,)
    assert report["status"] == "failed" and report["errors"][0].startswith("public.mv_unkeyed: ")


# A view whose cost is set by a table: cheap to create, as slow as we like to refresh. Each row
# counts `work` numbers, so refreshing 2000 rows with work = 20000 takes a few seconds of CPU.
HEAVY = """
CREATE TABLE knob (work int NOT NULL);
INSERT INTO knob VALUES (1);
CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO items SELECT g, g % 97 FROM generate_series(1, 2000) g;
CREATE MATERIALIZED VIEW mv_heavy AS
  SELECT i.id, i.v, w.s FROM items i
  CROSS JOIN LATERAL (SELECT count(*) AS s FROM generate_series(1, (SELECT work FROM knob)) x WHERE x > i.v) w;
CREATE UNIQUE INDEX ON mv_heavy (id);
CREATE MATERIALIZED VIEW mv_light AS SELECT count(*) AS n FROM items;
"""


def refresh_running(pg: psycopg.Connection, concurrently: bool) -> bool:
    head = "REFRESH MATERIALIZED VIEW " + ("CONCURRENTLY " if concurrently else "")
    row = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
        "AND application_name LIKE 'pgkeeper/refresh%%' AND query LIKE %s", [head + "%"]).fetchone()
    return row[0] > 0


def read_while_refreshing(db_url, pg, write_plan, lambda_context, concurrently: bool) -> tuple[list, list, dict]:
    """Start the job in a thread; once its REFRESH runs, query the view from another session with a
    short lock_timeout. Returns (answers, errors, job result)."""
    pg.execute("UPDATE knob SET work = 20000")
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_heavy", "concurrently": concurrently}]}})
    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(refresh(lambda_context)))
    job.start()
    answers, errors = [], []
    try:
        wait_for(lambda: refresh_running(pg, concurrently), "the job's REFRESH to start")
        with psycopg.connect(db_url, autocommit=True, options="-c lock_timeout=500") as reader:
            for i in range(1, 21):
                try:
                    answers.append(reader.execute("SELECT s FROM mv_heavy WHERE id = %s", [i * 50]).fetchone())
                    answers.append(reader.execute("SELECT count(*), max(s) FROM mv_heavy").fetchone())
                except psycopg.errors.LockNotAvailable as exc:
                    errors.append(exc)
                    break
        still_running = refresh_running(pg, concurrently)
    finally:
        job.join(timeout=60)
    assert still_running, "the refresh ended before the reader finished: make mv_heavy heavier"
    return answers, errors, outcome


def test_a_reader_is_never_blocked_by_a_concurrent_refresh(use_db, pg, write_plan, lambda_context):
    pg.execute(HEAVY)
    answers, errors, result = read_while_refreshing(use_db, pg, write_plan, lambda_context, concurrently=True)

    assert errors == []
    assert len(answers) == 40, "every query answered while the refresh was running"
    assert answers[1] == (2000, 1), "readers see the old rows until the refresh commits"
    [view] = result["report"]["views"]
    assert (view["mode"], view["outcome"]) == ("concurrent", "refreshed")
    assert pg.execute("SELECT max(s) FROM mv_heavy").fetchone()[0] > 19000


def test_a_plain_refresh_does_block_readers(use_db, pg, write_plan, lambda_context):
    """The contrast that shows the reader test can fail: without CONCURRENTLY the reader waits."""
    pg.execute(HEAVY)
    answers, errors, result = read_while_refreshing(use_db, pg, write_plan, lambda_context, concurrently=False)

    assert len(errors) == 1 and answers == []
    assert result["report"]["views"][0]["mode"] == "plain"


def test_a_lock_held_by_another_session_fails_that_view_and_the_others_refresh(use_db, pg, write_plan,
                                                                               lambda_context):
    pg.execute(SALES + "CREATE TABLE other (id int); CREATE MATERIALIZED VIEW mv_other AS SELECT count(*) n FROM other")
    write_plan({"version": 1, "database": {"lock_timeout_ms": 300},
                "refresh": {"views": [{"name": "mv_a"}, {"name": "mv_other"}]}})
    pg.execute("INSERT INTO sales VALUES (11, 11); INSERT INTO other VALUES (1), (2)")

    with psycopg.connect(use_db) as holder:  # a migration holding its lock on the table mv_a reads
        holder.execute("LOCK TABLE sales IN ACCESS EXCLUSIVE MODE")
        report = refresh_failing(lambda_context)
        holder.rollback()

    views = by_name(report)
    assert views["public.mv_a"]["outcome"] == "failed"
    assert "lock not granted within 300 ms" in views["public.mv_a"]["error"]
    assert "55P03" in views["public.mv_a"]["error"]
    assert views["public.mv_other"]["outcome"] == "refreshed"
    assert pg.execute("SELECT n FROM mv_other").fetchone() == (2,)
    assert pg.execute("SELECT count(*) FROM mv_a").fetchone() == (10,)
    assert report["failed"] == 1 and "lock not granted" in report["errors"][0]


def test_a_second_run_while_one_holds_the_lock_is_skipped_and_changes_nothing(use_db, pg, write_plan,
                                                                             lambda_context):
    pg.execute(SALES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_a"}]}})
    pg.execute("INSERT INTO sales VALUES (11, 11)")

    with psycopg.connect(use_db, autocommit=True) as other_run:
        assert locks.try_lock(other_run, "refresh")
        result = refresh(lambda_context)

    assert result["status"] == "skipped"
    assert pg.execute("SELECT count(*) FROM mv_a").fetchone() == (10,)
    assert pg.execute("SELECT status FROM pgkeeper.runs").fetchall() == [("skipped",)]


def test_refresh_stops_at_the_deadline_and_reports_what_was_not_done(use_db, pg, write_plan, lambda_context):
    pg.execute(HEAVY)
    pg.execute("UPDATE knob SET work = 100000")  # far longer than the invocation has
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_heavy"}, {"name": "mv_light"}]}})
    pg.execute("INSERT INTO items VALUES (2001, 1)")
    context = lambda_context(timeout_s=3)

    result = runner.execute(JOB, JobEvent(job="refresh"), context)

    assert context.get_remaining_time_in_millis() > 0, "returned before the Lambda deadline"
    report = result["report"]
    assert result["status"] == "partial"
    assert report["not_done"] == ["public.mv_heavy", "public.mv_light"]
    assert "deadline" in report["views"][0]["error"]
    assert any("not done: public.mv_heavy, public.mv_light" in e for e in report["errors"])
    assert pg.execute("SELECT count(*), max(s) FROM mv_heavy").fetchone() == (2000, 1), "cancelled, unchanged"
    assert pg.execute("SELECT status FROM pgkeeper.runs").fetchall() == [("partial",)]
    assert pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND query LIKE 'REFRESH%%'").fetchone() == (0,)


def test_views_option_refreshes_only_the_named_views(use_db, pg, write_plan, lambda_context):
    pg.execute(SALES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_a"}, {"name": "mv_b"}]}})
    pg.execute("INSERT INTO sales VALUES (11, 11)")

    result = refresh(lambda_context, views=["public.mv_a"])

    assert [v["name"] for v in result["report"]["views"]] == ["public.mv_a"]
    assert pg.execute("SELECT count(*) FROM mv_a").fetchone() == (11,)
    assert pg.execute("SELECT n FROM mv_b").fetchone() == (10,)


@pytest.mark.parametrize(("options", "expected"), [
    ({"views": ["mv_a", "mv_nope", '"Mv_A"']}, "not in the plan's refresh.views: mv_nope, \"Mv_A\""),
    ({"veiws": ["mv_a"]}, "veiws: unknown key"),
    ({"repair": "yes please"}, "repair: Input should be a valid boolean"),
    ({"repair": "no"}, "repair: Input should be a valid boolean"),  # strict: no "no" -> False coercion
    ({"dry_run": 1}, "dry_run: Input should be a valid boolean"),
    ({"dry_run": "yes"}, "dry_run: Input should be a valid boolean"),
    ({"views": "mv_a"}, "views: Input should be a valid list"),
    ({"views": ["bad name!"]}, "views[0]: not a valid SQL name"),
    ({"clear_cache": True, "repair": True}, "clear_cache runs alone"),
])
def test_bad_options_are_clear_errors_and_change_nothing(use_db, pg, write_plan, lambda_context, options,
                                                         expected):
    pg.execute(SALES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_a"}, {"name": "mv_b"}]}})
    pg.execute("INSERT INTO sales VALUES (11, 11)")

    with pytest.raises(EventError) as err:
        refresh(lambda_context, **options)

    assert expected in str(err.value) and err.value.status == 400
    assert pg.execute("SELECT count(*) FROM mv_a").fetchone() == (10,)


def load_handler():
    spec = importlib.util.spec_from_file_location("refresh_app", ROOT / "functions" / "refresh" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def test_the_real_handler_runs_the_scheduled_event(use_db, pg, write_plan, lambda_context):
    pg.execute(SALES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_a"}, {"name": "mv_b"}]}})
    pg.execute("INSERT INTO sales VALUES (11, 11)")
    event = json.loads((ROOT / "events" / "refresh-scheduled.json").read_text())

    result = load_handler()(event, lambda_context(timeout_s=30))

    assert result["status"] == "succeeded" and result["report"]["refreshed"] == 2
    assert pg.execute("SELECT n FROM mv_b").fetchone() == (11,)
    assert pg.execute("SELECT trigger, status FROM pgkeeper.runs").fetchall() == [("schedule", "succeeded")]


def test_the_real_handler_rejects_an_event_naming_an_unknown_option(use_db, pg, write_plan, lambda_context):
    pg.execute(SALES)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_a"}]}})
    with pytest.raises(EventError) as err:
        load_handler()({"job": "refresh", "options": {"view": ["mv_a"]}}, lambda_context(timeout_s=30))
    assert "view: unknown key" in str(err.value)


def test_plan_check_lists_every_problem_of_the_refresh_section(use_db, pg, write_plan):
    pg.execute(SALES + "CREATE TABLE not_a_view (id int);")
    assert check(load_plan(write_plan({"refresh": {"schemas": ['"Public"', "public"]}})), pg) == [
        "refresh.schemas[0]: schema 'Public' does not exist"]
    path = write_plan({"version": 1, "refresh": {"views": [
        {"name": "mv_a", "definition": "views/mv_a.sql"},
        {"name": "not_a_view"},
        {"name": "mv_gone"},
        {"name": "nowhere.mv_x"},
        {"name": "mv_new", "definition": "views/mv_new.sql"},
    ]}}, files={
        "views/mv_a.sql": "CREATE MATERIALIZED VIEW mv_a AS SELECT id, amount FROM sales;\n"
                          "CREATE UNIQUE INDEX ON mv_a (id);",
        "views/mv_new.sql": "CREATE MATERIALIZED VIEW mv_new AS\nSELECT id, colour FROM sales;",
    })
    plan = load_plan(path)

    problems = check(plan, pg)

    assert problems == [
        "refresh.views[1] (public.not_a_view): is a table, not a materialized view",
        "refresh.views[2] (public.mv_gone): does not exist and has no definition file to create it from",
        "refresh.views[3] (nowhere.mv_x): schema 'nowhere' does not exist",
        "refresh.views[4] (public.mv_new).definition: mv_new.sql does not apply: "
        'column "colour" does not exist (SQLSTATE 42703)',
    ]
    assert pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgkeeper_scratch%%'").fetchone() == (0,)
    assert pg.execute("SELECT to_regclass('mv_new')").fetchone() == (None,)


def test_plan_check_of_the_example_plan_against_the_demo_schema_is_clean(use_db, pg):
    pg.execute((ROOT / "demo" / "schema.sql").read_text())
    assert check(load_plan(ROOT / "plan" / "pgkeeper-plan.yaml"), pg) == []
