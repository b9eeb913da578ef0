"""Recreate a drifted or missing view, and the views built on it, from their definition files.

All of it is ONE transaction, so readers see either the old views or the new ones, never a missing
or empty view, and any failure leaves everything as it was. Inside it the slow part happens first
and touches nothing the app reads: each view is built WITH DATA, with its indexes, in a private
staging schema. Only then are the old views dropped (RESTRICT, never CASCADE: Postgres itself
refuses if anything we did not plan for depends on them) and the new ones moved into place with
`ALTER ... SET SCHEMA` (indexes move with them). Readers wait only for that swap, not the build.

A dependant whose file names its parent with a schema (`public.mv_a`) would, when staged, read the
*old* parent: it is built in place after the swap instead (readers of it wait for its build).
Privileges, owner and comment of each old view are carried over to its replacement.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..idents import QualifiedName
from .catalog import Catalog, Relation
from .definitions import Definition
from .drift import search_path_for
from .session import Session

_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}


@dataclass
class Member(QualifiedName):
    schema: str
    name: str
    definition: Definition
    old: Relation | None


@dataclass
class RepairPlan:
    members: list[Member]
    """The view to repair first, then every view built on it, in creation order."""
    blockers: list[str] = field(default_factory=list)
    """Views built on it that pgkeeper cannot recreate (so it must not drop them)."""


@dataclass
class RepairResult:
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    duration_ms: int = 0


class RepairStepError(Exception):
    """A statement of the repair failed; `cause` keeps Postgres' error (and its SQLSTATE)."""

    def __init__(self, step: str, cause: psycopg.Error) -> None:
        super().__init__(f"{step}: {cause.diag.message_primary or cause}")
        self.step = step
        self.cause = cause


def plan_repair(catalog: Catalog, schema: str, name: str, definitions: dict[tuple[str, str], Definition]) -> RepairPlan:
    """Who must be recreated with `schema.name`, and who blocks it."""
    old = catalog.find(schema, name)
    plan = RepairPlan(members=[Member(schema, name, definitions[(schema, name)], old)])
    if old is None:
        return plan
    for dep in catalog.dependants(old.oid):
        definition = definitions.get(dep.key)
        if dep.kind == "m" and definition is not None:
            plan.members.append(Member(dep.schema, dep.name, definition, dep))
        elif dep.kind == "m":
            plan.blockers.append(f"{dep.display} (materialized view with no definition file in the plan)")
        else:
            plan.blockers.append(f"{dep.display} (view: pgkeeper only recreates materialized views)")
    return plan


def repair(session: Session, plan: RepairPlan) -> RepairResult:
    """Rebuild `plan.members` in one transaction (see the module docstring)."""
    members = plan.members
    result = RepairResult(warnings={m.key: [] for m in members})
    started = time.monotonic()
    uid = uuid.uuid4().hex[:8]
    stages = {schema: f"pgkeeper_repair_{uid}_{i}" for i, schema in enumerate(dict.fromkeys(m.schema for m in members))}
    old_oids = [m.old.oid for m in members if m.old]
    with session.transaction() as conn:
        for stage in stages.values():
            with _step("create the staging schema"):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(stage)))
        staged: set[tuple[str, str]] = set()
        for m in members:
            path = [stages[m.schema], m.schema] + ([stages["public"]] if "public" in stages else []) + ["public"]
            session.set_search_path(path)
            target = sql.Identifier(stages[m.schema], m.name)
            result.rows[m.key] = _build(session, m, target)
            if old_oids and _reads_any(conn, target, old_oids):
                # Its file names a parent with its schema: staged, it would read the old parent.
                with _step(f"drop the staged copy of {m.display}"):
                    conn.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(target))
                result.warnings[m.key].append("built in place after the swap: its definition names a view "
                                              "being recreated with its schema, so readers waited for its build")
            else:
                staged.add(m.key)

        with _step("read the old views' privileges"):
            props = {m.key: _properties(conn, m.old.oid) for m in members if m.old}
        for m in reversed(members):
            if m.old:
                session.bound()
                with _step(f"drop the old {m.display}"):
                    conn.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(m.old.ident))
        for m in members:
            final = sql.Identifier(m.schema, m.name)
            if m.key in staged:
                with _step(f"move the new {m.display} into place"):
                    conn.execute(sql.SQL("ALTER MATERIALIZED VIEW {} SET SCHEMA {}").format(
                        sql.Identifier(stages[m.schema], m.name), sql.Identifier(m.schema)))
            else:
                session.set_search_path(search_path_for(m.schema))
                result.rows[m.key] = _build(session, m, final)
            if m.key in props:
                result.warnings[m.key] += _restore(conn, final, props[m.key])
        for stage in stages.values():
            with _step("drop the staging schema"):
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(stage)))
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


@contextmanager
def _step(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # the connection itself failed: not a step's fault
            raise
        raise RepairStepError(what, exc) from exc


def _build(session: Session, m: Member, target: sql.Identifier) -> int:
    """The view WITH DATA (whatever the file says: a repaired view must be readable), then its indexes."""
    conn = session.conn
    session.bound()
    with _step(f"create {m.display} from {m.definition.path.name}"):
        rows = conn.execute(m.definition.build_view(target, with_data=True)).rowcount
    for statement in m.definition.build_indexes(target):
        session.bound()
        with _step(f"create an index of {m.display} from {m.definition.path.name}"):
            conn.execute(statement)
    return rows


def _reads_any(conn: psycopg.Connection, view: sql.Identifier, oids: list[int]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d "
        "ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid "
        "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
        "WHERE r.ev_class = %s::pg_catalog.regclass AND d.refobjid = ANY(%s))",
        [view.as_string(conn), oids],
    ).fetchone()
    return bool(row and row[0])


@dataclass
class _Props:
    owner: str
    comment: str | None
    grants: list[tuple[str | None, str, bool]]


def _properties(conn: psycopg.Connection, oid: int) -> _Props:
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(c.relowner), pg_catalog.obj_description(c.oid, 'pg_class'), "
        "ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable::text] FROM pg_catalog.aclexplode(c.relacl) a) "
        "FROM pg_catalog.pg_class c WHERE c.oid = %s",
        [oid],
    ).fetchone()
    assert row is not None
    owner, comment, grants = row
    return _Props(owner=owner, comment=comment,
                  grants=[(g, p, grantable == "true") for g, p, grantable in grants if g != owner])


def _restore(conn: psycopg.Connection, view: sql.Identifier, props: _Props) -> list[str]:
    """Privileges, comment and owner of the old view onto its replacement; what could not be, as warnings."""
    warnings = []
    for grantee, privilege, grantable in props.grants:
        if privilege not in _PRIVILEGES:
            continue
        with _step(f"grant {privilege} on the new view"):
            conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
                sql.SQL(privilege), view, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))
    if props.comment is not None:
        with _step("restore the view's comment"):
            conn.execute(sql.SQL("COMMENT ON MATERIALIZED VIEW {} IS {}").format(view, sql.Literal(props.comment)))
    me = conn.execute("SELECT current_user").fetchone()
    if me and me[0] != props.owner:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
                    view, sql.Identifier(props.owner)))
        except psycopg.errors.InsufficientPrivilege:
            warnings.append(f"was owned by {props.owner}; now owned by {me[0]} (not allowed to give it back)")
    return warnings
