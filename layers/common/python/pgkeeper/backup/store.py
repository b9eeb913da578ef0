"""The backups in a bucket: only those with a manifest exist, for every reader.

Layout, under the plan's prefix:

    <prefix><database>/<YYYYmmddTHHMMSSZ>-<run>[-<label>].pgdump.zst     the dump (zstd)
    <prefix><database>/<YYYYmmddTHHMMSSZ>-<run>[-<label>].pgdump.zst.age the dump, age-encrypted
    <prefix><database>/<YYYYmmddTHHMMSSZ>-<run>[-<label>].manifest.json  written last

The timestamp in the name orders and dates backups without reading a single manifest, so listing
and retention cost one LIST request per 1,000 objects.
"""

from __future__ import annotations

import builtins
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..errors import NotFoundError
from .manifest import Manifest

DUMP_SUFFIX = ".pgdump.zst"
AGE_SUFFIX = ".age"
DUMP_SUFFIXES = (DUMP_SUFFIX + AGE_SUFFIX, DUMP_SUFFIX)
MANIFEST_SUFFIX = ".manifest.json"
_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<run>[0-9A-Za-z]+)(?:-(?P<label>[a-z0-9][a-z0-9-]*))?$")


@dataclass(frozen=True)
class BackupRef:
    key: str
    manifest_key: str
    taken_at: datetime
    size: int
    label: str | None = None

    @property
    def encrypted(self) -> bool:
        return self.key.endswith(AGE_SUFFIX)


def dump_stem(key: str) -> str | None:
    """The key without its dump suffix; None: not a dump's key."""
    for suffix in DUMP_SUFFIXES:
        if key.endswith(suffix):
            return key.removesuffix(suffix)
    return None


@dataclass(frozen=True)
class Orphan:
    key: str
    last_modified: datetime
    size: int


def s3_client(*, concurrency: int = 4) -> Any:
    """An S3 client for one run (AWS_ENDPOINT_URL is honoured: moto, MinIO, LocalStack)."""
    from ..aws import client

    # A part upload may legitimately take long to answer; the connect stays short (aws.py says why).
    return client("s3", read_timeout_s=120, attempts=3, max_pool_connections=concurrency + 4)


