"""Time as a budget: every loop asks how much is left and stops cleanly before the deadline."""

from __future__ import annotations

import time
from typing import Any


class Budget:
    """Seconds left until the Lambda deadline, minus a reserve to record the run and answer."""

    def __init__(self, seconds: float, reserve_s: float = 5.0) -> None:
        self.deadline = time.monotonic() + max(0.0, seconds - reserve_s)
        self.ends_at = time.monotonic() + seconds
        """When the invocation itself ends (the deadline plus the reserve)."""

    @classmethod
    def from_context(cls, context: Any, *, reserve_s: float = 5.0, default_s: float = 900.0) -> Budget:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        seconds = getter() / 1000.0 if callable(getter) else default_s
        # Short timeouts keep a proportionate reserve rather than losing most of their time.
        return cls(seconds, reserve_s=min(reserve_s, seconds * 0.1))

    def sooner(self, seconds: float) -> Budget:
        """The same invocation with `seconds` more held back: work that must leave time for what
        follows it (a refresh keeps the cache invalidation's time) loops on this one."""
        other = Budget.__new__(Budget)
        other.deadline = self.deadline - max(0.0, seconds)
        other.ends_at = self.ends_at
        return other

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def exhausted(self, need_s: float = 0.0) -> bool:
        """True when less than `need_s` seconds remain: don't start the next unit of work."""
        return self.remaining() <= need_s

    def seconds_to_end(self) -> float:
        """Seconds until the invocation ends, reserve included: how long a run may still be alive."""
        return max(0.0, self.ends_at - time.monotonic())

    def remaining_ms(self, cap_ms: int | None = None) -> int:
        ms = int(self.remaining() * 1000)
        return min(ms, cap_ms) if cap_ms is not None else ms
