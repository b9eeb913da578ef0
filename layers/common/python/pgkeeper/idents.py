"""Parse qualified SQL names as a user writes them in a plan (`public.sessions`, `"Session"`).

Prisma creates mixed-case tables (`"Companion"."createdAt"`); Postgres folds unquoted names to
lower case. We apply the same rule, so a plan reads exactly like the SQL the user already writes.
"""

from __future__ import annotations

import re

from psycopg import sql

_PART = re.compile(r'\s*(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*')


def parse_name(text: str, *, max_parts: int = 2) -> tuple[str, ...]:
    """Split `schema.table` into its parts, unquoting and case-folding like Postgres does."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty name")
    parts: list[str] = []
    pos = 0
    while True:
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(f"not a valid SQL name: {text!r}")
        quoted, bare = m.groups()
        parts.append(quoted.replace('""', '"') if quoted is not None else bare.lower())
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            raise ValueError(f"not a valid SQL name: {text!r}")
        pos += 1
    if len(parts) > max_parts:
        raise ValueError(f"{text!r} has more than {max_parts} dotted parts")
    return tuple(parts)


def qualify(text: str, default_schema: str = "public") -> tuple[str, str]:
    """`name` or `schema.name` -> (schema, name)."""
    parts = parse_name(text)
    return (default_schema, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def display(schema: str, name: str) -> str:
    """A readable, unambiguous name for reports: quoted only where Postgres needs it."""

    def one(part: str) -> str:
        return part if re.fullmatch(r"[a-z_][a-z0-9_$]*", part) else '"' + part.replace('"', '""') + '"'

    return f"{one(schema)}.{one(name)}"


class QualifiedName:
    """Mixin for records with `schema` and `name` fields: a dict key, a name for reports
    (`display`) and the name for SQL (`ident`, always quoted through psycopg.sql)."""

    schema: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def display(self) -> str:
        return display(self.schema, self.name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)
