"""Finding pg_dump / pg_restore, knowing their versions, and handing them a connection safely.

Where the binaries come from, in order: $PGKEEPER_PG_BIN_DIR, the Lambda layer at
/opt/pgtools/bin (docs/OPERATIONS.md says how it is built), then PATH. The password never goes on
a command line (other processes can read argv): it travels in PGPASSWORD.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ConfigError
from .errors import VersionMismatchError

if TYPE_CHECKING:
    import psycopg

BIN_ENV = "PGKEEPER_PG_BIN_DIR"
LAYER_BIN = Path("/opt/pgtools/bin")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str
    major: int
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment the binary needs (the layer's bundled libraries)."""


def bin_dirs() -> list[Path]:
    explicit = os.environ.get(BIN_ENV, "").strip()
    if explicit:
        # An explicit directory is the only place looked: a typo must not fall back silently.
        return [Path(explicit)]
    return [LAYER_BIN]


def find(name: str) -> Tool:
    """The binary `name` (pg_dump, pg_restore) with its version, or a clear error."""
    path: str | None = None
    for d in bin_dirs():
        candidate = d / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            path = str(candidate)
            break
    if path is None and not os.environ.get(BIN_ENV, "").strip():
        path = shutil.which(name)
    if path is None:
        where = os.environ.get(BIN_ENV) or f"{LAYER_BIN} or PATH"
        raise ConfigError(f"{name} not found in {where}: attach the pgtools layer, install the PostgreSQL "
                          f"client, or set {BIN_ENV}")
    env = _library_env(Path(path).parent)
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run {path} --version: {exc}") from exc
    m = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or not m:
        raise ConfigError(f"{path} --version said {(proc.stdout + proc.stderr).strip()[:200]!r}, "
                          "not a PostgreSQL version")
    major = int(m.group(1))
    version = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return Tool(name=name, path=path, version=version, major=major, env=env)


def _library_env(bin_dir: Path) -> dict[str, str]:
    """The layer keeps libpq and its TLS libraries in ../lib beside bin/: put it on the loader path."""
    lib = bin_dir.parent / "lib"
    if lib.is_dir() and any(lib.glob("libpq*")):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        return {"LD_LIBRARY_PATH": f"{lib}:{current}" if current else str(lib)}
    return {}


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def format_server_version(version_num: int) -> str:
    if version_num >= 100000:
        return f"{version_num // 10000}.{version_num % 10000}"
    return f"{version_num // 10000}.{version_num // 100 % 100}.{version_num % 100}"


def check_dump_version(tool: Tool, server_version_num: int) -> None:
    """pg_dump refuses (or worse, half-dumps) servers newer than itself: say so before uploading."""
    major = server_major(server_version_num)
    if tool.major < major:
        raise VersionMismatchError(
            f"{tool.name} {tool.version} ({tool.path}) is older than the server "
            f"(PostgreSQL {format_server_version(server_version_num)}): {tool.name} must be at least major "
            f"version {major}. Use the pgtools layer (PostgreSQL 18 client) or set {BIN_ENV} to a newer client"
        )


def fetch_server_version_num(conn: psycopg.Connection) -> int:
    """The server's PG_VERSION_NUM (170002 for 17.2), what the version checks compare with."""
    row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None  # SHOW always returns one row
    return int(row[0])


def check_restore_version(tool: Tool, dump_major: int) -> None:
    """pg_restore cannot read archives written by a newer pg_dump."""
    if tool.major < dump_major:
        raise VersionMismatchError(
            f"{tool.name} {tool.version} ({tool.path}) cannot read an archive made by pg_dump {dump_major}: "
            f"use a PostgreSQL {dump_major} (or newer) client, or set {BIN_ENV}"
        )


def libpq_target(conninfo: str, application_name: str) -> tuple[str, dict[str, str]]:
    """(`-d` argument without the password, env with PGPASSWORD): nothing secret in argv or logs."""
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    params["application_name"] = application_name[:63]
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo("", **params), env


def child_env(tool: Tool, extra: dict[str, str]) -> dict[str, str]:
    """The environment for a pg_dump/pg_restore child: ours (PGSSLROOTCERT etc. apply as they do to
    psycopg's libpq), plus the layer's library path, plus `extra` (PGPASSWORD)."""
    env = dict(os.environ)
    env.update(tool.env)
    env.update(extra)
    return env
