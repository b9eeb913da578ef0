"""The manifest: what a backup holds and how to check it, written after everything else.

Its presence is what makes a dump a backup (store.py). A restore, with pgkeeper or by hand,
checks the dump's SHA-256 against `sha256` and the restored row counts against `tables`.

The manifest is an on-disk format read by later versions of pgkeeper (and by people with jq):
`format` names it and its major version. A reader accepts every major version it knows and
ignores fields it does not (added within a major version); anything else is refused by name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import __version__ as pgkeeper_version
from ..errors import PgkeeperError
from ..jobs import SparseModel
from .pipeline import UploadResult
from .snapshot import TableCount

FORMAT_NAME = "pgkeeper-backup"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
FORMAT_V2 = f"{FORMAT_NAME}/2"
"""An encrypted or sharded backup's manifest: version 2, so a pgkeeper that cannot decrypt or put
parts together refuses it by name instead of restoring a piece or calling the object damaged. Other
backups stay version 1 (every reader reads them)."""
READABLE_VERSIONS = frozenset({1, 2})


class ManifestError(PgkeeperError):
    """A manifest this pgkeeper cannot read (damaged, or written in a format it does not know)."""

    status = 422
    reason = "bad_manifest"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class Archive(_Part):
    format: Literal["custom"] = "custom"
    pg_dump_args: list[str] = Field(default_factory=lambda: ["-Fc", "-Z0"])
    compression: Literal["zstd"] = "zstd"
    zstd_level: int
    zstd_threads: int


class Encryption(_Part):
    """How the stored object is sealed: `age(zstd(pg_dump))`, for any one of `recipients`' identities."""

    method: Literal["age"] = "age"
    recipients: list[str]


class ShardRef(_Part):
    """One part of a sharded backup: its own archive (one pg_dump section, or the data of some tables)."""

    name: str
    section: Literal["pre-data", "data", "post-data"]
    key: str
    sha256: str
    bytes_in: int
    bytes_out: int
    tables: list[str] = Field(default_factory=list)
    """A data part's tables (`schema.name`); shard s00 also holds every table no other part names."""


class TableRef(_Part):
    schema_name: str = Field(alias="schema")
    name: str


class TableRows(TableRef, SparseModel):
    SPARSE: ClassVar[frozenset[str]] = frozenset({"checksum"})

    rows: int
    checksum: str | None = None
    """Only with `backup.content_checksums` (snapshot.py's _CHECKSUM); left out of the document otherwise."""


class Excluded(_Part):
    schemas: list[str] = Field(default_factory=list)
    tables: list[str] = Field(default_factory=list)
    table_data: list[str] = Field(default_factory=list)


class Decoded(_Part):
    """The full decode of the archive: how many bytes, and where (in the upload's pipeline, the same
    bytes by the SHA-256, or while reading the object back)."""

    bytes: int
    where: Literal["upload", "read-back"]


class RestoreCheck(_Part, SparseModel):
    SPARSE: ClassVar[frozenset[str]] = frozenset({"checksums_match"})

    rows_match: bool
    rows: int
    checksums_match: bool | None = None
    """Set when the backup recorded content checksums and the restore matched every one."""


class Verification(SparseModel):
    """How a backup was proven before its manifest was written (verify.py). Manifests written by
    earlier versions hold only some of these keys (or others, such as `bytes`): every key but the
    first three is optional and left out when absent, and keys this version does not know are kept,
    so a manifest read and written again is the same document."""

    model_config = ConfigDict(frozen=True, extra="allow")
    SPARSE: ClassVar[frozenset[str]] = frozenset({"bytes_read", "decoded", "tables", "restore", "duration_s",
                                                  "sealed"})

    mode: Literal["list", "restore"]
    ok: bool
    sha256: Literal["match"]
    bytes_read: int | None = None
    decoded: Decoded | None = None
    tables: int | None = None
    """Tables whose data the archive's table of contents holds, as counted in the snapshot."""
    restore: RestoreCheck | None = None
    """`restore` mode: the scratch database's row counts against the manifest's."""
    duration_s: float | None = None
    sealed: bool | None = None
    """Encrypted, and verified without an identity: the stored bytes' SHA-256 and the age header (one
    stanza per recipient) were checked; the table of contents could not be read (the compressed
    stream was decoded in full before encryption, in the upload's pipeline)."""


