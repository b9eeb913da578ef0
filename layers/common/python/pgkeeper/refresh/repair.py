"""Recreate a drifted or missing view, and the views built on it, from their definition files.

All of it is ONE transaction, so readers see either the old views or the new ones, never a missing
or empty view, and any failure leaves everything as it was. Inside it the slow part happens first
and touches nothing the app reads: each view is built WITH DATA, with its indexes, in a private
staging schema. Only then are the old views dropped (RESTRICT, never CASCADE: Postgres itself
refuses if anything we did not plan for depends on them) and the new ones moved into place with
`ALTER ... SET SCHEMA` (indexes move with them). Readers wait only for that swap, not the build.

A dependant whose file names its parent with a schema (`public.mv_a`) would, when staged, read the
*old* parent: it is built in place after the swap instead (readers of it wait for its build).
Privileges, owner and comment of each old view are carried over to its replacement, and so are
indexes someone added by hand (re-created from `pg_get_indexdef` on the new view, same name where
free); one whose columns the new view lacks is listed in the result, never dropped silently.
Plain views built on a recreated view hold no data: they are dropped with it and recreated from
their own stored definition (`pg_get_viewdef`, schema-qualified) after the swap, in creation
order, with their owner, privileges and comment. One that no longer applies to the new columns
raises `DependantNotRecreatable` and the whole transaction rolls back.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..idents import QualifiedName
from .catalog import Catalog, Relation, qualified_names, stored_indexes
from .definitions import Definition
from .drift import NotCarried, carry_indexes, search_path_for
from .session import Session

_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}


@dataclass
class Member(QualifiedName):
    schema: str
    name: str
    definition: Definition | None
    """None for a plain view: it is recreated from its stored definition."""
    old: Relation | None

    @property
    def plain_view(self) -> bool:
        return self.definition is None

    @property
    def kind_sql(self) -> sql.SQL:
        return sql.SQL("VIEW" if self.plain_view else "MATERIALIZED VIEW")


@dataclass
class RepairPlan:
    members: list[Member]
    """The view to repair first, then every view built on it (plain views too), in creation order."""
    blockers: list[str] = field(default_factory=list)
    """Views built on it that pgkeeper cannot recreate (so it must not drop them)."""


@dataclass
class RepairResult:
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    carried: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    not_carried: dict[tuple[str, str], list[NotCarried]] = field(default_factory=dict)
    duration_ms: int = 0


class RepairStepError(Exception):
    """A statement of the repair failed; `cause` keeps Postgres' error (and its SQLSTATE)."""

    def __init__(self, step: str, cause: psycopg.Error) -> None:
        super().__init__(f"{step}: {cause.diag.message_primary or cause}")
        self.step = step
        self.cause = cause


class DependantNotRecreatable(Exception):  # noqa: N818 - a finding reported in the view's report
    """A plain view built on the repaired view cannot be recreated from its stored definition."""

    def __init__(self, view: str, why: str) -> None:
        super().__init__(f"{view} cannot be recreated from its stored definition: {why}")
        self.view = view
        self.why = why


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
            plan.members.append(Member(dep.schema, dep.name, None, dep))
    return plan


