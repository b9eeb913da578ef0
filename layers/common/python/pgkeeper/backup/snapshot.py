"""The snapshot a backup is taken in, and exact row counts in that same snapshot.

pgkeeper opens a REPEATABLE READ transaction, exports its snapshot and hands the id to
`pg_dump --snapshot`; the transaction stays open until the dump is done. Counting rows in that
transaction therefore counts exactly what the dump contains: the manifest's counts can be
compared with a restore, row for row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..db import Database
from ..errors import first_line
from ..log import logger
from ..plan.backup import BackupPlan
from ..plan.base import split_name
from .pgtools import fetch_server_version_num

# Ordinary tables (partitions included; a partitioned parent holds no rows itself) that pg_dump
# writes TABLE DATA for: not system, not temporary, not members of an extension.
_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
  AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# Extension configuration tables: pg_dump writes (filtered) data for them, but they are the
# extension's, not the application's, so they are listed apart and not counted.
_EXTENSION_CONFIG = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_extension e
CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS cfg(oid)
JOIN pg_catalog.pg_class c ON c.oid = cfg.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
"""


@dataclass(frozen=True)
class TableCount:
    schema: str
    name: str
    rows: int
    checksum: str | None = None
    """`backup.content_checksums`: an order-independent digest of every row's text (see CHECKSUM)."""


@dataclass(frozen=True)
class Selection:
    """Which tables the dump holds rows for, and the pg_dump flags that say the same."""

    tables: list[tuple[str, str]]
    extension_tables: list[tuple[str, str]]
    pg_dump_args: list[str]


def dump_pattern(schema: str, name: str | None = None) -> str:
    """An exact pg_dump pattern: inside double quotes nothing is a wildcard and case is kept."""

    def q(part: str) -> str:
        return '"' + part.replace('"', '""') + '"'

    return q(schema) if name is None else f"{q(schema)}.{q(name)}"


def select_tables(conn: psycopg.Connection, plan: BackupPlan) -> Selection:
    excluded_schemas = set(plan.exclude_schemas)
    excluded = {split_name(t) for t in plan.exclude_tables}
    no_data = {split_name(t) for t in plan.exclude_table_data}
    rows = conn.execute(_TABLES).fetchall()
    tables = [(s, n) for s, n in rows if s not in excluded_schemas and (s, n) not in excluded and (s, n) not in no_data]
    ext = [(s, n) for s, n in conn.execute(_EXTENSION_CONFIG).fetchall() if s not in excluded_schemas]
    args: list[str] = []
    for schema in sorted(excluded_schemas):
        args.append(f"--exclude-schema={dump_pattern(schema)}")
    for schema, name in sorted(excluded):
        args.append(f"--exclude-table={dump_pattern(schema, name)}")
    for schema, name in sorted(no_data):
        args.append(f"--exclude-table-data={dump_pattern(schema, name)}")
    return Selection(tables=tables, extension_tables=ext, pg_dump_args=args)


