"""Every CloudWatch metric pgkeeper emits (namespace `pgkeeper`), in one place.

The code emits only these names and the template's alarms and dashboard read only these: a test
checks both sides, so a renamed metric cannot leave an alarm watching nothing. Dimensions: every
metric carries `service` (Powertools' default, "pgkeeper"); job metrics add `job`; `WorkProven`
adds `window` instead (see below); `RowsDeleted` is emitted once more with `job` and `target`.
"""

from __future__ import annotations

from typing import Final, Literal

NAMESPACE: Final = "pgkeeper"
SERVICE: Final = "pgkeeper"

# --- every job (runner.py): one per run, dimensions job, service -----------------------------------
JOB_SUCCEEDED: Final = "JobSucceeded"
JOB_PARTIAL: Final = "JobPartial"
JOB_FAILED: Final = "JobFailed"
JOB_SKIPPED: Final = "JobSkipped"

WORK_PROVEN: Final = "WorkProven"
"""1 when a run did the work a silence alarm waits for (dimensions window, service): a succeeded run
that was not a dry run; for backup, a verified upload. The dead-man's switch of each window alarms
when this metric is missing for longer than the window allows."""

AlarmWindow = Literal["refresh", "cleanup", "vacuum", "analyze", "backup", "drill"]
"""The silence windows: one per schedule (vacuum's weekly VACUUM and its hourly ANALYZE apart, so
the hourly runs cannot hide a missing weekly one; the backup function's restore drill apart from
its backups: `drill` is the last proven restore)."""
ALARM_WINDOWS: Final[tuple[AlarmWindow, ...]] = ("refresh", "cleanup", "vacuum", "analyze", "backup", "drill")

# --- job figures: dimensions job, service ------------------------------------------------------------
VIEWS_REFRESHED: Final = "ViewsRefreshed"
VIEWS_REPAIRED: Final = "ViewsRepaired"
VIEWS_FAILED: Final = "ViewsFailed"
KEYS_INVALIDATED: Final = "KeysInvalidated"
CACHE_VERSIONS_BUMPED: Final = "CacheVersionsBumped"
CACHE_INVALIDATION_FAILED: Final = "CacheInvalidationFailed"
ROWS_DELETED: Final = "RowsDeleted"
TABLES_VACUUMED: Final = "TablesVacuumed"
TABLES_ANALYZED: Final = "TablesAnalyzed"
TABLES_LEFT_FOR_NEXT_RUN: Final = "TablesLeftForNextRun"
BACKUP_BYTES: Final = "BackupBytes"
BACKUP_SECONDS: Final = "BackupSeconds"
HEALTH_CRITICAL_FINDINGS: Final = "HealthCriticalFindings"
HEALTH_WARNING_FINDINGS: Final = "HealthWarningFindings"
WRAPAROUND_AGE_PCT: Final = "WraparoundAgePct"
HEALTH_FIGURES: Final = (
    WRAPAROUND_AGE_PCT, "MultixactWraparoundAgePct", "LongRunningTransactions", "OldestTransactionSeconds",
    "IdleInTransactionSessions", "InactiveReplicationSlots", "PreparedTransactions", "DeadTuples",
    "TablesNeedingVacuum", "TableBloatBytes", "IndexBloatBytes", "UnusedIndexes", "DuplicateIndexes",
    "InvalidIndexes", "UnindexedForeignKeys", "SequenceMaxUsedPct", "MissingExpectedIndexes", "CacheHitRatioPct",
    "DatabaseSizeBytes",
)
"""What the health report measures (health/checks.py), emitted by the vacuum job's health step."""

COLD_START: Final = "ColdStart"
"""Powertools' own (dimensions function_name, service)."""

ALL: Final = frozenset({
    JOB_SUCCEEDED, JOB_PARTIAL, JOB_FAILED, JOB_SKIPPED, WORK_PROVEN, VIEWS_REFRESHED, VIEWS_REPAIRED, VIEWS_FAILED,
    KEYS_INVALIDATED, CACHE_VERSIONS_BUMPED, CACHE_INVALIDATION_FAILED, ROWS_DELETED, TABLES_VACUUMED,
    TABLES_ANALYZED, TABLES_LEFT_FOR_NEXT_RUN, BACKUP_BYTES, BACKUP_SECONDS, HEALTH_CRITICAL_FINDINGS,
    HEALTH_WARNING_FINDINGS, *HEALTH_FIGURES, COLD_START,
})
