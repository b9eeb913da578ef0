"""Fixtures that give every test real services: its own PostgreSQL database, Redis, moto server.

Nothing here mocks the thing under test: databases are created and dropped per test, AWS calls
go over HTTP to moto's server through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


class Databases:
    """Creates the suite's databases: a fresh one per test, and templates to copy seeded ones from.

    Every database a test gets is new, a copy of template1 (or of the template it asks for), and
    used by that test only. What changes is *when* it is made. Creating a database creates a few
    hundred files; once the suite has dropped many databases, each file creation on ext4 first
    scans past the inodes deleted in the last seconds to minutes, and CREATE DATABASE went from
    ~0.04 s to ~0.2 s (kernel time, `perf`: recently_deleted / find_inode_bit). So the databases
    the collected tests will need are created up front, at the first test that needs one, before
    the suite has dropped any; they sit unused (no connection, so no statistics and no autovacuum)
    until handed out. Shortfalls (a second database in one test) are created on demand, never
    while a test's own work runs concurrently: tests that watch the cluster's xmin horizon (vacuum)
    see no CREATE DATABASE alongside them. A finished test's databases are dropped, with their
    sessions, by a background thread (`release`); a DROP DATABASE is a short transaction.
    """

    PARALLEL = 4
    """CREATE DATABASE run at once when making many (several at a time finish sooner than in a row)."""

    def __init__(self, admin_url: str, expected: int) -> None:
        self.admin_url = admin_url
        self._expected = expected  # template1 copies the collected tests will take
        self._ready: dict[str | None, list[str]] = {}
        self._templates: dict[str, str] = {}
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper: threading.Thread | None = None
        self._drop_errors: list[str] = []
        with psycopg.connect(admin_url, autocommit=True) as c:
            version = c.info.server_version
        # FILE_COPY writes the copy straight to its files: many idle copies leave no dirty shared
        # buffers for the checkpoint of every later DROP DATABASE to write (WAL_LOG would).
        self._strategy = sql.SQL(" STRATEGY FILE_COPY") if version >= 150000 else sql.SQL("")

    def _create(self, name: str, template: str | None) -> None:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(query + self._strategy)

    def _create_many(self, n: int, template: str | None) -> list[str]:
        names = [f"pgk_test_{uuid.uuid4().hex[:10]}" for _ in range(n)]
        made: list[str] = []

        def create(name: str) -> None:
            self._create(name, template)
            made.append(name)

        try:
            with ThreadPoolExecutor(min(n, self.PARALLEL)) as pool:
                for future in [pool.submit(create, name) for name in names]:
                    future.result()
        except BaseException:
            self.drop(made)
            raise
        return names

    def take(self, template: str | None = None) -> str:
        """The name of a new database nobody has used, a copy of template1 or of `template`."""
        if self._expected:  # the first database asked for, whatever its template: make the batch
            self._ready.setdefault(None, []).extend(self._create_many(self._expected, None))
            self._expected = 0
        ready = self._ready.setdefault(template, [])
        if not ready:
            ready.extend(self._create_many(1, template))
        return ready.pop()

    def template(self, key: str, build: Callable[[psycopg.Connection], None]) -> str:
        """A template database, built once per session by `build(conn)` (an autocommit connection).

        A copy has the template's catalog and data, not its cumulative statistics (pg_stat_*:
        n_live_tup, n_dead_tup, n_mod_since_analyze start at zero): seed from a template only
        what no test reads those counters from."""
        if key not in self._templates:
            [name] = self._create_many(1, None)
            try:
                with psycopg.connect(_with_db(self.admin_url, name), autocommit=True) as conn:
                    build(conn)
                with psycopg.connect(self.admin_url, autocommit=True) as c:  # no session may connect while copying
                    c.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            except BaseException:
                self.drop([name])
                raise
            self._templates[key] = name
        return self._templates[key]

    def drop(self, names: list[str]) -> None:
        # Connection.connect, not psycopg.connect: this also runs in the background thread while a test
        # runs, and a test may spy on psycopg.connect (test_connections records every connection).
        with psycopg.Connection.connect(self.admin_url, autocommit=True) as c:
            for name in names:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def release(self, names: list[str]) -> None:
        """A test is done with `names`: they are dropped (with their sessions) in the background, one
        after another, while the next tests run. A DROP DATABASE is mostly unlinking a few hundred
        files and a checkpoint, ~0.04 s the suite no longer waits for at every test's teardown."""
        if not names:
            return
        if self._dropper is None:
            self._dropper = threading.Thread(target=self._drop_queued, name="drop-test-databases", daemon=True)
            self._dropper.start()
        for name in names:
            self._to_drop.put(name)

    def _drop_queued(self) -> None:
        while (name := self._to_drop.get()) is not None:
            try:
                self.drop([name])
            except Exception as exc:  # reported when the session ends
                self._drop_errors.append(f"{name}: {exc}")

    def close(self) -> None:
        """Drops what is left: the queue, databases no test took (a skipped test, `-x`), the templates."""
        if self._dropper is not None:
            self._to_drop.put(None)
            self._dropper.join()
            self._dropper = None
        left = [name for names in self._ready.values() for name in names] + list(self._templates.values())
        self._ready.clear()
        self._templates.clear()
        if left:
            with ThreadPoolExecutor(min(len(left), self.PARALLEL)) as pool:
                list(pool.map(lambda name: self.drop([name]), left))
        if self._drop_errors:
            raise RuntimeError("test databases left behind: " + "; ".join(self._drop_errors))