class DeferredClient:
    """An S3 client built in a thread of its own; attribute access waits for it.

    Importing boto3 and loading S3's service model costs about 0.3 s of CPU on a cold start. Built
    in the background, that overlaps the snapshot and pg_dump's own start instead of preceding them.
    A failure to build the client is raised at first use, where any other S3 error would be.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._client: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._build, args=(factory,), name="pgkeeper-s3", daemon=True)
        self._thread.start()

    def _build(self, factory: Callable[[], Any]) -> None:
        try:
            self._client = factory()
        except BaseException as exc:  # raised in the caller's thread at first use
            self._error = exc

    def __getattr__(self, name: str) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return getattr(self._client, name)


def database_folder(database: str) -> str:
    return quote(database, safe="-_.") + "/"


class BackupStore:
    def __init__(self, s3: Any, bucket: str, prefix: str, database: str) -> None:
        self.last_listing: dict[str, dict] | None = None
        self.s3 = s3
        self.bucket = bucket
        self.base = prefix + database_folder(database)

    def new_key(self, taken_at: datetime, run_id: str, label: str | None, *, encrypted: bool = False) -> str:
        stamp = taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        run = re.sub(r"[^0-9A-Za-z]", "", run_id)[:8] or "run"
        return (f"{self.base}{stamp}-{run}" + (f"-{label}" if label else "") + DUMP_SUFFIX
                + (AGE_SUFFIX if encrypted else ""))

    @staticmethod
    def manifest_key(dump_key: str) -> str:
        stem = dump_stem(dump_key)
        return (dump_key if stem is None else stem) + MANIFEST_SUFFIX

    def _objects(self) -> dict[str, dict]:
        objects = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.base):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = obj
        return objects

    def scan(self) -> tuple[list[BackupRef], list[Orphan]]:
        """(complete backups newest first, dumps without a manifest). The listing is kept
        (`last_listing`): retention locks and deletes every part of a backup without listing again."""
        objects = self._objects()
        self.last_listing = objects
        backups, orphans = [], []
        for key, obj in objects.items():
            stem = dump_stem(key)
            if stem is None:
                continue
            m = _NAME.match(stem[len(self.base):])
            if not m:
                continue  # not ours
            manifest = self.manifest_key(key)
            if manifest in objects:
                taken = datetime.strptime(m["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                backups.append(BackupRef(key, manifest, taken, obj["Size"], m["label"]))
            else:
                orphans.append(Orphan(key, obj["LastModified"], obj["Size"]))
        backups.sort(key=lambda b: (b.taken_at, b.key), reverse=True)
        return backups, orphans

    def strays(self, older_than: datetime, objects: dict[str, dict] | None = None) -> builtins.list[str]:
        """Objects of no backup and no orphan dump, last written before `older_than`: what a sharded
        backup's worker wrote after its run had given up (a part, its record). Never a key of ours
        whose stem still has a dump or a manifest."""
        objects = self._objects() if objects is None else objects
        stems: dict[str, builtins.list[str]] = {}
        for key in objects:
            name = key[len(self.base):]
            if "/" in name or not _NAME.match(name.split(".", 1)[0]):
                continue  # not ours
            stems.setdefault(name.split(".", 1)[0], []).append(key)
        out = []
        for stem, keys in stems.items():
            owned = any(k.endswith(MANIFEST_SUFFIX) or dump_stem(k) == self.base + stem for k in keys)
            if not owned:
                out += [k for k in keys if objects[k]["LastModified"] < older_than]
        return sorted(out)

    def list(self) -> list[BackupRef]:
        return self.scan()[0]

    def find(self, key: str) -> BackupRef:
        """A complete backup by its dump or manifest key; NotFoundError when it does not exist."""
        for ref in self.list():
            if key in (ref.key, ref.manifest_key):
                return ref
        raise NotFoundError(f"no complete backup s3://{self.bucket}/{key} (a dump without its manifest "
                            "is not a backup)")

    def latest(self) -> BackupRef:
        backups = self.list()
        if not backups:
            raise NotFoundError(f"no complete backups under s3://{self.bucket}/{self.base}")
        return backups[0]

    def read_manifest(self, ref: BackupRef) -> Manifest:
        body = self.s3.get_object(Bucket=self.bucket, Key=ref.manifest_key)["Body"].read()
        return Manifest.parse(body, f"s3://{self.bucket}/{ref.manifest_key}")

    def write_manifest(self, dump_key: str, manifest: Manifest) -> str:
        key = self.manifest_key(dump_key)
        self.s3.put_object(Bucket=self.bucket, Key=key, ContentType="application/json", Body=manifest.to_json())
        return key

    def delete(self, ref: BackupRef, listing: Collection[str] | None = None) -> None:
        """Manifest first: if a later delete fails, what is left is an invisible orphan, never a
        manifest that points at nothing. Then the dump and every other object of the backup (the
        parts of a sharded one share its stem)."""
        self.s3.delete_object(Bucket=self.bucket, Key=ref.manifest_key)
        self.s3.delete_object(Bucket=self.bucket, Key=ref.key)
        self.delete_stem(ref.key, listing)

    def stem_keys(self, dump_key: str, listing: Collection[str] | None = None) -> builtins.list[str]:
        """The objects of a sharded backup besides its dump and manifest (its parts and their records),
        from `listing` (a scan's) when given, else listed now."""
        stem = dump_stem(dump_key) or dump_key
        if listing is None:
            found: set[str] = set()
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=stem + "."):
                found |= {o["Key"] for o in page.get("Contents", [])}
            listing = found
        return sorted(k for k in listing if k.startswith(stem + ".") and k != dump_key
                      and not k.endswith(MANIFEST_SUFFIX))

    def delete_stem(self, dump_key: str, listing: Collection[str] | None = None) -> None:
        """Every object named `<stem>.…` of the dump `dump_key` but its manifest (deleted first)."""
        for key in self.stem_keys(dump_key, listing):
            self.s3.delete_object(Bucket=self.bucket, Key=key)

    def delete_key(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    # --- S3 Object Lock (a bucket created with BackupObjectLockMode) ------------------------------

    def object_lock_mode(self) -> str | None:
        """GOVERNANCE or COMPLIANCE when the bucket has Object Lock with a default retention, else None."""
        from botocore.exceptions import ClientError

        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("ObjectLockConfigurationNotFoundError", "NoSuchBucket"):
                return None
            raise
        if config.get("ObjectLockEnabled") != "Enabled":
            return None
        mode = config.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
        return str(mode) if mode else "GOVERNANCE"

    def locked_until(self, key: str) -> datetime | None:
        """The current version's retain-until date, or None when it has none (HeadObject carries it
        for a caller allowed s3:GetObjectRetention)."""
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        until = head.get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if until else None

    def lock(self, ref: BackupRef, until: datetime, mode: str, listing: Collection[str] | None = None) -> None:
        """Extend (never shorten: compliance mode forbids it) the lock of a backup's dump and manifest,
        and of a sharded backup's other parts, to `until`."""
        dump_until = self.locked_until(ref.key)
        if dump_until is not None and dump_until >= until:
            return  # set together by this method, so the other parts are locked as long (one HEAD a day)
        # The dump last: a dump locked long enough then means every other part was extended too.
        for key in (*self.stem_keys(ref.key, listing), ref.manifest_key, ref.key):
            current = dump_until if key == ref.key else self.locked_until(key)
            if current is None or current < until:
                self.s3.put_object_retention(Bucket=self.bucket, Key=key,
                                             Retention={"Mode": mode, "RetainUntilDate": until})
