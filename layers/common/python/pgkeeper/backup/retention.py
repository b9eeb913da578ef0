"""Grandfather-father-son retention as a pure function: backups in, keep and delete sets out.

Periods count only when they have a backup (as restic's --keep-daily does): if backups stopped
for a month, the last seven daily backups are still the last seven days that had one, not seven
empty days. Within a period the newest backup is kept. The newest `min_keep` backups are kept
whatever their dates, so the newest backup is never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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


def lock_until(taken_at: datetime, reasons: Sequence[str], policy: Retention, now: datetime) -> datetime:
    """How long S3 Object Lock should protect a kept backup: to the end of the longest of its GFS
    slots that is settled. A daily slot lasts `daily` days from the backup; a weekly or monthly slot
    (`weekly` weeks, `monthly` months of 31 days) counts only once its week or month has ended,
    because until then each newer backup takes the slot over, and locking every one of them for a
    year would keep them all. Never shorter than the policy keeps a backup while backups keep
    coming, so retention never wants to delete a backup whose lock it set before the lock runs
    out, except around a month shorter than 31 days (then it waits for the lock)."""
    days = max(policy.daily, 1)
    for reason in reasons:
        kind, _, period = reason.partition(" ")
        if kind == "weekly":
            iso_year, iso_week = period.split("-W")
            ends = date.fromisocalendar(int(iso_year), int(iso_week), 7) + timedelta(days=1)
            if now.date() >= ends:
                days = max(days, 7 * policy.weekly)
        elif kind == "monthly":
            y, m = (int(part) for part in period.split("-"))
            ends = date(y + m // 12, m % 12 + 1, 1)
            if now.date() >= ends:
                days = max(days, 31 * policy.monthly)
    return taken_at + timedelta(days=days)
