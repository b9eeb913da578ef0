"""Helpers shared by benchmarks: a throwaway database on the local server, percentiles."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URL = os.environ.get("PGKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(prefix: str = "pgk_bench") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_url(dbname: str) -> str:
    """ADMIN_URL pointed at another database on the same server."""
    params = conninfo_to_dict(ADMIN_URL)
    params["dbname"] = dbname
    return make_conninfo(**params)


@contextmanager
def pgkeeper_env(plan: str | os.PathLike[str], url: str | None = None) -> Iterator[None]:
    """Point pgkeeper's jobs at `plan` (and the database `url`) for the block, then give the caller's
    PGKEEPER_PLAN and DATABASE_URL back; the cached plan is dropped on the way in and out."""
    from pgkeeper import config
    from pgkeeper.local.invoke import environment

    values: dict[str, str | None] = {"PGKEEPER_PLAN": str(plan)}
    if url is not None:
        values["DATABASE_URL"] = url
    with environment(values):
        config.reset()
        try:
            yield
        finally:
            config.reset()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