class Snapshot:
    """A REPEATABLE READ, READ ONLY transaction whose snapshot is exported for pg_dump.

    Use as a context manager; the transaction (and so the exported snapshot) lives until exit.
    """

    def __init__(self, db: Database, *, timeout_s: float) -> None:
        self._db = db
        self._timeout_ms = max(1000, int(timeout_s * 1000))
        self.conn: psycopg.Connection | None = None
        self.snapshot_id = ""
        self.server_version_num = 0
        self.started_at = 0.0

    def __enter__(self) -> Snapshot:
        conn = self._db.connect(autocommit=False, statement_timeout_ms=self._timeout_ms, purpose="snapshot")
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            # The transaction sits idle while pg_dump works on another connection: the plan's
            # idle-in-transaction timeout would end it (and the exported snapshot) too early.
            conn.execute("SELECT pg_catalog.set_config('idle_in_transaction_session_timeout', %s, true)",
                         [str(self._timeout_ms)])
            row = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
            assert row is not None  # a function call without FROM: always one row
            self.snapshot_id = row[0]
            self.server_version_num = fetch_server_version_num(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.started_at = time.time()
        return self

    def cancel_count(self) -> None:
        """Stop a running count (`count_rows` on another thread), so a failure is raised now, not
        after a full table scan."""
        if self.conn is not None:
            try:
                self.conn.cancel_safe(timeout=5)
            except psycopg.Error:
                logger.warning("could not cancel the row count")

    def release(self) -> None:
        """End the transaction now (a sharded backup's workers hold the snapshot themselves)."""
        self.__exit__(None)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.conn is None:
            return
        try:
            self.conn.rollback()
        except psycopg.Error as exc:
            # The session was ended under us (an operator, a failover): when the dump already failed,
            # that failure is the cause to report, not the snapshot's AdminShutdown on the way out.
            if exc_type is None:
                raise
            logger.warning("the snapshot's session was already gone", extra={"error": first_line(exc)})
        finally:
            self.conn.close()
            self.conn = None

    def count_rows(self, tables: list[tuple[str, str]], *, checksums: bool = False) -> list[TableCount]:
        """Exact counts, one `count(*)` per table, all in the exported snapshot (with `checksums`, in
        the same scan, each table's content checksum)."""
        assert self.conn is not None, "count_rows() outside `with Snapshot(...)`"
        # The counts run while pg_dump streams and finish long before it: they need to be cheap, not
        # fast. Parallel workers would take CPU from the dump's own backend for little gain.
        self.conn.execute("SELECT pg_catalog.set_config('max_parallel_workers_per_gather', '0', true)")
        if checksums:
            _fix_text_output(self.conn, local=True)
        conn = self.conn
        return [_measure(conn, schema, name, checksums) for schema, name in tables]


def measure_tables(conn: psycopg.Connection, tables: list[tuple[str, str]], *,
                   checksums: bool) -> dict[tuple[str, str], TableCount]:
    """Row counts, and with `checksums` content checksums, of `tables` in a restored database."""
    if checksums:
        _fix_text_output(conn, local=False)
    return {(schema, name): _measure(conn, schema, name, checksums) for schema, name in tables}


# Order-independent: the sum of the first 64 bits of each row's md5 (as numeric: no overflow). Rows
# are compared as their text, so both sides fix every setting that changes a value's text. ROW(t.*),
# not t: a column named `t` would be read instead of the row.
_CHECKSUM = sql.SQL("SELECT pg_catalog.count(*), coalesce(pg_catalog.sum("
                    "('x' || pg_catalog.left(pg_catalog.md5(ROW(t.*)::text), 16))::bit(64)::bigint::numeric), 0)::text "
                    "FROM {} t")
_TEXT_OUTPUT = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "TimeZone": "UTC",
                "extra_float_digits": "3", "bytea_output": "hex"}


def _fix_text_output(conn: psycopg.Connection, *, local: bool) -> None:
    for name, value in _TEXT_OUTPUT.items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, %s)", [name, value, local])


def _measure(conn: psycopg.Connection, schema: str, name: str, checksum: bool) -> TableCount:
    ident = sql.Identifier(schema, name)
    query = _CHECKSUM.format(ident) if checksum else sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(ident)
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate without GROUP BY: always one row
    return TableCount(schema, name, int(row[0]), f"md5sum64:{row[1]}" if checksum else None)



@dataclass(frozen=True)
class Difference:
    schema: str
    name: str
    what: str  # "rows" or "checksum"
    manifest: int | str
    restored: int | str | None


def compare(expected: list[TableCount], restored: dict[tuple[str, str], TableCount]) -> list[Difference]:
    """Where a restored database differs from the manifest, table by table in the manifest's order:
    row counts always, content checksums where the manifest has them."""
    out = []
    for want in expected:
        got = restored.get((want.schema, want.name))
        if got is None or got.rows != want.rows:
            out.append(Difference(want.schema, want.name, "rows", want.rows, got.rows if got else None))
        elif want.checksum is not None and got.checksum != want.checksum:
            out.append(Difference(want.schema, want.name, "checksum", want.checksum, got.checksum))
    return out
