"""Invalidate exactly the keys that depend on a view: version keys INCRed, pattern keys UNLINKed.

Patterns are walked with `SCAN MATCH p COUNT n`, never `KEYS` (which blocks Redis for the whole
keyspace). Each round trip carries the UNLINKs of the keys the previous SCAN found (at most
`batch_size` per UNLINK) together with the next SCAN, so clearing costs one round trip per SCAN
step and no call makes Redis do more than ~`scan_count` keys of work (UNLINK also hands large
values to a background thread instead of freeing them in line). Every call is timed; the report
carries the longest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..budget import Budget
from ..jobs import TerseModel
from ..plan.cache import CachePlan
from .client import CacheClient, CacheCommandError, CacheError, Command


class CacheBudgetError(CacheError):
    """The Lambda's time is nearly up: no call starts that might not finish before the deadline."""

    reason = "cache_out_of_time"


@dataclass
class ViewWork:
    """One view's keys: what to bump and what to clear."""

    view: str
    patterns: list[str]
    version_keys: list[str]


CacheViewStatus = Literal["succeeded", "failed", "not_attempted"]
"""How one view's invalidation ended (`not_attempted`: the cache was lost or time ran out before it)."""


class PatternResult(TerseModel):
    """One pattern of a view: the keys UNLINKed as Redis confirmed them, and whether the SCAN came
    round (`complete`); `note` when an earlier view of the run already cleared it, `error` when a
    command failed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SPARSE: ClassVar[frozenset[str]] = frozenset({"note", "error"})

    pattern: str
    keys_deleted: int = 0
    complete: bool = False
    note: str | None = None
    error: str | None = None


class CacheViewResult(BaseModel):
    """One view's invalidation: its version keys bumped (new values), its patterns cleared."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    view: str
    status: CacheViewStatus = "not_attempted"
    keys_deleted: int = 0
    versions_bumped: int = 0
    versions: dict[str, int] = Field(default_factory=dict)
    patterns: list[PatternResult] = Field(default_factory=list)
    duration_ms: float = 0.0
    """Rounded to 0.1 ms."""
    errors: list[str] = Field(default_factory=list)


class Invalidator:
    """Runs calls against one client, within the budget, keeping call statistics."""

    def __init__(self, client: CacheClient, settings: CachePlan, budget: Budget) -> None:
        self.client = client
        self.settings = settings
        self.budget = budget
        # A call may take its connect and read timeouts in full: it only starts if both fit.
        self.need_s = (settings.connect_timeout_ms + settings.timeout_ms) / 1000
        self.calls = 0
        self.max_call_ms = 0.0
        self.max_unlink_keys = 0
        self._cleared: set[str] = set()
        self.stopped: str | None = None
        """Why no further call should be tried (cache unreachable, out of time), once that happened."""

    def call(self, commands: Sequence[Command]) -> list[Any]:
        if self.budget.exhausted(self.need_s):
            raise CacheBudgetError("stopped: the Lambda's remaining time cannot fit another cache call")
        t0 = time.perf_counter()
        try:
            return self.client.pipeline(commands)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            self.calls += 1
            self.max_call_ms = max(self.max_call_ms, ms)

    def ping(self) -> None:
        """One cheap call first: a dead cache or a wrong token fails once, not once per view."""
        self.call([["PING"]])

    def bump(self, key: str) -> int:
        [value] = self.call([["INCR", key]])
        return int(value)

    def clear(self, pattern: str, entry: PatternResult) -> None:
        """UNLINK every key matching `pattern`, counting into `entry` as Redis confirms deletions
        (so a run cut short still reports what it did); `complete` once the SCAN came round."""
        entry.keys_deleted, entry.complete = 0, False
        if pattern in self._cleared:
            entry.complete, entry.note = True, "already cleared earlier in this run"
            return
        batch, count = self.settings.batch_size, self.settings.scan_count
        cursor: int | None = 0  # None: the SCAN has come back to 0, only UNLINKs remain
        pending: list[Any] = []
        while cursor is not None or pending:
            chunks = [pending[i:i + batch] for i in range(0, len(pending), batch)]
            commands: list[Command] = [["UNLINK", *chunk] for chunk in chunks]
            if cursor is not None:
                commands.append(["SCAN", cursor, "MATCH", pattern, "COUNT", count])
            replies = self.call(commands)
            entry.keys_deleted += sum(int(r) for r in replies[:len(chunks)])
            self.max_unlink_keys = max([self.max_unlink_keys, *(len(c) for c in chunks)])
            pending = []
            if cursor is not None:
                next_cursor, keys = replies[-1]
                pending = list(keys)
                cursor = None if int(next_cursor) == 0 else int(next_cursor)
        entry.complete = True
        self._cleared.add(pattern)

    def run_view(self, work: ViewWork) -> CacheViewResult:
        """Version keys first (readers switch to fresh keys at once), then the old keys go.

        A command error (a version key holding a non-integer) fails that item and the view, and the
        rest of the view still runs. Losing the cache or running out of time fails the view and sets
        `stopped`: the caller attempts no further view.
        """
        result = CacheViewResult(view=work.view)
        t0 = time.perf_counter()
        try:
            for key in work.version_keys:
                try:
                    result.versions[key] = self.bump(key)
                except CacheCommandError as exc:
                    result.errors.append(f"INCR {key}: {exc}")
            for pattern in work.patterns:
                entry = PatternResult(pattern=pattern)
                result.patterns.append(entry)
                try:
                    self.clear(pattern, entry)
                except CacheCommandError as exc:
                    entry.error = str(exc)
                    result.errors.append(f"clear {pattern}: {exc}")
        except CacheError as exc:  # unavailable or out of time: nothing more will get through
            result.errors.append(str(exc))
            self.stopped = str(exc)
        result.versions_bumped = len(result.versions)
        result.keys_deleted = sum(e.keys_deleted for e in result.patterns)
        result.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        result.status = "failed" if result.errors else "succeeded"
        return result
