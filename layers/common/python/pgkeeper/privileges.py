"""Privileges a job needs on the objects of the plan, checked before a run (`pgkeeper plan check`).

Cleanup's SELECT and DELETE are checked with its targets (`pgkeeper.cleanup.resolve`), vacuum's
ownership with its tables (`pgkeeper.vacuum.job.check`); refresh's ownership is checked here.
"""

from __future__ import annotations

import psycopg

from .idents import display
from .plan import Plan
from .plan.base import split_name


def refresh_problems(plan: Plan, conn: psycopg.Connection) -> list[str]:
    """Materialized views the next refresh would refresh that the database user does not own.

    REFRESH MATERIALIZED VIEW (and a repair, which replaces the view) needs ownership: being the
    owner, a member of the owning role, or a superuser. Views the plan lists that do not exist are
    the refresh check's to report; with no `views`, every materialized view in `schemas` counts.
    """
    rp = plan.refresh
    listed = [split_name(v.name) for v in rp.views]
    rows = conn.execute(
        "SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'm' AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')"
        " AND CASE WHEN %s THEN (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        "          ELSE n.nspname = ANY (%s::text[]) END"
        " ORDER BY n.nspname, c.relname",
        [bool(listed), [s for s, _ in listed], [t for _, t in listed], rp.schema_names],
    ).fetchall()
    index = {key: i for i, key in enumerate(listed)}
    problems = []
    for schema, name, owner in rows:
        where = f"refresh.views[{index[(schema, name)]}]" if listed else "refresh"
        problems.append(f"{where}: the database user does not own {display(schema, name)} (owner {owner}): "
                        f"refreshing it needs ownership or membership in role {owner} "
                        f"(GRANT {owner} TO <pgkeeper's user>)")
    return problems
