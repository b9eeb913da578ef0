"""The `backup:` section: where backups go, how they are compressed, verified and retained.

A backup is `pg_dump -Fc -Z0` streamed through zstd into an S3 multipart upload, with a manifest
written last. Retention is grandfather-father-son: counts of daily, weekly and monthly backups.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..errors import ConfigError
from .base import Model, SqlName

BUCKET_ENV = "PGKEEPER_BACKUP_BUCKET"
MIB = 1024 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Retention(Model):
    """Grandfather-father-son: the newest backup of each of the last N days, weeks and months
    that have backups, plus the newest `min_keep` whatever their age."""

    daily: int = Field(7, ge=0, le=3660)
    weekly: int = Field(4, ge=0, le=520)
    monthly: int = Field(12, ge=0, le=1200)
    min_keep: int = Field(3, ge=1, le=1000, description="never fewer backups than this (the newest ones)")
    enabled: bool = Field(True, description="false: never delete anything (e.g. the bucket's lifecycle does it)")


class AgeEncryption(Model):
    """Client-side public-key encryption with age: the backup function holds only the recipients."""

    recipients: list[str] = Field(
        min_length=1, description="age public keys (age1…) or SSH public keys (ssh-ed25519 …); any one of their "
                                  "identities can decrypt")
    identity_env: str | None = Field(
        None, description="env var holding an age identity (AGE-SECRET-KEY-1…), or the ARN of a Secrets Manager "
                          "secret holding one: only needed for verify: restore and restore drills, and it gives "
                          "the backup function the power to read backups")

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        from ..backup.encryption import check_recipient

        return [check_recipient(text) for text in value]


class BackupPlan(Model):
    bucket: str | None = Field(None, description=f"S3 bucket; default: env {BUCKET_ENV} (set by the template)")
    bucket_env: str = Field(BUCKET_ENV, description="env var naming the bucket when `bucket` is not set")
    prefix: str = Field("pgkeeper/", description="key prefix; backups go under <prefix><database>/")
    compression_level: int = Field(3, ge=1, le=19, description="zstd level: 3 is fast; 19 is small and slow")
    compression_threads: int = Field(-1, ge=-1, le=64, description="zstd worker threads; -1: one per CPU")
    part_size_mib: int = Field(8, ge=5, le=512, description="S3 multipart part size (doubles every 1000 parts)")
    upload_concurrency: int = Field(4, ge=1, le=16, description="parts uploaded at once")
    verify: Literal["list", "restore"] = Field(
        "list",
        description="list: read the object back, check its SHA-256 and pg_restore --list against the manifest; "
                    "restore: also restore into a scratch database and compare row counts, then drop it",
    )
    verify_server_url_env: str | None = Field(
        None, description="env var with a postgres:// URL of the server for the restore test; default: the "
                          "backed-up server (the scratch database is created and dropped there)",
    )
    content_checksums: bool = Field(
        False, description="also record each table's content checksum in the snapshot (one more read of every "
                           "row, in the same scan as the count); restore tests, drills and pgkeeper restore "
                           "then compare contents, not only row counts")
    exclude_schemas: list[str] = Field(default_factory=list, description="schemas left out entirely")
    exclude_tables: list[SqlName] = Field(default_factory=list, description="tables left out (schema and data)")
    exclude_table_data: list[SqlName] = Field(
        default_factory=list, description="tables whose definition is kept but not their rows (logs, sessions)"
    )
    retention: Retention = Field(default_factory=Retention)
    shards: int | Literal["auto"] = Field(
        1, description="data shards dumped in parallel in one snapshot, each its own part (1: one stream); "
                       "auto: one per shard_target_gb of table size")
    shard_target_gb: float = Field(5.0, gt=0, description="auto sharding: table size per data shard")
    shard_workers: Literal["invocations", "threads"] = Field(
        "invocations", description="invocations: each data shard in an asynchronous invocation of the function "
                                   "(its own timeout and CPU); threads: in this invocation")
    encryption: Literal["none", "age"] = Field(
        "none", description="age: encrypt every backup after compression for `age.recipients` (SSE-KMS, the "
                            "bucket's own encryption, applies either way)")
    age: AgeEncryption | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.match(value):
            raise ValueError(f"not a valid S3 bucket name: {value!r}")
        return value

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("between 1 and 64, or auto")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.lstrip("/")
        if value and not value.endswith("/"):
            value += "/"
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> BackupPlan:
        both = set(self.exclude_tables) & set(self.exclude_table_data)
        if both:
            raise ValueError(f"listed in both exclude_tables and exclude_table_data: {', '.join(sorted(both))}")
        if self.encryption == "age" and self.age is None:
            raise ValueError("encryption: age needs `age: {recipients: [age1…]}` (the public keys to encrypt for)")
        return self

    def age_recipients(self) -> list[str] | None:
        """The recipients every new backup is encrypted for; None: not encrypted."""
        return list(self.age.recipients) if self.encryption == "age" and self.age is not None else None

    def resolve_bucket(self) -> str:
        """The bucket from the plan, else from the env var the template sets; else a clear error."""
        bucket = self.bucket or os.environ.get(self.bucket_env, "").strip()
        if not bucket:
            raise ConfigError(f"no backup bucket: set backup.bucket in the plan or the env var {self.bucket_env}")
        if not _BUCKET.match(bucket):
            raise ConfigError(f"{self.bucket_env}: not a valid S3 bucket name: {bucket!r}")
        return bucket
