"""Grandfather-father-son retention as a pure function: backups in, keep and delete sets out.

Periods count only when they have a backup (as restic's --keep-daily does): if backups stopped
for a month, the last seven daily backups are still the last seven days that had one, not seven
empty days. Within a period the newest backup is kept. The newest `min_keep` backups are kept
whatever their dates, so the newest backup is never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from ..plan.backup import Retention


class Dated(Protocol):
    # Read-only: a frozen dataclass (BackupRef) qualifies.
    @property
    def key(self) -> str: ...

    @property
    def taken_at(self) -> datetime: ...


B = TypeVar("B", bound=Dated)


@dataclass
class Decision(Generic[B]):
    keep: list[B]
    delete: list[B]
    reasons: dict[str, list[str]] = field(default_factory=dict)
    """key -> why it is kept (`daily 2024-12-31`, `weekly 2024-W52`, `monthly 2024-12`, `newest`)."""


def decide(backups: Sequence[B], policy: Retention) -> Decision[B]:
    """Which backups to keep and which to delete under `policy` (no I/O; order of input irrelevant)."""
    ordered = sorted(backups, key=lambda b: (b.taken_at, b.key), reverse=True)
    reasons: dict[str, list[str]] = {}
    for b in ordered[: policy.min_keep]:
        reasons.setdefault(b.key, []).append("newest")
    rules: list[tuple[str, int, Callable[[datetime], str]]] = [
        ("daily", policy.daily, lambda t: t.strftime("%Y-%m-%d")),
        ("weekly", policy.weekly, lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
        ("monthly", policy.monthly, lambda t: t.strftime("%Y-%m")),
    ]
    for name, count, period in rules:
        seen: set[str] = set()
        for b in ordered:
            if len(seen) >= count:
                break
            p = period(b.taken_at)
            if p not in seen:
                seen.add(p)
                reasons.setdefault(b.key, []).append(f"{name} {p}")
    keep = [b for b in ordered if b.key in reasons]
    delete = [b for b in ordered if b.key not in reasons]
    return Decision(keep=keep, delete=delete, reasons=reasons)
