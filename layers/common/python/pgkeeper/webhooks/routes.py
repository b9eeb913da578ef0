"""Function URL requests: verified first, then routed by Powertools' function-URL resolver.

Every request, whatever its path, is verified (signature, timestamp window, secrets) and its
webhook-id recorded in the replay store *before* the resolver sees it, so an unsigned or replayed
request can neither run a job nor learn which routes exist. Then:

    POST /               {"job", "options", "async"?, "database"?}  200 with the run's result, or
                         202 {"run_id"} for a long job (or "async": true), continued asynchronously;
                         on a fleet plan without "database": 202 with each member's run id (fan-out)
    GET  /runs/{run_id}  that run of this function's job (status, report); ?database=<member> on a fleet
                         (so for /health and /status)
    GET  /health         database reachability and latency, last run per job; ?detail=1 adds
                         pgkeeper.health's report
    GET  /status         what `pgkeeper status` says: per silence window the last proof and
                         whether it is overdue, per job the last success/failure/skip, next runs

Every failure is answered by `webhooks.errors` with a status and a reason code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from typing import Any

from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response

from .. import runner
from ..config import get_plan
from ..db import Database, runs
from ..errors import (
    DatabaseUnavailableError,
    HealthReportUnavailableError,
    MethodNotAllowedError,
    NotFoundError,
    PgkeeperError,
    ReplayError,
)
from ..events import JobEvent, parse_body
from ..jobs import JobSpec
from ..log import logger
from ..plan import Plan
from ..plan.signing import SigningPlan
from .dispatch import get_invoker, self_function_name, set_invoker
from .errors import error_response, status_and_body
from .replay import PostgresReplayStore, RedisReplayStore, ReplayStore, ttl_for
from .secrets import SecretSource
from .session import UrlSession
from .verify import SignedRequest, Verified, Verifier

ALLOW_BEARER_ENV = "PGKEEPER_ALLOW_BEARER"
ROUTES = ("POST /", "GET /runs/{run_id}", "GET /health", "GET /status")

# debug=False whatever POWERTOOLS_DEV says: in debug mode Powertools answers an unexpected error with its traceback.
app = LambdaFunctionUrlResolver(debug=False)

# Per container: reused across warm invocations, keyed so a changed plan or database gets new ones.
_secrets = SecretSource()
_verifiers: dict[tuple[SigningPlan, bool], Verifier] = {}
_sessions: dict[tuple[str, str], UrlSession] = {}
_stores: dict[tuple[str, str, str], ReplayStore] = {}
_cache_lock = threading.Lock()


def handle(spec: JobSpec, event: Any, context: Any) -> dict:
    """The answer to one function URL request for the function whose job is `spec`."""
    started = time.perf_counter()
    verified: Verified | None = None
    try:
        plan = get_plan()
        request = SignedRequest.from_url_event(event)
        verified = _verifier(plan.signing).verify(request)
        if verified.webhook_id is not None:
            store = _replay_store(plan, spec)
            if not store.accept(verified.webhook_id, ttl_for(plan.signing.tolerance_s)):
                raise ReplayError("this webhook-id was already accepted; sign a new request")
    except PgkeeperError as exc:
        response = error_response(exc)
    else:
        app.append_context(spec=spec, plan=plan, verified=verified, lambda_context=context)
        response = app.resolve(event, context)
    _log(event, verified, response, started)
    return response


# ---------------------------------------------------------------------------------------- routes


@app.post("/")
def run_job() -> Response:
    spec: JobSpec = app.context["spec"]
    verified: Verified = app.context["verified"]
    # The webhook-id names the request in the run history (bearer requests have none: Lambda's id).
    request_id = verified.webhook_id or getattr(app.context["lambda_context"], "aws_request_id", None)
    event = parse_body(verified.body, spec.name, request_id)
    plan: Plan = app.context["plan"]
    if event.database is None and plan.fleet is not None:
        return _start_fan_out(spec, event, plan)
    if event.database is not None:
        plan = plan.for_database(event.database)  # 400 naming the known ones when it is not
    if spec.long_running if event.run_async is None else event.run_async:  # the caller's "async" wins either way
        return _start_async(spec, event, plan)
    result = runner.execute(spec, event, app.context["lambda_context"])
    return _json(200, result)


def _request_plan() -> Plan:
    """The plan a GET is about: `?database=<member>` on a fleet, else the deployment's (its home)."""
    plan: Plan = app.context["plan"]
    name = app.current_event.get_query_string_value("database", "")
    return plan.for_database(name) if name else plan.home()


