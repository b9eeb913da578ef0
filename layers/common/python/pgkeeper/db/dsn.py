"""Find the database URL (env or Secrets Manager) and adapt it for session-level work."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ConfigError
from ..plan.database import DatabaseSettings
from ..secrets import get_secret, secret_object

_NEON_POOLER = re.compile(r"^(ep-[a-z0-9-]+?)-pooler(\..+)$")


def resolve_url(settings: DatabaseSettings, *, fresh: bool = False) -> str:
    """The URL from the secret named by `secret_arn_env`, else from `url_env`; else a clear error.
    `fresh`: read the secret now, not from the cache (after a rotation)."""
    arn = os.environ.get(settings.secret_arn_env, "").strip()
    if arn:
        return url_from_secret(get_secret(arn, force=fresh), arn)
    url = os.environ.get(settings.url_env, "").strip()
    if url:
        return url
    raise ConfigError(
        f"no database configured: set {settings.url_env} to a postgres:// URL "
        f"or {settings.secret_arn_env} to a Secrets Manager secret ARN"
    )


def url_from_secret(value: str, arn: str = "secret") -> str:
    """A secret holds a URL, or the JSON shape RDS writes ({host, port, username, password, dbname})."""
    value = value.strip()
    if value.startswith(("postgres://", "postgresql://")):
        return value
    data = secret_object(value, arn, "a postgres:// URL")
    for key in ("url", "DATABASE_URL", "database_url"):
        if isinstance(data.get(key), str):
            return data[key]
    missing = [k for k in ("host", "username", "password") if not data.get(k)]
    if missing:
        raise ConfigError(f"{arn}: RDS-style secret lacks {', '.join(missing)}")
    user = quote(str(data["username"]), safe="")
    pw = quote(str(data["password"]), safe="")
    db = quote(str(data.get("dbname") or data.get("dbInstanceIdentifier") or "postgres"), safe="")
    return f"postgresql://{user}:{pw}@{data['host']}:{data.get('port', 5432)}/{db}"


def direct_host(host: str) -> str:
    """Neon's `ep-x-pooler.region` goes through PgBouncer in transaction mode, which loses session
    state (advisory locks, SET, pg_dump snapshots); `ep-x.region` is the same compute, direct."""
    m = _NEON_POOLER.match(host)
    return f"{m.group(1)}{m.group(2)}" if m else host


def pooler_hosts(url: str) -> list[tuple[str, str]]:
    """The Neon `-pooler` hosts in the URL, each with the direct host `session_conninfo` swaps it for."""
    try:
        host = conninfo_to_dict(url).get("host")
    except Exception:  # psycopg raises ProgrammingError for any unparsable string
        raise ConfigError("the database URL cannot be parsed (check quoting of the password)") from None
    hosts = host.split(",") if isinstance(host, str) else []
    return [(h, direct_host(h)) for h in hosts if direct_host(h) != h]


def session_conninfo(url: str, *, use_direct_host: bool = True) -> str:
    """The URL as a conninfo string, with a Neon pooler host swapped for the direct one."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # psycopg raises ProgrammingError for any unparsable string
        # Not chained: libpq's message quotes the bad token, which may be the password.
        raise ConfigError("the database URL cannot be parsed (check quoting of the password)") from None
    host = params.get("host")
    if use_direct_host and isinstance(host, str):
        params["host"] = ",".join(direct_host(h) for h in host.split(","))
    return make_conninfo("", **params)


def redact(conninfo: str) -> str:
    """host:port/dbname for logs; never a password."""
    try:
        p = conninfo_to_dict(conninfo)
    except Exception:
        return "(unparsable)"
    return f"{p.get('host', 'localhost')}:{p.get('port', 5432)}/{p.get('dbname', '')}"
