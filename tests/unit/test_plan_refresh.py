"""The refresh section of the plan: every problem reported at once, each with its path in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgkeeper.errors import PlanError
from pgkeeper.plan import load_plan
from pgkeeper.refresh.job import RefreshOptions

ROOT = Path(__file__).resolve().parents[2]

GOOD_VIEW = "CREATE MATERIALIZED VIEW mv_ok AS SELECT 1 AS id;\nCREATE UNIQUE INDEX ON mv_ok (id);\n"


def write(tmp_path: Path, plan: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PlanError) as err:
        load_plan(path)
    return err.value.problems


def test_every_problem_of_a_bad_refresh_section_is_listed_with_its_path(tmp_path):
    path = write(tmp_path, """
version: 1
refresh:
  schemas: [public, "bad schema!"]
  views:
    - name: mv_ok
      definition: views/mv_ok.sql
    - name: "not a name"
    - name: mv_missing_file
      definition: views/nope.sql
    - name: mv_typo
      concurent: true
    - name: mv_other
      definition: views/mv_ok.sql
    - name: public.mv_ok
    - name: mv_flag
      concurrently: sometimes
""", {"views/mv_ok.sql": GOOD_VIEW})

    found = problems(path)

    assert found[0] == "refresh.schemas[1]: not a valid SQL name: 'bad schema!'"
    assert found[1] == "refresh.views[1].name: not a valid SQL name: 'not a name'"
    assert found[2].startswith("refresh.views[2].definition: file not found: views/nope.sql")
    assert found[3] == "refresh.views[3].concurent: unknown key (check the spelling)"
    assert found[4] == ("refresh.views[4].definition: views/mv_ok.sql: line 1: creates public.mv_ok, "
                        "but this file is the definition of public.mv_other; "
                        "line 2: the index is on public.mv_ok, not on public.mv_other")
    assert found[5].startswith("refresh.views[6].concurrently: Input should be a valid boolean")
    assert len(found) == 6


def test_a_view_listed_twice_is_an_error_even_when_spelled_differently(tmp_path):
    path = write(tmp_path, """
refresh:
  views:
    - name: mv_a
    - name: '"mv_a"'
    - name: public.MV_A
""")
    assert problems(path) == [
        "refresh.views: [1] \"mv_a\" is listed again (first at [0]); [2] public.MV_A is listed again (first at [0])"]


@pytest.mark.parametrize(("text", "expected"), [
    ("DELETE FROM users;", "line 1: DELETE FROM USERS ... is not allowed in a definition file"),
    ("CREATE MATERIALIZED VIEW mv_ok AS SELECT 'unterminated;", "line 1: unterminated string"),
    ("CREATE INDEX ON mv_ok (id);", "no CREATE MATERIALIZED VIEW public.mv_ok statement"),
    ("CREATE MATERIALIZED VIEW mv_ok AS SELECT 1;\nCREATE MATERIALIZED VIEW mv_ok AS SELECT 2;",
     "line 2: a second CREATE MATERIALIZED VIEW (one view per file)"),
    ("CREATE MATERIALIZED VIEW mv_ok AS SELECT 1 AS id;\nDROP MATERIALIZED VIEW users_summary;",
     "line 2: drops public.users_summary; only public.mv_ok may be named here"),
    ("CREATE MATERIALIZED VIEW mv_ok AS SELECT 1 AS id;\nGRANT SELECT ON mv_ok TO app;",
     "line 2: GRANT SELECT ON ... is not allowed"),
])
def test_definition_files_are_parsed_when_the_plan_loads(tmp_path, text, expected):
    path = write(tmp_path, "refresh:\n  views:\n    - {name: mv_ok, definition: v.sql}\n", {"v.sql": text})
    [problem] = problems(path)
    assert problem.startswith("refresh.views[0].definition: v.sql: ")
    assert expected in problem


def test_the_example_plan_is_valid():
    plan = load_plan(ROOT / "plan" / "pgkeeper-plan.yaml")
    names = [v.name for v in plan.refresh.views]
    assert names == ['"mv_dashboard_companions"', "mv_category_stats", "user_subscription_summary",
                     "mv_daily_messages"]
    assert all(v.definition is not None and v.definition.is_file() for v in plan.refresh.views)


def test_refresh_options_are_strict():
    assert RefreshOptions.model_validate({"views": ['"Companion_mv"'], "repair": True}).views == ['"Companion_mv"']
    for bad in ({"view": ["x"]}, {"views": "mv_a"}, {"clear_cache": True, "dry_run": True}, {"repair": "maybe"}):
        with pytest.raises(ValueError):
            RefreshOptions.model_validate(bad)
