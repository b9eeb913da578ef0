"""The manifest: what a backup holds and how to check it, written after everything else.

Its presence is what makes a dump a backup (store.py). A restore, with pgkeeper or by hand,
checks the dump's SHA-256 against `sha256` and the restored row counts against `tables`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import __version__ as pgkeeper_version
from .pipeline import UploadResult
from .snapshot import TableCount

FORMAT = "pgkeeper-backup/1"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    excluded: dict[str, list[str]],
    level: int,
    threads: int,
    run_id: str,
    label: str | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "pgkeeper_version": pgkeeper_version,
        "key": result.key,
        "bucket": bucket,
        "database": database,
        "server": server,
        "server_version": server_version,
        "pg_dump_version": pg_dump_version,
        "archive": {"format": "custom", "pg_dump_args": ["-Fc", "-Z0"], "compression": "zstd",
                    "zstd_level": level, "zstd_threads": threads},
        "sha256": result.sha256,
        "bytes_in": result.bytes_in,
        "bytes_out": result.bytes_out,
        "ratio": round(result.bytes_in / result.bytes_out, 3) if result.bytes_out else None,
        "parts": result.parts,
        "part_size": result.part_size,
        "snapshot": snapshot_id,
        "started_at": _iso(started_at),
        "run_id": run_id,
        "label": label,
        "tables": [{"schema": c.schema, "name": c.name, "rows": c.rows} for c in counts],
        "rows": sum(c.rows for c in counts),
        "extension_tables": [{"schema": s, "name": n} for s, n in extension_tables],
        "excluded": excluded,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def tables_of(manifest: dict) -> list[tuple[str, str]]:
    return [(t["schema"], t["name"]) for t in manifest.get("tables", [])]


def counts_of(manifest: dict) -> dict[tuple[str, str], int]:
    return {(t["schema"], t["name"]): int(t["rows"]) for t in manifest.get("tables", [])}


def dump_major(manifest: dict) -> int:
    return int(str(manifest.get("pg_dump_version", "0")).split(".")[0] or 0)
