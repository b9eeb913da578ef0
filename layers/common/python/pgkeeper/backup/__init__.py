"""Backups: pg_dump streamed through zstd into S3, a manifest written last, verified, retained.

Modules: `pgtools` (finding pg_dump/pg_restore and their versions), `snapshot` (an exported
snapshot and exact row counts in it), `pipeline` (the dump → zstd → multipart upload stream),
`manifest`, `store` (listing complete backups), `verify`, `retention` (grandfather-father-son)
and `restore`.
"""

from __future__ import annotations

from .errors import BackupError, ChecksumMismatchError, RestoreError, VerificationError, VersionMismatchError

__all__ = ["BackupError", "ChecksumMismatchError", "RestoreError", "VerificationError", "VersionMismatchError"]
