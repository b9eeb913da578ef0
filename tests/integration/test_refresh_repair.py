"""Repair: views that drifted from their definition files, or are missing, recreated safely.

The scenario of seed 000: a migration adds "Companion".description, the dashboard view was never
recreated, and the app's query fails with `column "description" does not exist`.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from test_refresh import by_name, refresh, refresh_failing

APP = """
CREATE TABLE "Companion" (
    id text PRIMARY KEY, name text NOT NULL, "userId" text NOT NULL, private boolean NOT NULL DEFAULT false,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Message" (id text PRIMARY KEY, "companionId" text NOT NULL REFERENCES "Companion"(id));
INSERT INTO "Companion" (id, name, "userId", private, "createdAt")
SELECT 'c' || g, 'Companion ' || g, CASE WHEN g % 4 = 0 THEN 'system' ELSE 'u' || g END, g % 3 = 0,
       timestamp '2025-01-01' + g * interval '1 hour'
FROM generate_series(1, 12) g;
INSERT INTO "Message" SELECT 'm' || g, 'c' || (1 + g % 12) FROM generate_series(1, 60) g;
"""

# The view as the app created it before the migration (seed 000's definition, minus description).
OLD_VIEW = """
CREATE MATERIALIZED VIEW "mv_dashboard_companions" AS
SELECT c.id, c.name, c."userId", c."createdAt", COUNT(m.id) AS message_count
FROM "Companion" c LEFT JOIN "Message" m ON c.id = m."companionId"
WHERE c.private = false OR c."userId" = 'system'
GROUP BY c.id, c.name, c."userId", c."createdAt"
ORDER BY c."createdAt" DESC;
CREATE UNIQUE INDEX "mv_dashboard_companions_id_key" ON "mv_dashboard_companions" (id);
"""

# Its definition file today: selects the new column. Formatted differently on purpose.
DASHBOARD_SQL = """-- the dashboard view; see seed 000
DROP MATERIALIZED VIEW IF EXISTS "mv_dashboard_companions";
CREATE MATERIALIZED VIEW "mv_dashboard_companions" AS
SELECT
  c.id,
  c.name,
  c.description,          -- added by migration 20250311; a ';' in a comment is fine
  c."userId",
  c."createdAt",
  COUNT(m.id) as message_count
FROM "Companion" c
LEFT JOIN "Message" m ON c.id = m."companionId"
WHERE c.private = false OR c."userId" = 'system'
GROUP BY c.id, c.name, c.description, c."userId", c."createdAt"
ORDER BY c."createdAt" DESC;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "mv_dashboard_companions_id_key"
  ON "mv_dashboard_companions" (id);
"""

STATS_SQL = """
CREATE MATERIALIZED VIEW mv_user_stats AS
SELECT "userId", count(*) AS companions, sum(message_count)::int AS messages
FROM mv_dashboard_companions GROUP BY "userId";
CREATE UNIQUE INDEX ON mv_user_stats ("userId");
"""

TOTALS_SQL = """
CREATE MATERIALIZED VIEW mv_totals AS
SELECT count(*)::int AS users, sum(messages)::int AS messages FROM public.mv_user_stats;
"""

MIGRATION = """
ALTER TABLE "Companion" ADD COLUMN description text;
UPDATE "Companion" SET description = 'about ' || name;
"""


def columns(pg: psycopg.Connection, view: str) -> list[str]:
    return [r[0] for r in pg.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        [view]).fetchall()]


def indexes(pg: psycopg.Connection, view: str) -> list[str]:
    return [r[0] for r in pg.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1", [view])]


def leftovers(pg: psycopg.Connection) -> list[str]:
    return [r[0] for r in pg.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgkeeper\\_%%' ORDER BY 1").fetchall()]


@pytest.fixture()
def app(use_db, pg):
    pg.execute(APP + OLD_VIEW)
    return pg


def dashboard_plan(write_plan, *extra_views: dict, files: dict | None = None, **database):
    return write_plan(
        {"version": 1, "database": database, "refresh": {"views": [
            {"name": '"mv_dashboard_companions"', "definition": "views/dashboard.sql", "concurrently": True},
            *extra_views]}},
        files={"views/dashboard.sql": DASHBOARD_SQL, **(files or {})})


def test_a_view_missing_a_newly_added_column_is_repaired_then_refreshes_concurrently(app, write_plan,
                                                                                   lambda_context):
    dashboard_plan(write_plan)
    app.execute(MIGRATION)
    with pytest.raises(psycopg.errors.UndefinedColumn):  # the seeds' error, as the app sees it
        app.execute("SELECT description FROM mv_dashboard_companions")

    result = refresh(lambda_context)

    [view] = result["report"]["views"]
    assert (view["outcome"], view["mode"]) == ("repaired", "repaired")
    assert "adds column description" in view["repaired_because"]
    assert view["rows"] == 9 and result["status"] == "succeeded" and result["report"]["repaired"] == 1
    assert app.execute("SELECT description FROM mv_dashboard_companions WHERE id = 'c1'").fetchone() == (
        "about Companion 1",)
    assert columns(app, "mv_dashboard_companions") == ["id", "name", "description", "userId", "createdAt",
                                                       "message_count"]
    assert indexes(app, "mv_dashboard_companions") == ["mv_dashboard_companions_id_key"]
    assert leftovers(app) == [], "no staging schema left behind"

    # Normalised comparison: the recreated view now matches its file, so the next run just refreshes.
    app.execute("""UPDATE "Companion" SET description = 'changed' WHERE id = 'c1'""")
    again = refresh(lambda_context)
    [view] = again["report"]["views"]
    assert (view["outcome"], view["mode"]) == ("refreshed", "concurrent")
    assert app.execute("SELECT description FROM mv_dashboard_companions WHERE id = 'c1'").fetchone() == ("changed",)


def test_formatting_differences_are_not_drift(use_db, pg, write_plan, lambda_context):
    pg.execute(APP + OLD_VIEW)
    same_view = """
    create materialized view MV_DASHBOARD_COMPANIONS as
    select C.ID, C.NAME, C."userId", C."createdAt", count(M.ID) AS message_count
      from "Companion" as C left outer join "Message" as M on (C.ID = M."companionId")
     where C.PRIVATE = FALSE or C."userId" = 'system'
     group by C.ID, C.NAME, C."userId", C."createdAt" order by C."createdAt" desc
    WITH DATA;
    create unique index ON mv_dashboard_companions (id);
    """
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_dashboard_companions",
                                                     "definition": "views/d.sql"}]}},
               files={"views/d.sql": same_view})

    result = refresh(lambda_context)

    [view] = result["report"]["views"]
    assert (view["outcome"], view["mode"]) == ("refreshed", "concurrent")
    assert view["warnings"] == []


def test_an_index_from_the_definition_file_that_is_missing_triggers_a_repair(use_db, pg, write_plan,
                                                                            lambda_context):
    pg.execute(APP + MIGRATION + DASHBOARD_SQL.split("CREATE UNIQUE INDEX")[0])  # the view, not its index
    dashboard_plan(write_plan)

    result = refresh(lambda_context)

    [view] = result["report"]["views"]
    assert view["outcome"] == "repaired"
    assert view["repaired_because"] == "index UNIQUE (id) from dashboard.sql is missing"
    assert indexes(pg, "mv_dashboard_companions") == ["mv_dashboard_companions_id_key"]


def test_repair_recreates_the_views_built_on_it(app, write_plan, lambda_context):
    app.execute(STATS_SQL + TOTALS_SQL)
    dashboard_plan(write_plan, {"name": "mv_user_stats", "definition": "views/stats.sql"},
                   {"name": "mv_totals", "definition": "views/totals.sql"},
                   files={"views/stats.sql": STATS_SQL, "views/totals.sql": TOTALS_SQL})
    app.execute(MIGRATION)
    app.execute("""INSERT INTO "Message" VALUES ('m61', 'c1')""")

    result = refresh(lambda_context)

    views = result["report"]["views"]
    assert [(v["name"], v["outcome"]) for v in views] == [
        ("public.mv_dashboard_companions", "repaired"), ("public.mv_user_stats", "repaired"),
        ("public.mv_totals", "repaired")]
    assert views[1]["repaired_because"] == "it is built on public.mv_dashboard_companions, which was repaired"
    # mv_totals names its parent with a schema: staged, it would have read the old parent.
    assert "built in place" in views[2]["warnings"][0]
    assert app.execute("SELECT users, messages FROM mv_totals").fetchone() == (7, 46)
    assert "description" in columns(app, "mv_dashboard_companions")
    assert indexes(app, "mv_user_stats") == ['"mv_user_stats_userId_idx"']
    assert leftovers(app) == []


def test_a_view_built_on_it_without_definition_blocks_the_repair_and_nothing_is_dropped(app, write_plan,
                                                                                       lambda_context):
    app.execute('CREATE VIEW recent_companions AS SELECT id, name FROM mv_dashboard_companions ORDER BY id LIMIT 3')
    app.execute(STATS_SQL)
    dashboard_plan(write_plan)  # mv_user_stats is built on it but not in the plan
    app.execute(MIGRATION)

    report = refresh_failing(lambda_context)

    [view] = report["views"]
    assert view["outcome"] == "failed"
    assert "public.recent_companions (view" in view["error"]
    assert "public.mv_user_stats (materialized view with no definition file" in view["error"]
    assert "never drops a view it cannot recreate" in view["error"]
    assert "description" not in columns(app, "mv_dashboard_companions")
    assert app.execute("SELECT count(*) FROM recent_companions").fetchone() == (3,)
    assert app.execute("SELECT count(*) FROM mv_user_stats").fetchone() == (7,)


def test_a_missing_view_is_created_from_its_definition_with_its_indexes(app, write_plan, lambda_context):
    app.execute(MIGRATION + "DROP MATERIALIZED VIEW mv_dashboard_companions")
    dashboard_plan(write_plan)

    result = refresh(lambda_context)

    [view] = result["report"]["views"]
    assert (view["outcome"], view["repaired_because"], view["rows"]) == ("repaired", "it did not exist", 9)
    assert indexes(app, "mv_dashboard_companions") == ["mv_dashboard_companions_id_key"]


def test_a_missing_view_without_definition_fails_alone(app, write_plan, lambda_context):
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_gone"}, {"name": "mv_dashboard_companions"}]}})
    app.execute("""INSERT INTO "Companion" (id, name, "userId") VALUES ('c99', 'new', 'u99')""")

    report = refresh_failing(lambda_context)

    views = by_name(report)
    assert views["public.mv_gone"]["error"] == (
        "public.mv_gone does not exist and has no definition file to create it from")
    assert views["public.mv_dashboard_companions"]["outcome"] == "refreshed"
    assert app.execute("SELECT count(*) FROM mv_dashboard_companions").fetchone() == (10,)


def test_a_refresh_failing_on_a_changed_schema_gets_one_repair_and_a_failed_repair_keeps_the_old_view(
        use_db, pg, write_plan, lambda_context):
    # The view calls a function whose body names a column: Postgres cannot see that dependency,
    # so the migration that renames the column succeeds and only the refresh fails.
    pg.execute(APP + """
    CREATE FUNCTION label(cid text) RETURNS text LANGUAGE plpgsql STABLE AS
      $$ BEGIN RETURN (SELECT name FROM "Companion" WHERE id = cid); END $$;
    """)
    labelled = 'CREATE MATERIALIZED VIEW mv_labels AS SELECT id, label(id) AS label FROM "Companion";'
    pg.execute(labelled)
    write_plan({"version": 1, "refresh": {"views": [{"name": "mv_labels", "definition": "views/l.sql"}]}},
               files={"views/l.sql": labelled})
    pg.execute('ALTER TABLE "Companion" RENAME COLUMN name TO title')

    report = refresh_failing(lambda_context)

    [view] = report["views"]
    assert view["outcome"] == "failed"
    assert view["error"].startswith('refresh failed (column "name" does not exist (SQLSTATE 42703)); '
                                    "repair from its definition file failed too")
    assert view["error"].endswith("the old view is unchanged")
    assert pg.execute("SELECT label FROM mv_labels WHERE id = 'c1'").fetchone() == ("Companion 1",)
    assert leftovers(pg) == []


def test_a_reader_holding_the_old_view_makes_the_repair_fail_cleanly(app, write_plan, lambda_context):
    dashboard_plan(write_plan, lock_timeout_ms=300)
    app.execute(MIGRATION)

    with psycopg.connect(app.info.dsn) as reader:  # a long report query still reading the old view
        reader.execute("SELECT count(*) FROM mv_dashboard_companions").fetchone()
        report = refresh_failing(lambda_context)
        reader.rollback()

    [view] = report["views"]
    assert view["outcome"] == "failed"
    assert "lock not granted within 300 ms during repair (drop the old public.mv_dashboard_companions)" in view["error"]
    assert "description" not in columns(app, "mv_dashboard_companions")
    assert app.execute("SELECT count(*) FROM mv_dashboard_companions").fetchone() == (9,)
    assert leftovers(app) == [], "the staged copy went with the rolled-back transaction"


@pytest.fixture()
def reader_role(app: psycopg.Connection, admin_url: str):
    role = f"pgk_reader_{uuid.uuid4().hex[:8]}"
    app.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    yield role
    app.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_repair_keeps_the_views_privileges_and_comment(app, reader_role, write_plan, lambda_context):
    app.execute(sql.SQL("GRANT SELECT ON mv_dashboard_companions TO {}").format(sql.Identifier(reader_role)))
    app.execute("COMMENT ON MATERIALIZED VIEW mv_dashboard_companions IS 'dashboard list; refreshed by pgkeeper'")
    dashboard_plan(write_plan)
    app.execute(MIGRATION)

    result = refresh(lambda_context)

    assert result["report"]["views"][0]["outcome"] == "repaired", "the privileges must survive a real repair"
    assert "description" in columns(app, "mv_dashboard_companions")
    assert app.execute("SELECT has_table_privilege(%s, 'mv_dashboard_companions', 'SELECT')",
                       [reader_role]).fetchone() == (True,)
    assert app.execute("SELECT obj_description('mv_dashboard_companions'::regclass, 'pg_class')").fetchone() == (
        "dashboard list; refreshed by pgkeeper",)


def test_dry_run_reports_the_repairs_it_would_make_and_changes_nothing(app, write_plan, lambda_context):
    app.execute(STATS_SQL)
    dashboard_plan(write_plan, {"name": "mv_user_stats", "definition": "views/stats.sql"},
                   {"name": "mv_new", "definition": "views/new.sql"},
                   files={"views/stats.sql": STATS_SQL,
                          "views/new.sql": 'CREATE MATERIALIZED VIEW mv_new AS SELECT count(*) FROM "Message";'})
    app.execute(MIGRATION)
    app.execute("""INSERT INTO "Message" VALUES ('m61', 'c1')""")

    result = refresh(lambda_context, dry_run=True)

    report = result["report"]
    assert report["dry_run"] is True and result["status"] == "succeeded"
    assert [(v["name"], v["outcome"], v["planned"]) for v in report["views"]] == [
        ("public.mv_dashboard_companions", "skipped",
         "recreate from its definition file with public.mv_user_stats"),
        ("public.mv_user_stats", "skipped", "recreate from its definition file with public.mv_dashboard_companions"),
        ("public.mv_new", "skipped", "recreate from its definition file"),
    ]
    assert "adds column description" in report["views"][0]["repaired_because"]
    assert "description" not in columns(app, "mv_dashboard_companions")
    assert app.execute("SELECT sum(message_count) FROM mv_dashboard_companions").fetchone() == (45,)
    assert app.execute("SELECT to_regclass('mv_new')").fetchone() == (None,)
    assert leftovers(app) == []


def test_quoted_mixed_case_schema_view_and_columns(use_db, pg, write_plan, lambda_context):
    pg.execute("""
    CREATE SCHEMA "Analytics";
    CREATE TABLE "Analytics"."DailyVote" ("companionId" text, "votedAt" date, "voteCount" int NOT NULL);
    INSERT INTO "Analytics"."DailyVote" SELECT 'c' || g % 5, date '2025-01-01' + g % 3, g FROM generate_series(1, 30) g;
    CREATE MATERIALIZED VIEW "Analytics"."CompanionVotes" AS
      SELECT "companionId", sum("voteCount")::int AS "voteTotal" FROM "Analytics"."DailyVote" GROUP BY 1;
    CREATE UNIQUE INDEX "CompanionVotes_companionId_key" ON "Analytics"."CompanionVotes" ("companionId");
    """)
    definition = """
    CREATE MATERIALIZED VIEW "Analytics"."CompanionVotes" AS
      SELECT "companionId", sum("voteCount")::int AS "voteTotal", max("votedAt") AS "lastVotedAt"
      FROM "DailyVote" GROUP BY 1;
    CREATE UNIQUE INDEX "CompanionVotes_companionId_key" ON "CompanionVotes" ("companionId");
    """
    write_plan({"version": 1, "refresh": {"views": [
        {"name": '"Analytics"."CompanionVotes"', "definition": "views/votes.sql", "concurrently": True}]}},
        files={"views/votes.sql": definition})

    first = refresh(lambda_context)
    pg.execute("""INSERT INTO "Analytics"."DailyVote" VALUES ('c1', '2025-02-01', 100)""")
    second = refresh(lambda_context)

    assert [(v["name"], v["outcome"]) for v in first["report"]["views"]] == [
        ('"Analytics"."CompanionVotes"', "repaired")]
    assert [(v["mode"], v["outcome"]) for v in second["report"]["views"]] == [("concurrent", "refreshed")]
    assert pg.execute("""SELECT "voteTotal", "lastVotedAt"::text FROM "Analytics"."CompanionVotes"
                         WHERE "companionId" = 'c1'""").fetchone() == (81 + 100, "2025-02-01")


# -- schemas nobody here wrote: hand-added indexes, plain views on matviews, hints, plan check ---------

VOTES = """
CREATE SCHEMA "Analytics";
CREATE TABLE "Analytics"."DailyVote" ("companionId" text, "votedAt" date, "voteCount" int NOT NULL);
INSERT INTO "Analytics"."DailyVote" SELECT 'c' || g % 5, date '2025-01-01' + g % 3, g FROM generate_series(1, 30) g;
CREATE MATERIALIZED VIEW "Analytics"."CompanionVotes" AS
  SELECT "companionId", sum("voteCount")::int AS "voteTotal", min("votedAt") AS "firstVotedAt"
  FROM "Analytics"."DailyVote" GROUP BY 1;
CREATE UNIQUE INDEX "CompanionVotes_companionId_key" ON "Analytics"."CompanionVotes" ("companionId");
CREATE MATERIALIZED VIEW "Analytics"."TopVotes" AS
  SELECT "companionId", "voteTotal" FROM "Analytics"."CompanionVotes" WHERE "voteTotal" > 0;
-- added by hand by the team's DBA, in no definition file:
CREATE INDEX "CompanionVotes_voteTotal_idx" ON "Analytics"."CompanionVotes" ("voteTotal" DESC);
CREATE INDEX "CompanionVotes_first_idx" ON "Analytics"."CompanionVotes" ("firstVotedAt");
CREATE INDEX "TopVotes_total_idx" ON "Analytics"."TopVotes" ("voteTotal");
"""

# The new definition adds "lastVotedAt" and no longer has "firstVotedAt".
VOTES_SQL = """
CREATE MATERIALIZED VIEW "Analytics"."CompanionVotes" AS
  SELECT "companionId", sum("voteCount")::int AS "voteTotal", max("votedAt") AS "lastVotedAt"
  FROM "Analytics"."DailyVote" GROUP BY 1;
CREATE UNIQUE INDEX "CompanionVotes_companionId_key" ON "Analytics"."CompanionVotes" ("companionId");
"""
TOP_SQL = """
CREATE MATERIALIZED VIEW "Analytics"."TopVotes" AS
  SELECT "companionId", "voteTotal" FROM "CompanionVotes" WHERE "voteTotal" > 0;
"""


def votes_plan(write_plan):
    return write_plan({"version": 1, "refresh": {"views": [
        {"name": '"Analytics"."CompanionVotes"', "definition": "views/votes.sql"},
        {"name": '"Analytics"."TopVotes"', "definition": "views/top.sql"}]}},
        files={"views/votes.sql": VOTES_SQL, "views/top.sql": TOP_SQL})


def test_hand_added_indexes_survive_a_repair_and_one_on_a_dropped_column_is_reported(use_db, pg, write_plan,
                                                                                      lambda_context):
    pg.execute(VOTES)
    votes_plan(write_plan)

    dry = refresh(lambda_context, dry_run=True)
    result = refresh(lambda_context)

    for report in (dry["report"], result["report"]):
        votes, top = report["views"]
        assert votes["indexes_carried_over"] == ["CompanionVotes_voteTotal_idx"]
        [lost] = votes["indexes_not_carried"]
        assert lost["name"] == "CompanionVotes_first_idx"
        assert lost["ddl"] == ('CREATE INDEX "CompanionVotes_first_idx" ON "Analytics"."CompanionVotes" '
                               'USING btree ("firstVotedAt")')
        assert "firstVotedAt" in lost["why"]
        assert top["indexes_carried_over"] == ["TopVotes_total_idx"]
        assert "indexes_not_carried" not in top
    assert "cannot be carried over" in dry["report"]["views"][0]["planned"]
    assert [v["outcome"] for v in result["report"]["views"]] == ["repaired", "repaired"]
    assert any("CompanionVotes_first_idx was not carried over" in w for w in result["report"]["views"][0]["warnings"])
    assert indexes(pg, '"Analytics"."CompanionVotes"') == [
        '"Analytics"."CompanionVotes_companionId_key"', '"Analytics"."CompanionVotes_voteTotal_idx"']
    assert pg.execute("""SELECT pg_get_indexdef('"Analytics"."CompanionVotes_voteTotal_idx"'::regclass)""").fetchone()[
        0].endswith('("voteTotal" DESC)')
    assert indexes(pg, '"Analytics"."TopVotes"') == ['"Analytics"."TopVotes_total_idx"']
    assert leftovers(pg) == []

    again = refresh(lambda_context)  # no drift now, and the index equal to the file's is never doubled
    assert [v["outcome"] for v in again["report"]["views"]] == ["refreshed", "refreshed"]
    assert len(indexes(pg, '"Analytics"."CompanionVotes"')) == 2


def test_a_plain_view_on_a_drifted_matview_is_recreated_with_its_owner_grants_and_comment(app, reader_role,
                                                                                         write_plan, lambda_context):
    app.execute('CREATE VIEW "RecentCompanions" AS SELECT id, name FROM mv_dashboard_companions ORDER BY id LIMIT 3')
    app.execute(sql.SQL('GRANT SELECT ON "RecentCompanions" TO {}').format(sql.Identifier(reader_role)))
    app.execute("""COMMENT ON VIEW "RecentCompanions" IS 'three of them'""")
    dashboard_plan(write_plan)
    app.execute(MIGRATION)
    app.execute("""INSERT INTO "Companion" (id, name, "userId") VALUES ('c0', 'zero', 'u0')""")

    result = refresh(lambda_context)

    assert result["status"] == "succeeded"
    [view] = result["report"]["views"]
    assert view["outcome"] == "repaired" and view["views_recreated"] == ['public."RecentCompanions"']
    assert "description" in columns(app, "mv_dashboard_companions")
    assert app.execute('SELECT id FROM "RecentCompanions"').fetchall() == [("c0",), ("c1",), ("c10",)]
    assert app.execute("""SELECT has_table_privilege(%s, '"RecentCompanions"', 'SELECT'),
                          obj_description('"RecentCompanions"'::regclass, 'pg_class')""",
                       [reader_role]).fetchone() == (True, "three of them")


def test_a_plain_view_that_cannot_be_recreated_blocks_the_repair_but_the_matview_is_refreshed(app, write_plan,
                                                                                            lambda_context):
    app.execute('CREATE VIEW by_creation AS SELECT id, "createdAt" FROM mv_dashboard_companions')
    dashboard_plan(write_plan, files={"views/dashboard.sql": DASHBOARD_SQL.replace('  c."createdAt",\n', "")
                                      .replace(', c."createdAt"\n', "\n").replace('ORDER BY c."createdAt" DESC', "")})
    app.execute(MIGRATION)
    app.execute("""INSERT INTO "Companion" (id, name, "userId") VALUES ('c0', 'zero', 'u0')""")

    result = refresh(lambda_context)

    assert result["status"] == "partial"
    [view] = result["report"]["views"]
    assert view["outcome"] == "refreshed"
    assert "public.by_creation" in view["repair_blocked"] and "DROP VIEW public.by_creation" in view["repair_blocked"]
    assert "createdAt does not exist" in view["repair_blocked"]
    assert any("repair blocked" in e for e in result["report"]["errors"])
    assert app.execute("SELECT count(*) FROM mv_dashboard_companions").fetchone() == (10,), "fresh data"
    assert "description" not in columns(app, "mv_dashboard_companions")
    assert app.execute("SELECT count(*) FROM by_creation").fetchone() == (10,)
    assert leftovers(app) == []


def test_the_unique_index_hint_names_a_column_the_view_has(use_db, pg, write_plan, lambda_context):
    pg.execute(VOTES)
    write_plan({"version": 1, "refresh": {"views": [{"name": '"Analytics"."TopVotes"', "concurrently": True}]}})

    report = refresh_failing(lambda_context)

    [view] = report["views"]
    assert 'CREATE UNIQUE INDEX ON "Analytics"."TopVotes" ("companionId")' in view["error"]
    assert "(id)" not in view["error"]


def test_plan_check_reports_drift_lost_indexes_and_ineligible_concurrently(use_db, pg, write_plan):
    from pgkeeper.plan import load_plan
    from pgkeeper.refresh.job import check, check_report

    pg.execute(VOTES)
    path = write_plan({"version": 1, "refresh": {"views": [
        {"name": '"Analytics"."CompanionVotes"', "definition": "views/votes.sql"},
        {"name": '"Analytics"."TopVotes"', "definition": "views/top.sql", "concurrently": True}]}},
        files={"views/votes.sql": VOTES_SQL, "views/top.sql": TOP_SQL})

    problems = check(load_plan(path), pg)

    votes = [p for p in problems if p.startswith('refresh.views[0] ("Analytics"."CompanionVotes"): drifted')]
    assert len(votes) == 1, problems
    assert "adds column lastVotedAt" in votes[0] and 'with "Analytics"."TopVotes"' in votes[0]
    assert "carrying over the indexes CompanionVotes_voteTotal_idx" in votes[0]
    assert "index CompanionVotes_first_idx cannot be carried over" in votes[0]
    assert 'refresh.views[1] ("Analytics"."TopVotes"): concurrently: true, but it has no valid unique index' in (
        "\n".join(problems))
    # A drift the next run repairs losing nothing is said, as a note.
    pg.execute('DROP INDEX "Analytics"."CompanionVotes_first_idx"')
    problems, notes = check_report(load_plan(path), pg)
    assert not [p for p in problems if "drifted" in p]
    assert [n for n in notes if n.startswith('refresh.views[0] ("Analytics"."CompanionVotes"): drifted')]
    assert leftovers(pg) == []