def _fresh_databases_needed(items: list[pytest.Item]) -> int:
    """How many template1 copies to make up front: one per collected test using `db_url`, one more
    per test calling `make_database` itself (a restore target). A test that takes more, or a fixture
    calling `make_database` directly, has the rest made on demand; a test that takes none (its module's
    `db_url` copies a seeded template) leaves one that is dropped, unused, at the end."""
    needed = 0
    for item in items:
        needed += "db_url" in getattr(item, "fixturenames", ())
        needed += "make_database" in getattr(getattr(item, "_fixtureinfo", None), "argnames", ())
    return needed


def _workers() -> int:
    """How many pytest-xdist workers share the collected tests (1 without xdist)."""
    return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(scope="session")
def databases(admin_url: str, request: pytest.FixtureRequest) -> Iterator[Databases]:
    # Each xdist worker collects every test and runs about its share of them; the rest are made on demand.
    dbs = Databases(admin_url, -(-_fresh_databases_needed(request.session.items) // _workers()))
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def database_template(databases: Databases) -> Callable[[str, Callable[[psycopg.Connection], None]], str]:
    """`database_template(key, build)`: the name of a template database, built once per session."""
    return databases.template


@pytest.fixture()
def make_database(admin_url: str, databases: Databases) -> Iterator[Callable[..., str]]:
    """Creates throwaway databases (`make_database(template=name)` copies a template); all are
    dropped (with their sessions) once the test is done."""
    created: list[str] = []

    def make(template: str | None = None) -> str:
        name = databases.take(template)
        created.append(name)
        return _with_db(admin_url, name)

    yield make
    databases.release(created)


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




# --- the built bundle: `make build`, the runtime's packages, functions run as Lambda lays them out ---

BUILD_FIXTURES = {"build", "lambda_runtime", "lambda_function"}


def _slow_steps_of(items: list[pytest.Item]) -> list[str]:
    """The builds (by architecture) and the runtime install the selected tests ask for."""
    from build_steps import HOST_ARCH, python313

    steps: list[str] = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "build" in names and hasattr(item, "callspec") and "arch" in item.callspec.params:
            steps.append(item.callspec.params["arch"])
        if names & {"lambda_runtime", "lambda_function"} and python313() is not None:
            steps += [HOST_ARCH, "runtime"]
    return steps


@pytest.fixture(scope="session")
def slow_steps(request: pytest.FixtureRequest) -> Iterator[Any]:
    from build_steps import SAM, SlowSteps

    if not SAM.exists():
        pytest.skip("the SAM tools venv is missing: run `make tools` (make test does)")
    steps = SlowSteps()
    steps.start(_slow_steps_of(request.session.items))
    yield steps
    steps.stop()


@pytest.fixture(scope="session")
def build(slow_steps: Any) -> Callable[[str], Path]:
    """`build(arch)`: the output of `make build ARCH=arch` into a scratch dir, once per session."""
    return slow_steps.get


@pytest.fixture(scope="session")
def lambda_runtime(slow_steps: Any) -> Callable[[], Path]:
    """A directory holding what Lambda's python3.13 image has besides the stdlib (boto3, awslambdaric)."""
    return lambda: slow_steps.get("runtime")


@pytest.fixture(scope="session")
def lambda_bundle(slow_steps: Any, build: Callable[[str], Path], lambda_runtime: Callable[[], Path],
                  moto_server: str) -> dict[str, Any]:
    """What `lambda_function` starts from: this machine's architecture's build, the runtime's
    packages, a CPython 3.13. Fails (never skips) without 3.13: this tier is what ships."""
    from build_steps import HOST_ARCH, python313
    from runtime_api import sandbox_problem

    python = python313()
    if python is None:
        pytest.fail("no CPython 3.13 (the Lambda runtime's version): run scripts/python313.sh, "
                    "or set PGKEEPER_PYTHON313 to one")
    problem = sandbox_problem()
    if problem:
        pytest.skip(problem)
    return {"build_dir": build(HOST_ARCH), "runtime_dir": lambda_runtime(), "python": python,
            "scratch": slow_steps.scratch("lambda")}


@pytest.fixture()
def lambda_function(lambda_bundle: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """`lambda_function(logical_id, env={...})`: a started `runtime_api.LambdaFunction`, the built
    function as Lambda runs it (read-only /var/task and /opt, writable /tmp only, CPython 3.13,
    awslambdaric). Shut down when the test ends."""
    from runtime_api import LambdaFunction

    started: list[LambdaFunction] = []

    def start(logical_id: str, env: dict[str, str] | None = None) -> LambdaFunction:
        fn = LambdaFunction(lambda_bundle["build_dir"], logical_id, python=lambda_bundle["python"],
                            runtime_dir=lambda_bundle["runtime_dir"], scratch=lambda_bundle["scratch"], env=env or {})
        started.append(fn)
        fn.start()
        return fn

    yield start
    for fn in started:
        fn.stop()

BUILD_GROUP = "layer-builds"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), the tests sharing `sam build`s (one module
    fixture) run on one worker, and first: the builds take the longest and start at their first test,
    so they run while the other worker takes the rest of the suite."""
    builds = [item for item in items if BUILD_FIXTURES & set(getattr(item, "fixturenames", ()))]
    for item in builds:
        item.add_marker(pytest.mark.xdist_group(BUILD_GROUP))
    chosen = set(map(id, builds))
    items[:] = builds + [item for item in items if id(item) not in chosen]


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """The groups must hold: a pytest/pytest-xdist pair whose loadgroup does not tag node ids
    (`<id>@<group>`) would spread a group over workers, building twice and racing on the xid counter."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    untagged = [item.nodeid for item in session.items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if untagged:
        raise pytest.UsageError(f"pytest-xdist's loadgroup did not tag {untagged[0]} with its group: "
                                "this pytest and pytest-xdist do not work together (see pyproject.toml)")