class Manifest(BaseModel):
    """One backup: the object, its checksum, the snapshot's exact row counts, how it was verified."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    format: str = FORMAT
    pgkeeper_version: str = pgkeeper_version
    key: str
    bucket: str
    database: str
    server: str
    server_version: str
    pg_dump_version: str
    archive: Archive
    sha256: str
    bytes_in: int
    bytes_out: int
    ratio: float | None
    parts: int
    part_size: int
    snapshot: str
    started_at: str
    run_id: str
    label: str | None = None
    tables: list[TableRows]
    rows: int
    extension_tables: list[TableRef] = Field(default_factory=list)
    excluded: Excluded = Field(default_factory=Excluded)
    timings: dict[str, float] = Field(default_factory=dict)
    verification: Verification | None = None
    """How the backup was proven before this manifest was written (verify.py's report)."""
    finished_at: str | None = None
    encryption: Encryption | None = None
    """Set only in format 2: the object must be decrypted (age) before it is decompressed."""
    shards: list[ShardRef] | None = None
    """Set only in format 2: the backup is these parts (`key`/`sha256` above are the pre-data part's;
    `bytes_in`/`bytes_out` the sums). Restore: pre-data, the data parts (in parallel), post-data."""

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        name, _, version = value.partition("/")
        if name != FORMAT_NAME or not version.isdigit() or int(version) not in READABLE_VERSIONS:
            raise ValueError(f"{value!r} is not a backup format this pgkeeper reads "
                             f"({', '.join(f'{FORMAT_NAME}/{v}' for v in sorted(READABLE_VERSIONS))})")
        return value

    @model_validator(mode="after")
    def _v2_iff_sealed_or_sharded(self) -> Manifest:
        needs_v2 = self.encryption is not None or self.shards is not None
        if (self.format == FORMAT_V2) != needs_v2:
            raise ValueError(f"format {self.format} does not match the backup (only {FORMAT_V2} manifests describe "
                             "encrypted or sharded backups)")
        return self

    @classmethod
    def parse(cls, data: bytes | str, where: str) -> Manifest:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(document)"
            raise ManifestError(f"manifest {where} is not readable: {field}: {first['msg']} "
                                f"({exc.error_count()} problem(s))") from None

    def to_json(self) -> bytes:
        # A format-1 manifest stays the document every earlier reader knows: no `encryption: null`.
        skip = {k for k in ("encryption", "shards") if getattr(self, k) is None}
        return self.model_dump_json(by_alias=True, indent=2, exclude=skip or None).encode()

    def table_names(self) -> list[tuple[str, str]]:
        return [(t.schema_name, t.name) for t in self.tables]

    def counts(self) -> dict[tuple[str, str], int]:
        return {(t.schema_name, t.name): t.rows for t in self.tables}

    def table_counts(self) -> list[TableCount]:
        """The tables as the snapshot measured them (rows, and checksums if the backup took them)."""
        return [TableCount(t.schema_name, t.name, t.rows, t.checksum) for t in self.tables]

    def has_checksums(self) -> bool:
        return any(t.checksum is not None for t in self.tables)

    def dump_major(self) -> int:
        head = self.pg_dump_version.split(".")[0]
        return int(head) if head.isdigit() else 0


def build(
    *,
    result: UploadResult,
    bucket: str,
    database: str,
    server: str,
    server_version: str,
    pg_dump_version: str,
    snapshot_id: str,
    started_at: float,
    counts: list[TableCount],
    extension_tables: list[tuple[str, str]],
    excluded: Excluded,
    level: int,
    threads: int,
    run_id: str,
    label: str | None,
    timings: dict[str, float],
    recipients: list[str] | None = None,
    shards: list[ShardRef] | None = None,
) -> Manifest:
    return Manifest(
        format=FORMAT_V2 if recipients or shards else FORMAT,
        encryption=Encryption(recipients=recipients) if recipients else None,
        shards=shards,
        key=result.key, bucket=bucket, database=database, server=server, server_version=server_version,
        pg_dump_version=pg_dump_version, archive=Archive(zstd_level=level, zstd_threads=threads),
        sha256=result.sha256, bytes_in=result.bytes_in, bytes_out=result.bytes_out,
        ratio=round(result.bytes_in / result.bytes_out, 3) if result.bytes_out else None,
        parts=result.parts, part_size=result.part_size, snapshot=snapshot_id, started_at=_iso(started_at),
        run_id=run_id, label=label,
        tables=[TableRows(schema_name=c.schema, name=c.name, rows=c.rows, checksum=c.checksum) for c in counts],
        rows=sum(c.rows for c in counts),
        extension_tables=[TableRef(schema_name=s, name=n) for s, n in extension_tables], excluded=excluded,
        timings={k: round(v, 3) for k, v in timings.items()},
    )
