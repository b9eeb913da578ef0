"""Fan-out: one run of a job over every database of the plan's fleet, at most `concurrency` at once.

A run without a database on a fleet plan is a coordinator. For each member it records a queued run
in that member's own database (its run history, as the 202 path does) and invokes this same function
asynchronously with `{"job", "options", "trigger": "fleet", "run_id", "database"}`: each member runs in
an invocation of its own, with its own timeout, advisory lock and run history, so a slow or failing
database costs the others nothing. The coordinator holds a slot per member until that run's row says
it finished (polled every `fleet.poll_s`; a run whose invocation died is expired by its deadline, as
everywhere), so never more than `concurrency` members run. When its own invocation is about to end
with members still running or waiting, it hands its state to a new asynchronous invocation of itself
and stops: a fleet's run is not capped at one Lambda timeout.

Member failures never raise here: each is recorded in its database and reported per member, the
coordinator's run is `succeeded` only when every member's is, and a retry of the whole fan-out would
repeat the members that succeeded. A member's own invocation does not raise either (handler.py):
Lambda's retry of it would start it again outside the bound.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any, ClassVar, Literal

import psycopg
from pydantic import BaseModel

from .budget import Budget
from .db import Database, runs
from .errors import DispatchError, PgkeeperError, first_line
from .events import JobEvent
from .jobs import JobSpec, SparseReport
from .log import logger
from .plan import Plan
from .webhooks.dispatch import get_invoker, self_function_name

MemberStatus = Literal["pending", "dispatching", "queued", "running", "succeeded", "partial", "failed", "skipped"]
_OPEN = ("dispatching", "queued", "running")
"""`dispatching`: its run may or may not be queued and invoked yet (an invocation ended meanwhile):
the next one reads its run row before anything else."""
_FINISHED = frozenset({"succeeded", "partial", "failed", "skipped"})
CONTINUE_RESERVE_S = 15.0
"""Seconds kept at the end of the coordinator's invocation to hand its state to the next one."""
MEMBER_TEXT_MAX = 300
MAX_CONTINUATIONS = 96
"""A fan-out followed for this many invocations (a day at 15 minutes each) gives up on what is left."""


class MemberRun(BaseModel):
    database: str
    run_id: str
    status: MemberStatus = "pending"
    error: str | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    summary: str | None = None


class FanOutState(BaseModel):
    """Everything a continuation needs: carried in the event of the coordinator's next invocation."""

    fleet_run_id: str
    job: str
    started_at: float
    continuations: int = 0
    max_running: int = 0
    members: list[MemberRun]


class FleetReport(SparseReport):
    SPARSE: ClassVar[frozenset[str]] = frozenset({"duration_s"})
    ORDER: ClassVar[tuple[str, ...]] = ("status", "fleet", "summary", "counts", "concurrency", "max_running",
                                        "continuations", "databases", "duration_s")

    fleet: Literal[True] = True
    summary: str
    counts: dict[str, int]
    concurrency: int
    max_running: int
    """The most members the coordinator held slots for at once (never above `concurrency`)."""
    continuations: int
    databases: list[MemberRun]


