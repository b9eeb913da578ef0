"""Where the database URL comes from, and the Neon pooler swap."""

from __future__ import annotations

import json

import pytest

from pgkeeper.db.dsn import direct_host, redact, session_conninfo, url_from_secret
from pgkeeper.errors import ConfigError


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
