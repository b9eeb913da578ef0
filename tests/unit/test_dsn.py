"""Where the database URL comes from, and the Neon pooler swap."""

from __future__ import annotations

import json

import pytest

from pgkeeper.db.dsn import direct_host, redact, session_conninfo, url_from_secret
from pgkeeper.errors import ConfigError
from pgkeeper.plan.database import DatabaseSettings


def test_neon_pooler_host_is_swapped_for_the_direct_host():
    assert direct_host("ep-cool-dawn-123456-pooler.us-east-2.aws.neon.tech") == \
        "ep-cool-dawn-123456.us-east-2.aws.neon.tech"
    assert direct_host("db.example.com") == "db.example.com"
    info = session_conninfo("postgresql://u:p@ep-a-1-pooler.eu-central-1.aws.neon.tech/app?sslmode=require")
    assert "ep-a-1.eu-central-1.aws.neon.tech" in info and "sslmode=require" in info


def test_pooler_swap_can_be_turned_off():
    info = session_conninfo("postgresql://u@ep-a-1-pooler.x.neon.tech/app", use_direct_host=False)
    assert "ep-a-1-pooler.x.neon.tech" in info


def test_rds_json_secret_becomes_a_url_with_escaped_password():
    secret = json.dumps({"host": "db.rds", "port": 5433, "username": "app", "password": "p@ss:/w", "dbname": "prod"})
    url = url_from_secret(secret)
    assert url == "postgresql://app:p%40ss%3A%2Fw@db.rds:5433/prod"


def test_url_secret_is_used_as_is():
    assert url_from_secret(" postgresql://a@b/c ") == "postgresql://a@b/c"


@pytest.mark.parametrize("secret", ["not a url", "[1,2]", json.dumps({"host": "h"})])
def test_unusable_secrets_are_clear_errors(secret):
    with pytest.raises(ConfigError):
        url_from_secret(secret, "arn:secret")


def test_redact_never_shows_the_password():
    shown = redact(session_conninfo("postgresql://app:hunter2@db.example.com:5432/prod"))
    assert shown == "db.example.com:5432/prod" and "hunter2" not in shown


RDS_MANAGED = json.dumps({"username": "postgres", "password": "s3cr:t"})
"""What RDS writes for `ManageMasterUserPassword`: the user and password, nothing else."""
RDS_CREDENTIALS = json.dumps({"engine": "postgres", "host": "db-1.abc.eu-west-1.rds.amazonaws.com", "port": 5432,
                              "username": "app", "password": "pw", "dbInstanceIdentifier": "db-1"})
"""Secrets Manager's "Credentials for Amazon RDS database": the instance's name, no database's."""


@pytest.fixture()
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("PGKEEPER_DATABASE_HOST", "PGKEEPER_DATABASE_PORT", "PGKEEPER_DATABASE_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_rds_managed_secret_takes_host_and_database_from_the_deployment(no_database_env):
    with pytest.raises(ConfigError) as err:
        url_from_secret(RDS_MANAGED, "arn:rds-managed")
    assert str(err.value) == ("arn:rds-managed holds no host (an RDS-managed secret has only the user and "
                              "password): set the DatabaseHost parameter (PGKEEPER_DATABASE_HOST) or database.host "
                              "in the plan to the instance's endpoint")
    no_database_env.setenv("PGKEEPER_DATABASE_HOST", "db-1.abc.eu-west-1.rds.amazonaws.com")
    no_database_env.setenv("PGKEEPER_DATABASE_NAME", "app")
    assert url_from_secret(RDS_MANAGED, "arn:rds-managed") == \
        "postgresql://postgres:s3cr%3At@db-1.abc.eu-west-1.rds.amazonaws.com:5432/app"


def test_the_instance_identifier_is_never_taken_for_the_database_name(no_database_env):
    with pytest.raises(ConfigError) as err:
        url_from_secret(RDS_CREDENTIALS, "arn:rds-credentials")
    assert str(err.value) == ("arn:rds-credentials names no database (dbInstanceIdentifier is the instance, not a "
                              "database): set the DatabaseName parameter (PGKEEPER_DATABASE_NAME) or database.name "
                              "in the plan")
    settings = DatabaseSettings(name="shop", port=6432)
    assert url_from_secret(RDS_CREDENTIALS, "arn:rds-credentials", settings) == \
        "postgresql://app:pw@db-1.abc.eu-west-1.rds.amazonaws.com:6432/shop"
    no_database_env.setenv("PGKEEPER_DATABASE_NAME", "orders")  # the deployment's parameter wins over the plan
    assert url_from_secret(RDS_CREDENTIALS, "arn:rds-credentials", settings).endswith(":6432/orders")


def test_an_ipv6_host_is_bracketed_in_the_url(no_database_env):
    no_database_env.setenv("PGKEEPER_DATABASE_HOST", "2001:db8::1")
    no_database_env.setenv("PGKEEPER_DATABASE_NAME", "app")
    assert url_from_secret(RDS_MANAGED, "arn:x") == "postgresql://postgres:s3cr%3At@[2001:db8::1]:5432/app"
