"""The ways a backup or a restore fails on purpose, each with a short reason code."""

from __future__ import annotations

from ..errors import ConfigError, PgkeeperError


class BackupError(PgkeeperError):
    """The dump, the upload or the manifest failed; the multipart upload was aborted."""

    reason = "backup_failed"


class VersionMismatchError(ConfigError):
    """pg_dump (or pg_restore) is older than the server (or the archive): it would refuse or mis-dump."""

    reason = "pg_version_mismatch"


class VerificationError(BackupError):
    """The uploaded backup did not read back as written (checksum, table list, restored row counts)."""

    reason = "verification_failed"


class ChecksumMismatchError(VerificationError):
    """The object's SHA-256 differs from the manifest's: it was altered or damaged after upload."""

    reason = "checksum_mismatch"


class RestoreError(PgkeeperError):
    """pg_restore (or psql) failed while restoring; its transaction was rolled back."""

    reason = "restore_failed"
