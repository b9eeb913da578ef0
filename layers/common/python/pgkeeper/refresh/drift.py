"""Does a stored view still match its definition file? Compared as Postgres understands both.

Text comparison would call every reformatting a drift and miss a `SELECT *` that now expands to
one more column. Instead the file's view is created WITH NO DATA in a scratch schema, inside a
transaction that is always rolled back, and Postgres deparses both: `pg_get_viewdef` of the copy
and of the stored view (same session, same search_path, so names print the same way), the output
columns with their types, and the indexes without their names. Nothing of it is ever committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .catalog import Relation, StoredIndex, UniqueKey, concurrent_keys, index_signatures, stored_indexes
from .definitions import Definition, DefinitionError, retarget_index
from .session import Session, set_search_path


class ScratchUnavailable(Exception):  # noqa: N818 - caught and reported as a warning, never raised out
    """The role may not create a scratch schema (no CREATE on the database): drift cannot be checked."""


@dataclass(frozen=True)
class NotCarried:
    name: str
    ddl: str
    why: str


@dataclass
class IndexCarry:
    carried: list[str] = field(default_factory=list)
    """Indexes of the old view re-created on the new one (`name`, or `name (now new_name)`)."""
    not_carried: list[NotCarried] = field(default_factory=list)
    """Indexes of the old view that cannot exist on the new one: reported, never dropped silently."""


@dataclass
class Drift:
    reasons: list[str] = field(default_factory=list)
    indexes: IndexCarry = field(default_factory=IndexCarry)
    """What a repair would do with the stored view's own indexes (tried on the file's copy)."""
    keys_after: list[UniqueKey] = field(default_factory=list)
    """Unique keys usable by CONCURRENTLY on the view a repair would build."""

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)


def search_path_for(schema: str) -> list[str]:
    """Unqualified names in a definition file resolve in the view's own schema, then in public."""
    return [schema, "public"]


def build_scratch(conn: psycopg.Connection, definition: Definition, name: str) -> int:
    """Create the file's view (no data) and its indexes in a fresh scratch schema; returns its oid."""
    scratch = f"pgkeeper_scratch_{uuid.uuid4().hex[:10]}"
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ScratchUnavailable(exc.diag.message_primary or "permission denied") from exc
    target = sql.Identifier(scratch, name)
    conn.execute(definition.build_view(target, with_data=False))
    for statement in definition.build_indexes(target):
        conn.execute(statement)
    row = conn.execute("SELECT %s::pg_catalog.regclass::pg_catalog.oid",
                       [target.as_string(conn)]).fetchone()
    assert row is not None
    return int(row[0])


def carry_indexes(conn: psycopg.Connection, old: list[StoredIndex], target: sql.Identifier, new_oid: int,
                  before_each: Callable[[], None] | None = None) -> IndexCarry:
    """Re-create on `target` (oid `new_oid`) each index of `old` it does not already have (same
    definition, names ignored), under its own name when that is free. One that cannot be created
    (a column the new view lacks, duplicates under a unique index) is listed, not raised; lock and
    timeout errors are raised (the caller's transaction decides)."""
    out = IndexCarry()
    have = index_signatures(conn, new_oid)
    for ix in old:
        if ix.signature in have:
            have.remove(ix.signature)
            continue
        row = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relname = %s AND c.relnamespace = "
            "(SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = %s))", [ix.name, new_oid]).fetchone()
        free = bool(row and row[0])
        if before_each:
            before_each()
        try:
            statement = retarget_index(ix.ddl, target, sql.Identifier(ix.name) if free else None)
            with conn.transaction():
                conn.execute(statement)
        except DefinitionError as exc:
            out.not_carried.append(NotCarried(ix.name, ix.ddl, str(exc)))
            continue
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            raise
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            why = (exc.diag.message_primary or str(exc)).splitlines()[0]
            out.not_carried.append(NotCarried(ix.name, ix.ddl, f"cannot be created on the new view: {why} "
                                                                f"(SQLSTATE {exc.sqlstate})"))
            continue
        have.append(ix.signature)
        out.carried.append(ix.name if free else f"{ix.name} (under a new name: an index from the definition "
                                                   "file has that name)")
    return out


