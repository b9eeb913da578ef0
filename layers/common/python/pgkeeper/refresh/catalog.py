"""What the database says about its views: which exist, what depends on what, what can go CONCURRENTLY.

Dependencies come from pg_depend on each view's `_RETURN` rewrite rule, the same record Postgres
uses to refuse `DROP` of a view that others use. Plain views are followed through, so a
materialized view built on a view built on another materialized view still refreshes after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..idents import QualifiedName

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispopulated
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('m', 'v')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

_EDGES = """
SELECT DISTINCT r.ev_class, d.refobjid
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class
JOIN pg_catalog.pg_class used ON used.oid = d.refobjid AND used.relkind IN ('m', 'v')
"""


@dataclass(frozen=True)
class Relation(QualifiedName):
    oid: int
    schema: str
    name: str
    kind: str  # 'm' materialized view, 'v' view
    populated: bool


@dataclass
class Catalog:
    """A snapshot of every view and materialized view and the edges between them."""

    relations: dict[int, Relation] = field(default_factory=dict)
    uses: dict[int, set[int]] = field(default_factory=dict)
    used_by: dict[int, set[int]] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: psycopg.Connection) -> Catalog:
        cat = cls()
        for oid, schema, name, kind, populated in conn.execute(_RELATIONS).fetchall():
            cat.relations[oid] = Relation(oid, schema, name, kind, populated)
        for view, used in conn.execute(_EDGES).fetchall():
            if view in cat.relations and used in cat.relations:
                cat.uses.setdefault(view, set()).add(used)
                cat.used_by.setdefault(used, set()).add(view)
        return cat

    def find(self, schema: str, name: str) -> Relation | None:
        for rel in self.relations.values():
            if rel.schema == schema and rel.name == name:
                return rel
        return None

    def matviews_in(self, schemas: Iterable[str]) -> list[Relation]:
        wanted = set(schemas)
        return sorted((r for r in self.relations.values() if r.kind == "m" and r.schema in wanted),
                      key=lambda r: (r.schema, r.name))

    def dependants(self, oid: int) -> list[Relation]:
        """Every view and materialized view that reads `oid`, directly or not, in creation order."""
        found = _closure(self.used_by, oid)
        return [self.relations[o] for o in self.order(sorted(found, key=lambda o: self.relations[o].key))]

    def order(self, oids: list[int]) -> list[int]:
        """`oids` with every relation after those it reads (stable: ties keep the given order)."""
        members = list(dict.fromkeys(oids))
        inside = set(members)
        need = {o: _closure(self.uses, o) & inside for o in members}  # everything o reads, at any depth
        done: list[int] = []
        placed: set[int] = set()
        while len(done) < len(members):
            progressed = False
            for o in members:
                if o not in placed and need[o] <= placed:
                    done.append(o)
                    placed.add(o)
                    progressed = True
                    break
            if not progressed:  # a cycle cannot exist in pg_depend; keep the rest as given
                done.extend(o for o in members if o not in placed)
                break
        return done


def _closure(edges: dict[int, set[int]], oid: int) -> set[int]:
    """Every relation reachable from `oid` along `edges` (`uses` or `used_by`), at any depth."""
    out: set[int] = set()
    stack = [oid]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in out:
                out.add(nxt)
                stack.append(nxt)
    return out


def relkind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    """What `schema.name` is (table, view, ...), or None when nothing has that name."""
    row = conn.execute(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        [schema, name],
    ).fetchone()
    if row is None:
        return None
    return {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table",
            "i": "index", "I": "index", "S": "sequence", "c": "composite type"}.get(row[0], row[0])


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone()
    return row is not None


@dataclass(frozen=True)
class UniqueKey:
    index: str
    columns: tuple[str, ...]


def concurrent_keys(conn: psycopg.Connection, oid: int) -> list[UniqueKey]:
    """Unique indexes that make REFRESH ... CONCURRENTLY possible: valid, plain columns, no WHERE."""
    rows = conn.execute(
        """
        SELECT ic.relname,
               ARRAY(SELECT a.attname FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(n, o)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                     ORDER BY k.o)
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indisready
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND NOT (0 = ANY (i.indkey::pg_catalog.int2[]))
        ORDER BY i.indnatts, ic.relname
        """,
        [oid],
    ).fetchall()
    return [UniqueKey(index=name, columns=tuple(cols)) for name, cols in rows]


def key_has_nulls(conn: psycopg.Connection, rel: Relation, key: UniqueKey) -> bool:
    """Matview columns never carry NOT NULL, so ask the data: rows with a NULL key never match in a
    concurrent refresh's diff and are deleted and re-inserted every time."""
    cond = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in key.columns)
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(rel.ident, cond)
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class StoredIndex:
    name: str
    ddl: str
    """`pg_get_indexdef`: the statement that re-creates it, on its current table."""
    signature: tuple
    """(unique, method, key expressions, predicate): names and schemas left out."""


def stored_indexes(conn: psycopg.Connection, oid: int) -> list[StoredIndex]:
    """Every index of `oid`, by name, with its DDL and its name-free signature, deparsed with only
    pg_catalog on the search_path: every other name comes out schema-qualified, so the DDL means the
    same whatever the search_path it is later run under."""
    with qualified_names(conn):
        rows = _index_rows(conn, oid)
    return [StoredIndex(name, ddl, (u, m, tuple(k), p or "")) for name, ddl, u, m, k, p in rows]


@contextmanager
def qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """search_path = pg_catalog for the statements inside (this transaction only), then restored."""
    row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
    yield  # on an error the transaction is aborted (and its setting with it): nothing to restore
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", [row[0] if row else ""])


def _index_rows(conn: psycopg.Connection, oid: int) -> list[tuple]:
    return conn.execute(
        """
        SELECT ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, am.amname,
               ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true)
                     FROM pg_catalog.generate_series(1, i.indnatts) k),
               pg_catalog.pg_get_expr(i.indpred, i.indrelid, true)
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = %s
        ORDER BY ic.relname
        """,
        [oid],
    ).fetchall()


def index_signatures(conn: psycopg.Connection, oid: int) -> list[tuple]:
    """Each index as (unique, method, key expressions, predicate): names and schemas left out, so a
    view's indexes compare equal to the same statements run against a copy elsewhere."""
    return sorted(ix.signature for ix in stored_indexes(conn, oid))


def view_columns(conn: psycopg.Connection, oid: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", [oid]).fetchall()]


def unique_index_hint(conn: psycopg.Connection, rel: Relation) -> str:
    """A CREATE UNIQUE INDEX to suggest for `rel`, on columns it really has: `id` when there is one,
    else a column named like an id (`companionId`, `user_id`), else its first column."""
    cols = view_columns(conn, rel.oid)
    pick = next((c for c in cols if c == "id"), None) or next(
        (c for c in cols if c.lower().endswith("id") and len(c) > 2), None) or (cols[0] if cols else None)
    if pick is None:
        return f"CREATE UNIQUE INDEX ON {rel.display} (<columns that identify a row>)"
    names = [_sql_name(c) for c in cols]
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return (f"CREATE UNIQUE INDEX ON {rel.display} ({_sql_name(pick)}) if {_sql_name(pick)} identifies a row, "
            f"else on the columns that do, together (its columns: {listed})")


def _sql_name(name: str) -> str:
    """`name` as SQL: quoted only where Postgres needs it."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'