@app.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    spec: JobSpec = app.context["spec"]
    run = _session(_request_plan(), spec).run(lambda conn: runs.get_run(conn, run_id))
    if run is None or run["job"] != spec.name:
        raise NotFoundError(f"no {spec.name} run with id {run_id}", reason="run_not_found")
    return _json(200, run)


@app.get("/health")
def health() -> Response:
    spec: JobSpec = app.context["spec"]
    plan = _request_plan()
    session = _session(plan, spec)
    try:
        t0 = time.perf_counter()
        session.run(lambda conn: conn.execute("SELECT 1").fetchone())
        latency_ms = round((time.perf_counter() - t0) * 1000, 2)
        last = session.run(runs.last_runs)
    except DatabaseUnavailableError:
        return _json(503, {"status": "unavailable", "function": spec.name,
                           "database": {"reachable": False}, "error": "database_unavailable"})
    body: dict[str, Any] = {"status": "ok", "function": spec.name,
                            "database": {"reachable": True, "latency_ms": latency_ms}, "last_runs": last}
    if app.current_event.get_query_string_value("detail", "") in ("1", "true", "yes"):
        body["report"] = _health_report(plan, spec)
    return _json(200, body)


@app.get("/status")
def status() -> Response:
    from ..status import Deployment, build_status

    spec: JobSpec = app.context["spec"]
    session = _session(_request_plan(), spec)
    report = session.run(lambda conn: build_status(conn, Deployment.from_env(), session.db.where))
    return _json(200, report.model_dump(mode="json"))


@app.exception_handler(PgkeeperError)
def _answer_error(exc: PgkeeperError) -> Response:
    status, body = status_and_body(exc)
    return _json(status, body)


@app.not_found
def _not_found(_exc: Exception) -> Response:
    method = app.current_event.http_method.upper()
    path = app.current_event.path
    known = path in ("/", "/health", "/status") or path.startswith("/runs/")
    if known:
        err: PgkeeperError = MethodNotAllowedError(f"{method} is not allowed on {path}; routes: {', '.join(ROUTES)}")
    else:
        err = NotFoundError(f"no route {method} {path}; routes: {', '.join(ROUTES)}")
    return _answer_error(err)


# ------------------------------------------------------------------------------------ the pieces


def _start_fan_out(spec: JobSpec, event: JobEvent, plan: Plan) -> Response:
    """A request naming no database on a fleet: the fan-out continues asynchronously; the answer names
    each member's run (its row appears in that member's database once the fan-out reaches it)."""
    from ..fleet import new_state

    validated = runner.validate_options(spec, event.options)
    state = new_state(spec, plan)
    opts_json = validated.model_dump(mode="json", exclude_defaults=True)
    # Queued in the home database: `GET /runs/<run_id>` answers from the first moment.
    _session(plan.home(), spec).run(lambda conn: runs.queue(conn, state.fleet_run_id, spec.name, "fleet",
                                                            event.request_id, opts_json))
    payload = {"job": spec.name, "options": event.options, "trigger": "fleet", "request_id": event.request_id,
               "fleet": state.model_dump(mode="json")}
    try:
        get_invoker().invoke_async(self_function_name(app.context["lambda_context"]), payload)
    except Exception as exc:  # the queued row must not wait for a fan-out that never starts
        error = (str(exc) if isinstance(exc, PgkeeperError) else f"{type(exc).__name__}: {exc}")[:4000]
        _session(plan.home(), spec).run(lambda conn: runs.finish(conn, state.fleet_run_id, "failed", None,
                                                                 error=error))
        raise
    logger.info("fleet fan-out queued", extra={"job": spec.name, "run_id": state.fleet_run_id})
    return _json(202, {"run_id": state.fleet_run_id, "job": spec.name, "status": "queued", "fleet": True,
                       "poll": f"/runs/{state.fleet_run_id}",
                       "databases": {m.database: {"run_id": m.run_id,
                                                  "poll": f"/runs/{m.run_id}?database={m.database}"}
                                     for m in state.members}})


