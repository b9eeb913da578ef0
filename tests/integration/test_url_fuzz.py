"""Every request the function URL can receive, valid or not, is answered: never an exception
escaping the handler, never a 5xx for the caller's mistake (hypothesis drives the requests).

Runs the real handler against the test's PostgreSQL (replay store and run history) with a job
whose work is one row, so validly signed requests really run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgkeeper.jobs import JobContext, JobSpec, Options
from pgkeeper.local.context import LocalContext
from pgkeeper.local.serve import url_event
from pgkeeper.webhooks import routes
from pgkeeper.webhooks.sign import new_secret, sign

SECRET = new_secret()


class TouchOptions(Options):
    note: str | None = None
    count: int = 1


def _touch(ctx: JobContext) -> dict:
    with ctx.db.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS touched (run_id uuid)")
        conn.execute("INSERT INTO touched VALUES (%s)", [ctx.run_id])
    return {"status": "succeeded"}


TOUCH = JobSpec(name="touch", options=TouchOptions, run=_touch)


@pytest.fixture()
def signing(use_db: str, write_plan: Callable, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PGKEEPER_WEBHOOK_SECRETS", SECRET)
    monkeypatch.delenv("PGKEEPER_WEBHOOK_SECRET_ARN", raising=False)
    write_plan({"version": 1})
    routes.reset()
    yield
    routes.reset()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"job": st.sampled_from(["touch", "refresh", "", 7]),
                           "options": json_values | st.dictionaries(st.sampled_from(["note", "count", "dry_run",
                                                                                     "x"]), json_values),
                           }, optional={"async": json_values}).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 3000).map(lambda n: ("[" * n + "]" * n).encode()),
)
paths = st.one_of(
    st.sampled_from(["/", "/health", "/runs/", "/nope", "//", "/runs/x/y"]),
    st.uuids().map(lambda u: f"/runs/{u}"),
    st.uuids().map(lambda u: f"/runs/urn:uuid:{u}"),
    st.uuids().map(lambda u: f"/runs/{{{u}}}"),
    st.uuids().map(lambda u: f"/runs/{u.hex}"),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30).map(lambda t: "/" + t),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"])
junk_headers = st.dictionaries(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "authorization",
                     "x-other"]),
    st.text(max_size=40), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(method=methods, path=paths, body=bodies, headers=junk_headers, signed=st.booleans(),
       query=st.sampled_from(["", "detail=1", "a=b&a=c", "%zz"]))
def test_no_request_escapes_the_handler_or_gets_a_5xx(signing: None, method: str, path: str, body: bytes,
                                                      headers: dict[str, str], signed: bool, query: str) -> None:
    if signed:
        text = body.decode("utf-8", "replace")
        signed_body = text if method == "POST" else ""
        headers = {**headers, **sign(SECRET, body=signed_body, method=method, path=path, query=query),
                   "content-type": "application/json"}
        body = signed_body.encode()
    event = url_event(method, path, query, headers, body)
    response = routes.handle(TOUCH, event, LocalContext(30, name="fuzz-touch"))
    assert isinstance(response, dict) and isinstance(response.get("statusCode"), int), response
    assert response["statusCode"] < 500, (response["statusCode"], response.get("body"))
    answer = json.loads(response["body"]) if response.get("body") else {}
    if response["statusCode"] >= 400:
        assert answer.get("error") and answer.get("message"), answer


@pytest.mark.parametrize("run_id", [
    "urn:uuid:{u}", "{{{u}}}", "{hex}", "-{hex}", "{u}-", " {u}", "{u}\n", "{u_upper_braced}",
])
def test_a_run_id_not_in_canonical_uuid_form_is_404(signing: None, pg: psycopg.Connection, run_id: str) -> None:
    u = uuid.uuid4()
    path = "/runs/" + run_id.format(u=u, hex=u.hex, u_upper_braced="{" + str(u).upper() + "}")
    event = url_event("GET", path, "", sign(SECRET, method="GET", path=path), b"")
    response = routes.handle(TOUCH, event, LocalContext(30, name="fuzz-touch"))
    assert response["statusCode"] == 404, response
    assert json.loads(response["body"])["error"] in ("run_not_found", "not_found")
