"""Signature verification without a network: what is accepted, and the reason for each refusal."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from pgkeeper.errors import AuthError, ConfigError, EventError
from pgkeeper.events import parse_body
from pgkeeper.jobs import JobSpec, Options
from pgkeeper.webhooks.secrets import ENV_SECRETS, SecretSource, parse_secrets
from pgkeeper.webhooks.sign import job_body, new_secret, sign
from pgkeeper.webhooks.verify import SignedRequest, Verifier

OLD, NEW = new_secret(), new_secret()


def now() -> int:
    return int(time.time())  # the library checks the window against the real clock too


@pytest.fixture()
def verifier(monkeypatch: pytest.MonkeyPatch) -> Verifier:
    monkeypatch.setenv(ENV_SECRETS, f"{NEW},{OLD}")
    monkeypatch.delenv("PGKEEPER_WEBHOOK_SECRET_ARN", raising=False)
    return Verifier(SecretSource())


def post(body: str, headers: dict[str, str]) -> SignedRequest:
    return SignedRequest("POST", "/", "", {k.lower(): v for k, v in headers.items()}, body.encode())


def refused(verifier: Verifier, request: SignedRequest) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(request)
    return info.value


def test_request_signed_by_the_standardwebhooks_library_is_accepted(verifier: Verifier) -> None:
    body = job_body("refresh")
    hook = Webhook(NEW)
    from datetime import UTC, datetime

    stamp = now()
    headers = {"webhook-id": "msg_lib", "webhook-timestamp": str(stamp),
               "webhook-signature": hook.sign("msg_lib", datetime.fromtimestamp(stamp, tz=UTC), body)}
    verified = verifier.verify(post(body, headers))
    assert verified.webhook_id == "msg_lib" and verified.body == body and verified.scheme == "standard-webhooks"


def test_old_and_new_secret_are_both_accepted_during_rotation(verifier: Verifier) -> None:
    body = job_body("refresh")
    for secret in (OLD, NEW):
        assert verifier.verify(post(body, sign(secret, body=body, timestamp=now()))).body == body


def test_tampered_body_and_wrong_secret_are_bad_signatures(verifier: Verifier) -> None:
    body = job_body("refresh")
    headers = sign(NEW, body=body, timestamp=now())
    assert refused(verifier, post(body.replace("{}", '{"dry_run":true}'), headers)).reason == "bad_signature"
    other = sign(new_secret(), body=body, timestamp=now())
    assert refused(verifier, post(body, other)).reason == "bad_signature"


@pytest.mark.parametrize(("offset", "reason"), [(-330, "stale_timestamp"), (330, "future_timestamp")])
def test_timestamps_outside_300_seconds_are_refused_either_way(verifier: Verifier, offset: int, reason: str) -> None:
    body = job_body("refresh")
    assert refused(verifier, post(body, sign(NEW, body=body, timestamp=now() + offset))).reason == reason


@pytest.mark.parametrize("offset", [-270, 270])
def test_timestamps_near_the_edge_of_the_window_are_accepted(verifier: Verifier, offset: int) -> None:
    body = job_body("refresh")
    assert verifier.verify(post(body, sign(NEW, body=body, timestamp=now() + offset)))


def test_missing_headers_are_named(verifier: Verifier) -> None:
    body = job_body("refresh")
    headers = sign(NEW, body=body, timestamp=now())
    del headers["webhook-timestamp"]
    err = refused(verifier, post(body, headers))
    assert err.reason == "missing_signature" and "webhook-timestamp" in str(err)
    assert refused(verifier, post(body, {})).reason == "missing_signature"


@pytest.mark.parametrize(("header", "value", "reason"), [
    ("webhook-timestamp", "1800000000.5", "bad_timestamp"),
    ("webhook-timestamp", "nan", "bad_timestamp"),
    ("webhook-signature", "v1", "bad_signature"),
    ("webhook-signature", "v1,not base64!", "bad_signature"),
    ("webhook-id", "has space", "bad_webhook_id"),
    ("webhook-id", "x" * 201, "bad_webhook_id"),
])
def test_malformed_headers_get_a_reason_not_an_exception(verifier: Verifier, header: str, value: str,
                                                          reason: str) -> None:
    body = job_body("refresh")
    headers = sign(NEW, body=body, timestamp=now())
    headers[header] = value
    assert refused(verifier, post(body, headers)).reason == reason


def test_several_signatures_in_one_header_match_if_any_v1_does(verifier: Verifier) -> None:
    body = job_body("refresh")
    good = sign(NEW, body=body, timestamp=now(), webhook_id="msg_x")
    bogus = sign(new_secret(), body=body, timestamp=now(), webhook_id="msg_x")
    good["webhook-signature"] = f"v1a,c2lnbmF0dXJlIG9mIGEgbGF0ZXIgdmVyc2lvbg== {bogus['webhook-signature']} " \
                                f"{good['webhook-signature']}"
    assert verifier.verify(post(body, good)).webhook_id == "msg_x"


def test_signed_get_is_bound_to_its_path(verifier: Verifier) -> None:
    headers = sign(NEW, method="GET", path="/runs/aaa", timestamp=now())
    ok = SignedRequest("GET", "/runs/aaa", "", headers, b"")
    assert verifier.verify(ok)
    for method, path, query in (("GET", "/runs/bbb", ""), ("GET", "/health", ""), ("GET", "/runs/aaa", "x=1"),
                                ("POST", "/runs/aaa", "")):
        assert refused(verifier, SignedRequest(method, path, query, headers, b"")).reason == "bad_signature"
    # A signed POST body resent as a GET verifies against the body, not the path: refused before that.
    body = job_body("refresh")
    post_headers = sign(NEW, body=body, timestamp=now())
    with pytest.raises(EventError) as info:
        verifier.verify(SignedRequest("GET", "/runs/aaa", "", post_headers, body.encode()))
    assert info.value.reason == "bad_body"


def test_base64_body_is_decoded_before_verification(verifier: Verifier) -> None:
    body = job_body("refresh")
    event = {
        "requestContext": {"http": {"method": "POST", "path": "/"}}, "rawPath": "/",
        "headers": sign(NEW, body=body, timestamp=now()),
        "body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True,
    }
    assert verifier.verify(SignedRequest.from_url_event(event)).body == body
    event["body"] = "not//base64!!"
    with pytest.raises(EventError) as info:
        SignedRequest.from_url_event(event)
    assert info.value.reason == "bad_body"


def test_no_secret_configured_refuses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SECRETS, raising=False)
    monkeypatch.delenv("PGKEEPER_WEBHOOK_SECRET_ARN", raising=False)
    body = job_body("refresh")
    v = Verifier(SecretSource())
    assert refused(v, post(body, sign(NEW, body=body, timestamp=now()))).reason == "signing_not_configured"


def test_bearer_mode_is_off_by_default_and_constant_time_when_on(verifier: Verifier) -> None:
    body = job_body("refresh")
    assert refused(verifier, post(body, {"Authorization": f"Bearer {NEW}"})).reason == "bearer_not_allowed"
    verifier.allow_bearer = True
    verified = verifier.verify(post(body, {"Authorization": f"Bearer {OLD}"}))
    assert verified.scheme == "bearer" and verified.webhook_id is None
    assert refused(verifier, post(body, {"Authorization": "Bearer whsec_wrong"})).reason == "bad_token"
    assert refused(verifier, post(body, {"Authorization": f"Basic {NEW}"})).reason == "bad_token"


def test_secret_lists_parse_from_json_and_comma_lists() -> None:
    assert parse_secrets(json.dumps([NEW, OLD]), "s") == [NEW, OLD]
    assert parse_secrets(json.dumps({"secrets": [NEW, OLD]}), "s") == [NEW, OLD]
    assert parse_secrets(f" {NEW} ,\n{OLD} ", "s") == [NEW, OLD]
    assert parse_secrets(NEW, "s") == [NEW]


@pytest.mark.parametrize("bad", ["whsec_c2hvcnQ=", "plain-password-of-sufficient-length", "whsec_!!!!notbase64!!!!"])
def test_unusable_secrets_are_config_errors_that_never_quote_the_secret(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secrets(f"{NEW},{bad}", "PGKEEPER_WEBHOOK_SECRETS")
    assert bad not in str(info.value) and "secret #2" in str(info.value)


SPEC = JobSpec(name="refresh", options=Options, run=lambda ctx: {"status": "succeeded"})


@pytest.mark.parametrize(("body", "reason"), [
    ("", "bad_body"),
    ("{not json", "invalid_json"),
    ("[]", "bad_body"),
    ('{"job": "cleanup"}', "wrong_job"),
    ('{"options": {}}', "bad_body"),
    ('{"job": "refresh", "extra": 1}', "bad_body"),
    ('{"job": "cleanup", "job": "refresh"}', "bad_body"),
    ('{"job": "refresh", "async": "yes"}', "bad_body"),
    ('{"job": "refresh", "options": []}', "bad_body"),
    ('{"job": "refresh", "async": 1}', "bad_body"),
    ('{"job": "refresh", "options": ' + "[" * 1000 + "]" * 1000 + "}", "bad_body"),
    ("[" * 50000 + "]" * 50000, "bad_body"),
])
def test_job_bodies_that_do_not_name_exactly_one_action_are_400s(body: str, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_body(body, SPEC.name)
    assert info.value.reason == reason and info.value.status == 400


def test_job_body_yields_options_and_async_flag() -> None:
    event = parse_body(job_body("refresh", {"dry_run": True}, True), SPEC.name)
    assert (event.options, event.run_async) == ({"dry_run": True}, True)
    event = parse_body('{"job": "refresh"}', SPEC.name)
    assert (event.options, event.run_async) == ({}, None)
