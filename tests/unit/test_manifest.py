"""The backup manifest is an on-disk format: what earlier pgkeeper versions wrote must still read."""

from __future__ import annotations

import json

import pytest

from pgkeeper.backup.manifest import FORMAT, Manifest, ManifestError

# Written by pgkeeper before the manifest was a model (json.dumps(sort_keys=True) of a dict).
V1_AS_WRITTEN_BEFORE = {
    "archive": {"compression": "zstd", "format": "custom", "pg_dump_args": ["-Fc", "-Z0"], "zstd_level": 3,
                "zstd_threads": 0},
    "bucket": "pgk-backups", "bytes_in": 4117504, "bytes_out": 1032208, "database": "app",
    "excluded": {"schemas": [], "table_data": [], "tables": []},
    "extension_tables": [{"name": "spatial_ref_sys", "schema": "public"}],
    "finished_at": "2026-12-01T03:00:09Z", "format": "pgkeeper-backup/1",
    "key": "pgkeeper/app/20261201T030000Z-1438157d.dump.zst", "label": None, "parts": 1, "part_size": 8388608,
    "pg_dump_version": "18.1", "pgkeeper_version": "0.1.0", "ratio": 3.989, "rows": 5003,
    "run_id": "1438157d-2f36-4d64-9d7a-0d3c1a2b3c4d", "server": "127.0.0.1:5432/app",
    "server_version": "17.6", "sha256": "ab" * 32, "snapshot": "00000003-0000001B-1",
    "started_at": "2026-12-01T03:00:00Z",
    "tables": [{"name": "Session", "rows": 5000, "schema": "public"}, {"name": "Entry", "rows": 3,
                                                                       "schema": "Audit Log"}],
    "timings": {"count_s": 0.01, "dump_s": 2.5, "snapshot_s": 0.05, "verify_s": 0.4},
    "verification": {"mode": "list", "ok": True, "sha256": "match"},
}


def test_a_manifest_written_before_it_was_a_model_still_reads_with_the_same_meaning():
    m = Manifest.parse(json.dumps(V1_AS_WRITTEN_BEFORE, sort_keys=True), "s3://b/k")
    assert m.counts() == {("public", "Session"): 5000, ("Audit Log", "Entry"): 3}
    assert m.table_names() == [("public", "Session"), ("Audit Log", "Entry")]
    assert m.dump_major() == 18 and m.sha256 == "ab" * 32
    assert m.verification is not None and m.verification.mode == "list" and m.verification.ok
    # Written again, it is the same document (keys and values), so older readers read ours too.
    assert json.loads(m.to_json()) == V1_AS_WRITTEN_BEFORE


def test_fields_a_newer_minor_version_adds_are_ignored_and_an_unknown_major_is_refused_by_name():
    newer = {**V1_AS_WRITTEN_BEFORE, "restore_drill": {"ok": True}}
    assert Manifest.parse(json.dumps(newer), "s3://b/k").rows == 5003
    with pytest.raises(ManifestError, match="'pgkeeper-backup/9' is not a backup format this pgkeeper reads"):
        Manifest.parse(json.dumps({**V1_AS_WRITTEN_BEFORE, "format": "pgkeeper-backup/9"}), "s3://b/k")
    broken = {k: v for k, v in V1_AS_WRITTEN_BEFORE.items() if k != "sha256"}
    with pytest.raises(ManifestError, match="manifest s3://b/k is not readable: sha256: Field required"):
        Manifest.parse(json.dumps(broken), "s3://b/k")
    with pytest.raises(ManifestError):
        Manifest.parse(b"{not json", "s3://b/k")
    assert FORMAT == "pgkeeper-backup/1"
