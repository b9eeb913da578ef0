"""Definition files: split safely, renamed exactly, nothing else of the user's SQL touched; and
the dependency order computed from a catalog snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

from pgkeeper.refresh.catalog import Catalog, Relation
from pgkeeper.refresh.definitions import DefinitionError, parse_definition
from pgkeeper.refresh.sqltext import split_statements

TRICKY = """-- a comment; with a semicolon and "mv_x"
/* nested /* block */ comment ; */
DROP MATERIALIZED VIEW IF EXISTS public."Mv_X" CASCADE;
CREATE MATERIALIZED VIEW IF NOT EXISTS public."Mv_X" ("id", label) AS
SELECT c.id, 'it''s; "Mv_X"' || $tag$ ; $x$ $tag$ || E'\\'; ' AS label
FROM "Companion" c WHERE c.note <> $$;$$ AND c.v % 2 = 0
WITH NO DATA;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "Mv_X_id_key" ON ONLY public."Mv_X" USING btree (id);
create index on "Mv_X" (label)
"""


def as_text(composed: sql.Composable) -> str:
    return composed.as_string()  # psycopg >= 3.2 renders without a connection


def test_statements_split_only_on_real_semicolons():
    statements = split_statements(TRICKY)
    assert [s.tokens[0].text.upper() + " " + s.tokens[1].text.upper() for s in statements] == [
        "DROP MATERIALIZED", "CREATE MATERIALIZED", "CREATE UNIQUE", "CREATE INDEX"]
    assert statements[1].line() == 4


def test_the_view_is_built_under_another_name_with_everything_else_as_written():
    d = parse_definition(TRICKY, Path("mv_x.sql"), "public", "Mv_X")
    target = sql.Identifier("scratch", "Mv_X")

    view = as_text(d.build_view(target, with_data=True))

    assert view.startswith('CREATE MATERIALIZED VIEW  "scratch"."Mv_X" ("id", label) AS\n')
    assert "'it''s; \"Mv_X\"' || $tag$ ; $x$ $tag$ || E'\\'; ' AS label" in view
    assert view.endswith("c.v % 2 = 0\n WITH DATA")
    assert "NO DATA" not in view and "IF NOT EXISTS" not in view
    assert as_text(d.build_view(target, with_data=False)).endswith(" WITH NO DATA")

    unique, plain = (as_text(s) for s in d.build_indexes(target))
    assert unique == 'CREATE UNIQUE INDEX   "Mv_X_id_key" ON ONLY "scratch"."Mv_X" USING btree (id)'
    assert plain == 'create index on "scratch"."Mv_X" (label)'
    assert d.has_unique_index


def test_unqualified_names_belong_to_the_plans_schema_and_case_folds_like_postgres():
    d = parse_definition("CREATE MATERIALIZED VIEW MV_Daily AS SELECT 1", Path("d.sql"), "app", "mv_daily")
    assert (d.schema, d.name) == (None, "mv_daily")
    with pytest.raises(DefinitionError, match=r"creates app.\"MV_Daily\", but this file is the definition of"):
        parse_definition('CREATE MATERIALIZED VIEW "MV_Daily" AS SELECT 1', Path("d.sql"), "app", "mv_daily")


@pytest.mark.parametrize("text", [
    "CREATE MATERIALIZED VIEW AS SELECT 1",
    "CREATE INDEX idx_without_table (id)",
    'CREATE MATERIALIZED VIEW mv_x AS SELECT 1 AS "unterminated',
    "CREATE MATERIALIZED VIEW mv_x AS SELECT 1; /* never closed",
    "CREATE MATERIALIZED VIEW mv_x AS SELECT $q$ never closed",
])
def test_malformed_files_are_refused_with_a_reason(text):
    with pytest.raises(DefinitionError) as err:
        parse_definition(text, Path("x.sql"), "public", "mv_x")
    assert str(err.value)


def snapshot(edges: dict[str, list[str]], kinds: dict[str, str]) -> tuple[Catalog, dict[str, int]]:
    ids = {name: i + 1 for i, name in enumerate(kinds)}
    cat = Catalog()
    for name, oid in ids.items():
        cat.relations[oid] = Relation(oid, "public", name, kinds[name], True)
    for view, used in edges.items():
        for u in used:
            cat.uses.setdefault(ids[view], set()).add(ids[u])
            cat.used_by.setdefault(ids[u], set()).add(ids[view])
    return cat, ids


def test_order_puts_every_view_after_what_it_reads_even_through_plain_views():
    cat, ids = snapshot({"mv_b": ["v_mid"], "v_mid": ["mv_a"], "mv_c": ["mv_b", "mv_a"]},
                        {"mv_c": "m", "mv_b": "m", "v_mid": "v", "mv_a": "m", "mv_z": "m"})
    names = {v: k for k, v in ids.items()}
    order = cat.order([ids["mv_c"], ids["mv_z"], ids["mv_b"], ids["mv_a"]])
    assert [names[o] for o in order] == ["mv_z", "mv_a", "mv_b", "mv_c"]
    assert [r.name for r in cat.dependants(ids["mv_a"])] == ["v_mid", "mv_b", "mv_c"]