def _start_async(spec: JobSpec, event: JobEvent, plan: Plan) -> Response:
    """Record a queued run, then continue in an asynchronous invocation of this same function."""
    validated = runner.validate_options(spec, event.options)
    opts_json = validated.model_dump(mode="json", exclude_defaults=True)
    session = _session(plan, spec)
    session.run(lambda conn: runner.preflight(spec, plan, validated, conn))  # a typo queues nothing
    run_id = runs.new_run_id()
    session.run(lambda conn: runs.queue(conn, run_id, spec.name, "url", event.request_id, opts_json))
    payload = {"job": spec.name, "options": event.options, "trigger": "async", "run_id": run_id,
               "request_id": event.request_id}
    if event.database is not None:
        payload["database"] = event.database
    try:
        get_invoker().invoke_async(self_function_name(app.context["lambda_context"]), payload)
    except Exception as exc:  # whatever stopped the dispatch, the queued run must not wait forever
        error = (str(exc) if isinstance(exc, PgkeeperError) else f"{type(exc).__name__}: {exc}")[:4000]
        try:
            session.run(lambda conn: runs.finish(conn, run_id, "failed", None, error=error))
        except DatabaseUnavailableError as db_exc:
            logger.warning("could not mark the undispatched run failed; it stays queued",
                           extra={"run_id": run_id, "detail": str(db_exc)})
        raise
    logger.info("job queued", extra={"job": spec.name, "run_id": run_id})
    poll = f"/runs/{run_id}" + (f"?database={event.database}" if event.database else "")
    return _json(202, {"run_id": run_id, "job": spec.name, "status": "queued", "poll": poll})


def _health_report(plan: Plan, spec: JobSpec) -> Any:
    # Imported on demand: only ?detail=1 pays for it, and a build without it still answers /health.
    if importlib.util.find_spec("pgkeeper.health") is None:
        raise HealthReportUnavailableError("this build has no detailed health report")
    from ..health import build_report

    db = Database.from_settings(plan.database, spec.name)
    try:
        conn = db.connect(autocommit=True, purpose="health")
        try:
            return build_report(conn, plan).model_dump(mode="json")
        finally:
            conn.close()
    finally:
        db.close()


def _json(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=str),
                    headers={"cache-control": "no-store"})


def _verifier(signing: SigningPlan) -> Verifier:
    allow_bearer = signing.allow_bearer or os.environ.get(ALLOW_BEARER_ENV, "").lower() in ("1", "true", "yes")
    key = (signing, allow_bearer)
    with _cache_lock:
        verifier = _verifiers.get(key)
        if verifier is None:
            verifier = _verifiers[key] = Verifier(_secrets, tolerance_s=signing.tolerance_s,
                                                  allow_bearer=allow_bearer, secret_cache_s=signing.secret_cache_s)
    return verifier


def _session(plan: Plan, spec: JobSpec) -> UrlSession:
    db = Database.from_settings(plan.database, spec.name)
    key = (db.conninfo, spec.name)
    with _cache_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = UrlSession(db)
    return session


def _replay_store(plan: Plan, spec: JobSpec) -> ReplayStore:
    if plan.signing.replay_store == "redis":
        from ..cache.connect import open_client, resolve_target

        target = resolve_target(plan.cache)  # ConfigError naming what to set when there is no cache
        key = ("redis", target.url, "")
        with _cache_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = RedisReplayStore(open_client(plan.cache, target))
        return store
    session = _session(plan.home(), spec)
    key = ("postgres", session.db.conninfo, spec.name)
    with _cache_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = PostgresReplayStore(session)
    return store


def _log(event: Any, verified: Verified | None, response: dict, started: float) -> None:
    """One line per request: never a header value, a body or a secret."""
    status = response.get("statusCode")
    reason = None
    if isinstance(status, int) and status >= 400:
        try:
            reason = json.loads(response.get("body") or "{}").get("error")
        except (json.JSONDecodeError, AttributeError):
            reason = None
    http = (event.get("requestContext") or {}).get("http") or {}
    logger.info("function URL request", extra={
        "method": http.get("method"), "path": event.get("rawPath"), "status": status, "reason": reason,
        "scheme": verified.scheme if verified else None, "webhook_id": verified.webhook_id if verified else None,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    })


def reset() -> None:
    """Forget cached sessions, stores, verifiers and the Lambda client (tests)."""
    set_invoker(None)
    with _cache_lock:
        for session in _sessions.values():
            session.close()
        for store in _stores.values():
            if isinstance(store, RedisReplayStore):
                store.client.close()
        _sessions.clear()
        _stores.clear()
        _verifiers.clear()