class _Coordinator:
    def __init__(self, spec: JobSpec, request: JobEvent, plan: Plan, options: dict[str, Any], context: Any,
                 budget: Budget, state: FanOutState) -> None:
        assert plan.fleet is not None
        self.spec, self.request, self.plan, self.context, self.budget = spec, request, plan, context, budget
        self.fleet = plan.fleet
        self.state = state
        self.options = options
        """The run's options as recorded in each member's run history."""
        self.stop = threading.Event()
        self.slots = threading.BoundedSemaphore(self.fleet.concurrency)
        self.lock = threading.Lock()
        self.holding = 0
        # Starting a member may wait on its database's connect (timeout and retries): stop starting
        # members while that could run into the hand-over to the next invocation.
        # At most half the invocation, so a short function timeout still makes progress each time.
        db = plan.database
        self.start_reserve_s = min(CONTINUE_RESERVE_S + db.connect_timeout_s * (db.connect_retries + 1) + 5,
                                   budget.remaining() / 2)

    # ------------------------------------------------------------------ one member, on its own thread
    def _carry(self, member: MemberRun) -> None:
        try:
            if member.status == "dispatching":
                self._recover(member)
            if member.status == "pending":
                self._dispatch(member)
            if member.status in _OPEN:
                self._watch(member)
        except Exception as exc:  # a member's trouble is that member's outcome, never the fan-out's
            logger.exception("fleet member could not be followed", extra={"database": member.database})
            if member.status in ("pending", "dispatching"):  # e.g. its URL env var is not set
                self._finish(member, "failed", f"{type(exc).__name__}: {first_line(exc)}")
        finally:
            with self.lock:
                self.holding -= 1
            self.slots.release()

    def _database(self, member: MemberRun) -> Database:
        return Database.from_settings(self.plan.for_database(member.database).database, self.spec.name)

    def _recover(self, member: MemberRun) -> None:
        """A member an earlier invocation was starting when it ended: queued (its row exists) or not."""
        db = self._database(member)
        try:
            row = runs.get_run(db.conn, member.run_id)
        except (PgkeeperError, psycopg.Error):
            # Unknown: watching it (which retries) is safe; queueing it again could run it twice.
            member.status = "queued"
            return
        finally:
            db.close()
        # A row means it was queued, and its invocation was asked for or failed (then the row says so).
        member.status = "queued" if row is not None else "pending"

    def _dispatch(self, member: MemberRun) -> None:
        member.status = "dispatching"
        db = self._database(member)
        try:
            try:
                conn = db.conn
                runs.ensure_schema(conn, cache_key=db.conninfo)
                runs.queue(conn, member.run_id, self.spec.name, "fleet", self.request.request_id, self.options)
            except (PgkeeperError, psycopg.Error) as exc:
                self._finish(member, "failed", f"could not record the run in {member.database}: {first_line(exc)}")
                return
            payload = {"job": self.spec.name, "options": self.request.options, "trigger": "fleet",
                       "run_id": member.run_id, "database": member.database,
                       "request_id": self.request.request_id}
            try:
                get_invoker().invoke_async(self_function_name(self.context), payload)
            except Exception as exc:
                error = str(exc) if isinstance(exc, DispatchError) else f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(psycopg.Error):  # else the queued row expires on its own
                    runs.finish(conn, member.run_id, "failed", None, error=error[:4000])
                self._finish(member, "failed", error)
                return
            member.status = "queued"
            member.dispatched_at = time.time()
            logger.info("fleet member started", extra={"database": member.database, "member_run_id": member.run_id})
        finally:
            db.close()

    def _watch(self, member: MemberRun) -> None:
        db = self._database(member)
        try:
            while not self.stop.wait(self.fleet.poll_s):
                try:
                    runs.expire_lost(db.conn, member.run_id)  # an invocation that died: failed by its deadline
                    row = runs.get_run(db.conn, member.run_id)
                except (PgkeeperError, psycopg.Error) as exc:
                    logger.warning("could not read a fleet member's run; trying again",
                                   extra={"database": member.database, "error": first_line(exc)})
                    db.close()
                    continue
                if row is None:
                    self._finish(member, "failed", "its run row disappeared from the run history")
                    return
                if row["status"] in _FINISHED:
                    report = row.get("report") or {}
                    self._finish(member, row["status"], row.get("error"),
                                 report.get("summary") if isinstance(report, dict) else None)
                    return
                member.status = row["status"]
        finally:
            db.close()

    def _finish(self, member: MemberRun, status: MemberStatus, error: str | None, summary: str | None = None) -> None:
        # Short: the state rides in a continuation's event (256 KB for every member); the member's own
        # run history has the whole error.
        member.status, member.error = status, error[:MEMBER_TEXT_MAX] if error else None
        member.summary = summary[:MEMBER_TEXT_MAX] if summary else None
        member.finished_at = time.time()
        log = logger.info if status == "succeeded" else logger.warning
        log(f"fleet member {status}", extra={"database": member.database, "member_run_id": member.run_id,
                                              "error": error})

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> bool:
        """Carry every member to its end; False when the invocation ran out first (continue)."""
        threads = []
        members = self.state.members
        # Members an earlier invocation started hold their slots again first (never more than the bound).
        for member in [m for m in members if m.status in _OPEN] + [m for m in members if m.status == "pending"]:
            if not self._take_slot(member):
                break
            thread = threading.Thread(target=self._carry, args=(member,), name=f"fleet-{member.database}",
                                      daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, self.budget.remaining() - CONTINUE_RESERVE_S))
        self.stop.set()
        for thread in threads:
            thread.join(CONTINUE_RESERVE_S / 2)
        return all(m.status in _FINISHED for m in members)

    def _take_slot(self, member: MemberRun) -> bool:
        """Wait for a free slot; False when a member not yet started could no longer be started (and
        followed) in this invocation: the next one takes over."""
        while True:
            if member.status == "pending" and self.budget.remaining() < self.start_reserve_s:
                return False
            if self.slots.acquire(timeout=0.5):
                with self.lock:
                    self.holding += 1
                    self.state.max_running = max(self.state.max_running, self.holding)
                return True


class _History:
    """The fan-out's own row in the home database's run history (`GET /runs/<id>`, `pgkeeper status`).
    Best effort: a home database that cannot be reached costs the fan-out its row, nothing else."""

    def __init__(self, spec: JobSpec, plan: Plan, run_id: str) -> None:
        self.spec, self.plan, self.run_id = spec, plan, run_id

    def _do(self, work: Any) -> None:
        db: Database | None = None
        try:
            db = Database.from_settings(self.plan.home().database, self.spec.name)
            runs.ensure_schema(db.conn, cache_key=db.conninfo)
            work(db.conn)
        except (PgkeeperError, psycopg.Error) as exc:
            logger.warning("could not record the fan-out in the home database's run history",
                           extra={"error": first_line(exc)})
        finally:
            if db is not None:
                db.close()

    def running(self, request: JobEvent, options: dict[str, Any], seconds: float) -> None:
        def start(conn: psycopg.Connection) -> None:
            if runs.start(conn, self.run_id, self.spec.name, "fleet", request.request_id, options,
                          deadline_s=seconds) is not None:
                runs.extend(conn, self.run_id, deadline_s=seconds)  # a continuation: still running
        self._do(start)

    def finished(self, status: str, report: dict[str, Any]) -> None:
        self._do(lambda conn: runs.finish(conn, self.run_id, status, report))


