"""Grandfather-father-son retention over a simulated year (a pure function: no S3, no database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgkeeper.backup.retention import decide
from pgkeeper.plan.backup import Retention


@dataclass(frozen=True)
class B:
    key: str
    taken_at: datetime


def at(day: str, hour: int = 2) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def year_2024() -> list[B]:
    """A daily 02:00 backup all of 2024 (a leap year), none on Dec 20-22 (the job was broken), and an
    extra labelled backup on Dec 31 at 14:00 (before a migration)."""
    out = []
    day = at("2024-01-01")
    while day.year == 2024:
        if not ("2024-12-20" <= day.date().isoformat() <= "2024-12-22"):
            out.append(B(day.strftime("%Y-%m-%d"), day))
        day += timedelta(days=1)
    out.append(B("2024-12-31-before-migration", at("2024-12-31", 14)))
    return out


POLICY = Retention(daily=7, weekly=4, monthly=12, min_keep=3)

EXPECTED = {
    # newest three, whatever their dates (min_keep)
    "2024-12-31-before-migration", "2024-12-31", "2024-12-30",
    # the last seven days that HAVE a backup (newest of each)
    "2024-12-29", "2024-12-28", "2024-12-27", "2024-12-26", "2024-12-25",
    # newest of the last four ISO weeks: 2025-W01 (Dec 30-31), W52, W51 (the gap's week: Dec 19), W50
    "2024-12-19", "2024-12-15",
    # newest of each of the last twelve months
    "2024-11-30", "2024-10-31", "2024-09-30", "2024-08-31", "2024-07-31", "2024-06-30",
    "2024-05-31", "2024-04-30", "2024-03-31", "2024-02-29", "2024-01-31",
}


def test_a_year_of_daily_backups_keeps_exactly_the_gfs_set():
    backups = year_2024()
    decision = decide(backups, POLICY)
    assert {b.key for b in decision.keep} == EXPECTED
    assert len(decision.delete) == len(backups) - len(EXPECTED) == 343
    assert decision.reasons["2024-12-19"] == ["weekly 2024-W51"]
    assert decision.reasons["2024-02-29"] == ["monthly 2024-02"]
    assert "newest" in decision.reasons["2024-12-31-before-migration"]


def test_pruning_every_day_for_a_year_ends_with_the_same_set_and_never_loses_the_newest():
    stored: list[B] = []
    bound = POLICY.daily + POLICY.weekly + POLICY.monthly + POLICY.min_keep
    for backup in sorted(year_2024(), key=lambda b: b.taken_at):
        stored.append(backup)
        decision = decide(stored, POLICY)
        assert backup in decision.keep, backup.key
        assert len(decision.keep) <= bound
        deleted = {b.key for b in decision.delete}
        stored = [b for b in stored if b.key not in deleted]
    assert {b.key for b in stored} == EXPECTED


def test_a_month_without_backups_does_not_cost_older_monthlies():
    backups = [b for b in year_2024() if not b.key.startswith("2024-06")]
    kept = {b.key for b in decide(backups, POLICY).keep}
    assert "2024-06-30" not in kept
    assert {"2024-05-31", "2024-01-31"} <= kept  # twelve months *with* backups reach back to January


def test_min_keep_protects_recent_backups_when_all_counts_are_zero():
    backups = year_2024()
    decision = decide(backups, Retention(daily=0, weekly=0, monthly=0, min_keep=2))
    assert [b.key for b in decision.keep] == ["2024-12-31-before-migration", "2024-12-31"]


def test_nothing_to_decide_for_an_empty_bucket():
    decision = decide([], POLICY)
    assert decision.keep == [] and decision.delete == []


# --- S3 Object Lock, in moto's S3 ----------------------------------------------------------------

def test_object_lock_over_a_simulated_year_never_deletes_a_locked_backup(aws):
    """Daily backups and retention for a year in a bucket with Object Lock: kept backups are locked
    to the end of their GFS slot, and a backup retention would delete while its lock runs is
    reported and left, then deleted once the lock has run out. Every delete S3 is asked for is
    checked against the object's lock at that moment. (The simulated days lie ahead of the real
    clock: S3 accepts only retain-until dates in the future.)"""
    import boto3

    from pgkeeper.backup.job import _prune
    from pgkeeper.backup.store import BackupStore

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="locked", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    today = [at("2027-01-01")]
    deletes_while_locked: list[str] = []

    class Watched(BackupStore):
        def delete_key(self, key: str) -> None:
            self._check(key)
            super().delete_key(key)

        def delete(self, ref, listing=None) -> None:  # type: ignore[no-untyped-def]
            self._check(ref.key)
            super().delete(ref, listing)

        def _check(self, key: str) -> None:
            until = self.locked_until(key)  # what S3 says, the moment before the delete
            if until is not None and until > today[0]:
                deletes_while_locked.append(key)

    store = Watched(s3, "locked", "pgkeeper/", "app")
    policy = Retention(daily=2, weekly=2, monthly=1, min_keep=1)  # few kept: a year of S3 calls stays short
    reported, pruned_total = set(), set()
    while today[0] < at("2028-01-01"):
        key = store.new_key(today[0], f"run-{today[0]:%Y%m%d}", None)
        s3.put_object(Bucket="locked", Key=key, Body=b"dump")
        s3.put_object(Bucket="locked", Key=store.manifest_key(key), Body=b"{}")
        pruned, _kept, _, locked = _prune(store, policy, now=today[0])
        reported |= {b.key for b in locked}
        pruned_total |= set(pruned)
        today[0] += timedelta(days=1)
    assert deletes_while_locked == []
    assert len(pruned_total) > 300  # a year of dailies went, each once its lock ran out
    assert reported, "some backup left its GFS slot while still locked (a weekly slot ends before 14 days)"
    assert reported & pruned_total, "a backup left for its lock is deleted once the lock ran out"
    for ref in store.list():  # what is kept is locked at least to the end of its slot
        assert store.locked_until(ref.key) is not None and store.locked_until(ref.key) > today[0] - timedelta(days=1)
    assert len(store.list()) <= 2 + 2 + 1 + 1 + 3  # what the policy keeps, and a few waiting for their lock


def test_lock_until_counts_a_weekly_or_monthly_slot_only_once_its_period_ended():
    from pgkeeper.backup.retention import lock_until

    policy = Retention(daily=7, weekly=4, monthly=12)
    sunday = at("2027-01-31")  # the last day of ISO week 2027-W04 and of January
    assert lock_until(sunday, ["daily 2027-01-31", "weekly 2027-W04", "monthly 2027-01"], policy,
                      now=at("2027-01-31", 3)) == sunday + timedelta(days=7)  # both periods still open
    assert lock_until(sunday, ["weekly 2027-W04", "monthly 2027-01"], policy,
                      now=at("2027-02-01")) == sunday + timedelta(days=12 * 31)
    assert lock_until(at("2027-01-27"), ["weekly 2027-W04"], policy, now=at("2027-02-01")) == \
        at("2027-01-27") + timedelta(days=28)