def compare(session: Session, rel: Relation, definition: Definition) -> Drift:
    """Why `rel` differs from `definition` (empty when it matches). Changes nothing."""
    with session.transaction(search_path=search_path_for(rel.schema)) as conn:
        drift = _compare_in(conn, rel, definition)
        raise psycopg.Rollback()
    return drift


def compare_on(conn: psycopg.Connection, rel: Relation, definition: Definition) -> Drift:
    """`compare` on a plain connection (`pgkeeper plan check`), in a transaction rolled back."""
    with conn.transaction():
        set_search_path(conn, search_path_for(rel.schema))
        drift = _compare_in(conn, rel, definition)
        raise psycopg.Rollback()
    return drift


def _compare_in(conn: psycopg.Connection, rel: Relation, definition: Definition) -> Drift:
    copy = build_scratch(conn, definition, rel.name)
    drift = Drift()
    old_cols, new_cols = _columns(conn, rel.oid), _columns(conn, copy)
    if old_cols != new_cols:
        drift.reasons.append(_column_change(old_cols, new_cols, definition))
    elif _viewdef(conn, rel.oid) != _viewdef(conn, copy):
        drift.reasons.append(f"its stored query differs from {definition.path.name}")
    have = index_signatures(conn, rel.oid)
    for sig in index_signatures(conn, copy):
        if sig in have:
            have.remove(sig)
        else:
            drift.reasons.append(f"index {describe_index(sig)} from {definition.path.name} is missing")
    scratch = conn.execute("SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE c.oid = %s", [copy]).fetchone()
    assert scratch is not None
    drift.indexes = carry_indexes(conn, stored_indexes(conn, rel.oid), sql.Identifier(scratch[0], rel.name), copy)
    drift.keys_after = concurrent_keys(conn, copy)
    return drift


def try_definition(conn: psycopg.Connection, definition: Definition, schema: str, name: str) -> None:
    """Apply the file in a rolled-back transaction (for `pgkeeper plan check`); raises what Postgres says."""
    with conn.transaction():
        set_search_path(conn, search_path_for(schema))
        build_scratch(conn, definition, name)
        raise psycopg.Rollback()


def describe_index(sig: tuple) -> str:
    unique, method, keys, predicate = sig
    text = ("UNIQUE " if unique else "") + ("" if method == "btree" else f"USING {method} ") + f"({', '.join(keys)})"
    return text + (f" WHERE {predicate}" if predicate else "")


def _viewdef(conn: psycopg.Connection, oid: int) -> str:
    row = conn.execute("SELECT pg_catalog.pg_get_viewdef(%s, true)", [oid]).fetchone()
    return row[0] if row else ""


def _columns(conn: psycopg.Connection, oid: int) -> list[tuple[str, str]]:
    return [tuple(r) for r in conn.execute(
        "SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [oid],
    ).fetchall()]


def _column_change(old: list[tuple[str, str]], new: list[tuple[str, str]], definition: Definition) -> str:
    old_names, new_names = dict(old), dict(new)
    parts = []
    added = [n for n in new_names if n not in old_names]
    removed = [n for n in old_names if n not in new_names]
    retyped = [f"{n} {old_names[n]} -> {new_names[n]}" for n in new_names
               if n in old_names and old_names[n] != new_names[n]]
    if added:
        parts.append("adds column" + ("s " if len(added) > 1 else " ") + ", ".join(added))
    if removed:
        parts.append("drops column" + ("s " if len(removed) > 1 else " ") + ", ".join(removed))
    if retyped:
        parts.append("changes " + ", ".join(retyped))
    if not parts:
        parts.append("orders its columns differently")
    return f"{definition.path.name} " + "; ".join(parts) + " (the stored view is out of date)"