def repair(session: Session, plan: RepairPlan) -> RepairResult:
    """Rebuild `plan.members` in one transaction (see the module docstring)."""
    members = plan.members
    matviews = [m for m in members if not m.plain_view]
    result = RepairResult(warnings={m.key: [] for m in members})
    started = time.monotonic()
    uid = uuid.uuid4().hex[:8]
    schemas = dict.fromkeys(m.schema for m in matviews)
    stages = {schema: f"pgkeeper_repair_{uid}_{i}" for i, schema in enumerate(schemas)}
    old_oids = [m.old.oid for m in members if m.old]
    with session.transaction() as conn:
        with _step("read the views built on it"):
            views = {m.key: _stored_view(conn, m) for m in members if m.plain_view}
        for stage in stages.values():
            with _step("create the staging schema"):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(stage)))
        staged: set[tuple[str, str]] = set()
        for m in matviews:
            path = [stages[m.schema], m.schema] + ([stages["public"]] if "public" in stages else []) + ["public"]
            session.set_search_path(path)
            target = sql.Identifier(stages[m.schema], m.name)
            result.rows[m.key] = _build(session, m, target)
            if old_oids and _reads_any(conn, target, old_oids):
                # Its file names a parent with its schema, or it reads a plain view being recreated:
                # staged, it would read the old one.
                with _step(f"drop the staged copy of {m.display}"):
                    conn.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(target))
                result.warnings[m.key].append("built in place after the swap: its definition names a view "
                                              "being recreated with its schema (or reads a plain view being "
                                              "recreated), so readers waited for its build")
            else:
                staged.add(m.key)

        with _step("read the old views' privileges and indexes"):
            props = {m.key: _properties(conn, m.old.oid) for m in members if m.old}
            old_indexes = {m.key: stored_indexes(conn, m.old.oid) for m in matviews if m.old}
        for m in reversed(members):
            if m.old:
                session.bound()
                with _step(f"drop the old {m.display}"):
                    conn.execute(sql.SQL("DROP {} {}").format(m.kind_sql, m.old.ident))
        for m in members:
            final = sql.Identifier(m.schema, m.name)
            if m.plain_view:
                _recreate_view(session, m, views[m.key])
            elif m.key in staged:
                with _step(f"move the new {m.display} into place"):
                    conn.execute(sql.SQL("ALTER MATERIALIZED VIEW {} SET SCHEMA {}").format(
                        sql.Identifier(stages[m.schema], m.name), sql.Identifier(m.schema)))
            else:
                session.set_search_path(search_path_for(m.schema))
                result.rows[m.key] = _build(session, m, final)
            if m.key in old_indexes and old_indexes[m.key]:
                with _step(f"carry the indexes of {m.display} over"):
                    carry = carry_indexes(conn, old_indexes[m.key], final, _oid(conn, final), session.bound)
                result.carried[m.key], result.not_carried[m.key] = carry.carried, carry.not_carried
            if m.key in props:
                result.warnings[m.key] += _restore(conn, final, props[m.key], m.kind_sql)
        for stage in stages.values():
            with _step("drop the staging schema"):
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(stage)))
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


@dataclass
class _StoredView:
    query: str
    columns: list[str]
    options: list[str]
    extras: list[str]
    """What a recreation from the query alone would lose (triggers, rules, column defaults)."""


def _stored_view(conn: psycopg.Connection, m: Member) -> _StoredView:
    assert m.old is not None
    with qualified_names(conn):
        row = conn.execute(
            "SELECT pg_catalog.pg_get_viewdef(c.oid, true), "
            "ARRAY(SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = c.oid AND attnum > 0 "
            "      AND NOT attisdropped ORDER BY attnum), "
            "coalesce(c.reloptions, '{}'), "
            "array_remove(ARRAY["
            " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid) THEN 'triggers' END,"
            " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid "
            "                   AND r.rulename <> '_RETURN') THEN 'rules' END,"
            " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef d WHERE d.adrelid = c.oid) "
            "      THEN 'column defaults' END], NULL) "
            "FROM pg_catalog.pg_class c WHERE c.oid = %s", [m.old.oid]).fetchone()
    assert row is not None
    query, columns, options, extras = row
    bad = [o for o in options if not re.fullmatch(r"[a-z_]+=[A-Za-z0-9_]+", o)]
    if extras or bad:
        raise DependantNotRecreatable(m.display, f"it has {', '.join(extras + bad)}, which pgkeeper does not "
                                                 "carry over")
    return _StoredView(query.strip().rstrip(";"), list(columns), list(options), list(extras))


def _recreate_view(session: Session, m: Member, view: _StoredView) -> None:
    conn = session.conn
    session.bound()
    session.set_search_path(["pg_catalog"])  # the stored query was deparsed with every name qualified
    statement = sql.SQL("CREATE VIEW {} ({}){} AS {}").format(
        sql.Identifier(m.schema, m.name), sql.SQL(", ").join(map(sql.Identifier, view.columns)),
        sql.SQL(" WITH ({})").format(sql.SQL(", ").join(map(sql.SQL, view.options))) if view.options else sql.SQL(""),
        sql.SQL(view.query))
    try:
        with conn.transaction():
            conn.execute(statement)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        raise RepairStepError(f"recreate the view {m.display}", exc) from exc
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            raise
        raise DependantNotRecreatable(m.display, f"{exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate})"
                                      ) from exc


def _oid(conn: psycopg.Connection, rel: sql.Identifier) -> int:
    row = conn.execute("SELECT %s::pg_catalog.regclass::pg_catalog.oid", [rel.as_string(conn)]).fetchone()
    assert row is not None
    return int(row[0])


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
    assert m.definition is not None
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


def _restore(conn: psycopg.Connection, view: sql.Identifier, props: _Props, kind: sql.SQL) -> list[str]:
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
            conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(kind, view, sql.Literal(props.comment)))
    me = conn.execute("SELECT current_user").fetchone()
    if me and me[0] != props.owner:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, view, sql.Identifier(props.owner)))
        except psycopg.errors.InsufficientPrivilege:
            warnings.append(f"was owned by {props.owner}; now owned by {me[0]} (not allowed to give it back)")
    return warnings
