"""Fixtures that give every test real services: its own PostgreSQL database, Redis, moto server.

Nothing here mocks the thing under test: databases are created and dropped per test, AWS calls
go over HTTP to moto's server through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("PGKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PGKEEPER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def admin_url() -> str:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({str(exc).strip().splitlines()[0]}); "
            "start it (`make services`) or set PGKEEPER_TEST_PG",
            returncode=3,
        )
    return ADMIN_URL


@pytest.fixture()
def make_database(admin_url: str) -> Iterator[Callable[[], str]]:
    """Creates throwaway databases; all are dropped (with their sessions) after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"pgk_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_db(admin_url, name)

    yield make
    with psycopg.connect(admin_url, autocommit=True) as c:
        for name in created:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture()
def db_url(make_database: Callable[[], str]) -> str:
    """A fresh, empty database for this test."""
    return make_database()


@pytest.fixture()
def pg(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database, for setting up and checking outcomes."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto in server mode; boto3 reaches it over real HTTP through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "AWS_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def aws(moto_server: str) -> Iterator[str]:
    """moto server with its state reset, and pgkeeper's cached clients dropped."""
    import urllib.request

    from pgkeeper import secrets

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).read()
    secrets.reset_cache()
    yield moto_server
    secrets.reset_cache()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means the same: no Redis here
        pytest.exit(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (`make services`)", returncode=3)
    return REDIS_URL


@pytest.fixture()
def write_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a plan (dict or YAML text) and point PGKEEPER_PLAN at it; extra files by name."""
    from pgkeeper import config

    def write(plan: dict | str, files: dict[str, str] | None = None) -> Path:
        for name, text in (files or {}).items():
            f = tmp_path / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        path = tmp_path / "plan.yaml"
        path.write_text(plan if isinstance(plan, str) else yaml.safe_dump(plan, sort_keys=False))
        monkeypatch.setenv("PGKEEPER_PLAN", str(path))
        config.reset()
        return path

    yield write
    config.reset()


@pytest.fixture()
def use_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point DATABASE_URL (what the default plan reads) at this test's database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("PGKEEPER_DATABASE_SECRET_ARN", raising=False)
    return db_url


@pytest.fixture()
def lambda_context() -> Callable[..., object]:
    """Factory of local Lambda contexts (real countdown): `lambda_context(timeout_s=5)`."""
    from pgkeeper.local.context import LocalContext

    return LocalContext
