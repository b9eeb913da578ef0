"""How pgkeeper reaches the database: where the URL comes from and the timeouts it always sets."""

from __future__ import annotations

from pydantic import Field

from .base import Model

SOURCE_KEYS = ("secret_arn", "secret_arn_env", "url_env")
"""Where the URL comes from; a fleet member naming one of them names all (the rest are none)."""
NULLABLE_KEYS = ("secret_arn", "host", "port", "name")
"""What a member naming its own source does not inherit either (the home database's host and name)."""
DEPLOYMENT_SECRET_ENV = "PGKEEPER_DATABASE_SECRET_ARN"  # noqa: S105 - the name of an env var


class DatabaseSettings(Model):
    url_env: str = Field("DATABASE_URL", description="env var holding a postgres:// URL (empty: none)")
    secret_arn_env: str = Field(
        DEPLOYMENT_SECRET_ENV,
        description="env var holding a Secrets Manager ARN (URL string or RDS JSON); wins over url_env (empty: none)",
    )
    secret_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$",
        description="this database's Secrets Manager secret (a fleet member's); wins over secret_arn_env and url_env, "
                    "and the deployment's PGKEEPER_DATABASE_HOST/PORT/NAME do not apply to it")
    host: str | None = Field(None, description="host for an RDS JSON secret without one (or overriding its)")
    port: int | None = Field(None, ge=1, le=65535, description="port for an RDS JSON secret (default 5432)")
    name: str | None = Field(None, description="database for an RDS JSON secret without dbname (or overriding it)")
    connect_timeout_s: int = Field(10, ge=1, le=120)
    statement_timeout_s: int = Field(300, ge=1)
    lock_timeout_ms: int = Field(3000, ge=1)
    idle_in_transaction_timeout_s: int = Field(60, ge=1)
    connect_retries: int = Field(1, ge=0, le=5, description="retries of a failed connect (Neon wakes)")
    use_direct_host: bool = Field(True, description="swap a Neon -pooler host for the direct host")
    run_history_days: int = Field(
        90, ge=1, le=3650,
        description="finished runs older than this leave pgkeeper.runs (each job's newest of every status stays)",
    )
