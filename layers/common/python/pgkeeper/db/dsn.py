"""Find the database URL (env or Secrets Manager) and adapt it for session-level work."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ConfigError
from ..plan.database import DEPLOYMENT_SECRET_ENV, DatabaseSettings
from ..secrets import get_secret, secret_object

_NEON_POOLER = re.compile(r"^(ep-[a-z0-9-]+?)-pooler(\..+)$")


HOST_ENV = "PGKEEPER_DATABASE_HOST"
PORT_ENV = "PGKEEPER_DATABASE_PORT"
NAME_ENV = "PGKEEPER_DATABASE_NAME"
"""The template's DatabaseHost/DatabasePort/DatabaseName: where an RDS JSON secret's fields are
missing (an RDS-managed master secret holds only {username, password}) or must be overridden."""


def resolve_url(settings: DatabaseSettings, *, fresh: bool = False) -> str:
    """The URL from the secret named by `secret_arn_env`, else from `url_env`; else a clear error.
    `fresh`: read the secret now, not from the cache (after a rotation)."""
    arn = settings.secret_arn or (os.environ.get(settings.secret_arn_env, "").strip() if settings.secret_arn_env
                                  else "")
    if arn:
        return url_from_secret(get_secret(arn, force=fresh), arn, settings)
    url = os.environ.get(settings.url_env, "").strip() if settings.url_env else ""
    if url:
        return url
    ways = [f"{settings.url_env} to a postgres:// URL"] if settings.url_env else []
    ways += [f"{settings.secret_arn_env} to a Secrets Manager secret ARN"] if settings.secret_arn_env else []
    raise ConfigError("no database configured: set " + (" or ".join(ways) or "database.secret_arn or url_env"))


def url_from_secret(value: str, arn: str = "secret", settings: DatabaseSettings | None = None) -> str:
    """A secret holds a URL, or the JSON shapes RDS writes.

    RDS's shapes differ: a Secrets Manager "credentials for RDS" secret has {host, port, username,
    password, engine, dbInstanceIdentifier} and may lack dbname (the instance's name is not a
    database's); an RDS-managed master secret has only {username, password}. What the secret lacks
    comes from the deployment (PGKEEPER_DATABASE_HOST/PORT/NAME, the template's DatabaseHost/Port/
    Name) or the plan (database.host/port/name); those win over the secret's fields when set."""
    value = value.strip()
    if value.startswith(("postgres://", "postgresql://")):
        return value
    data = secret_object(value, arn, "a postgres:// URL")
    for key in ("url", "DATABASE_URL", "database_url"):
        if isinstance(data.get(key), str):
            return data[key]
    settings = settings or DatabaseSettings()
    missing = [k for k in ("username", "password") if not data.get(k)]
    if missing:
        raise ConfigError(f"{arn}: RDS-style secret lacks {', '.join(missing)}")

    # The deployment's DatabaseHost/Port/Name describe its own database (the template's secret), not a
    # fleet member's secret.
    deployment = settings.secret_arn is None and settings.secret_arn_env == DEPLOYMENT_SECRET_ENV

    def setting(env: str, field: str, key: str) -> str | None:
        chosen = (deployment and os.environ.get(env, "").strip()) or getattr(settings, field) or data.get(key)
        return None if chosen in (None, "") else str(chosen)

    host = setting(HOST_ENV, "host", "host")
    if host is None:
        raise ConfigError(f"{arn} holds no host (an RDS-managed secret has only the user and password): "
                          f"set the DatabaseHost parameter ({HOST_ENV}) or database.host in the plan "
                          "to the instance's endpoint")
    name = setting(NAME_ENV, "name", "dbname")
    if name is None:
        raise ConfigError(f"{arn} names no database (dbInstanceIdentifier is the instance, not a database): "
                          f"set the DatabaseName parameter ({NAME_ENV}) or database.name in the plan")
    port = setting(PORT_ENV, "port", "port") or "5432"
    user = quote(str(data["username"]), safe="")
    pw = quote(str(data["password"]), safe="")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"postgresql://{user}:{pw}@{host}:{port}/{quote(name, safe='')}"


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