def new_state(spec: JobSpec, plan: Plan) -> FanOutState:
    """A fan-out not yet begun: every member waiting, each with the run id its run will have."""
    assert plan.fleet is not None
    return FanOutState(fleet_run_id=runs.new_run_id(), job=spec.name, started_at=time.time(),
                       members=[MemberRun(database=name, run_id=runs.new_run_id()) for name in plan.fleet.names()])


def fan_out(spec: JobSpec, request: JobEvent, plan: Plan, options: Any, context: Any,
            budget: Budget) -> dict[str, Any]:
    """Run `spec` on every fleet member (or carry on a fan-out begun in an earlier invocation);
    `options` are the request's, validated by the runner."""
    from . import heartbeat, runner

    assert plan.fleet is not None
    state = FanOutState.model_validate(request.fleet) if request.fleet is not None else new_state(spec, plan)
    logger.append_keys(job=spec.name, run_id=state.fleet_run_id, trigger=request.trigger)
    logger.info("fleet fan-out", extra={"databases": len(state.members), "concurrency": plan.fleet.concurrency,
                                        "continuation": state.continuations})
    window = spec.alarm_window(options) if spec.alarm_window else None
    beat = heartbeat.for_window(plan.heartbeat, window)  # the plan's heartbeat is the fleet's
    if beat and request.fleet is None:  # its start, once
        beat.ping("start", seconds_left=budget.remaining())
    options_json = options.model_dump(mode="json", exclude_defaults=True)
    history = _History(spec, plan, state.fleet_run_id)
    history.running(request, options_json, budget.seconds_to_end())
    if not _Coordinator(spec, request, plan, options_json, context, budget, state).run():
        if state.continuations < MAX_CONTINUATIONS:
            continued = _continue(spec, request, context, state)
            if continued is not None:
                return continued
            _give_up(state, "the fan-out could not continue in a new invocation")
        else:
            _give_up(state, f"no end seen after {MAX_CONTINUATIONS} invocations of the fan-out")
    report = _report(plan, state)
    runner.fleet_outcome(spec, report.status, report, window, beat, budget)
    result: dict[str, Any] = {"run_id": state.fleet_run_id, "job": spec.name, "status": report.status,
                              "report": report.model_dump(mode="json")}
    history.finished(report.status, result["report"])
    return result


def _give_up(state: FanOutState, why: str) -> None:
    """Members not seen to finish are failed in the report (their own rows still say how they end)."""
    for member in state.members:
        if member.status in _FINISHED:
            continue
        where = ("never started" if member.status == "pending" else
                 f"its run {member.run_id} in {member.database} may still finish; see its run history")
        member.status, member.error, member.finished_at = "failed", f"{why}: {where}", time.time()


def _continue(spec: JobSpec, request: JobEvent, context: Any, state: FanOutState) -> dict[str, Any] | None:
    """Hand the fan-out to a new invocation; None when that cannot be asked for (the caller reports)."""
    state.continuations += 1
    payload = {"job": spec.name, "options": request.options, "trigger": "fleet", "request_id": request.request_id,
               "fleet": state.model_dump(mode="json")}
    try:
        get_invoker().invoke_async(self_function_name(context), payload)
    except Exception as exc:  # raised, Lambda would retry the whole fan-out and repeat finished members
        logger.error("the fan-out could not continue in a new invocation", extra={"error": str(exc)[:500]})
        return None
    counts = Counter(m.status for m in state.members)
    logger.info("fleet fan-out continues in a new invocation", extra={"counts": dict(counts)})
    return {"run_id": state.fleet_run_id, "job": spec.name, "status": "continued",
            "report": {"fleet": True, "counts": dict(counts), "continuations": state.continuations}}


def _report(plan: Plan, state: FanOutState) -> FleetReport:
    assert plan.fleet is not None
    counts = Counter(m.status for m in state.members)
    if counts["succeeded"] == len(state.members):
        status: Literal["succeeded", "partial", "failed"] = "succeeded"
    elif counts["failed"]:
        status = "failed"
    else:
        status = "partial"
    not_ok = [f"{m.database} {m.status}" + (f" ({m.error[:200]})" if m.error else "")
              for m in state.members if m.status != "succeeded"]
    summary = f"{counts['succeeded']} of {len(state.members)} databases succeeded" + (
        ": " + "; ".join(not_ok[:5]) if not_ok else "")
    return FleetReport(status=status, summary=summary, counts=dict(counts), concurrency=plan.fleet.concurrency,
                       max_running=state.max_running, continuations=state.continuations, databases=state.members,
                       duration_s=round(time.time() - state.started_at, 3))
