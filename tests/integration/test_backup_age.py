"""age-encrypted backups: real PostgreSQL, real pg_dump/pg_restore, moto's S3 server, pyrage and age(1).

What a user with a sealed backup needs to be true: the bucket holds no readable byte of the data, the
function that wrote it verified what it could without the key, the key restores it (with pgkeeper
or with the standard tools), and no key, a wrong key or an altered object restores nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import psycopg
import pyrage
import pytest
import test_backup as backup_tests
import zstandard
from test_backup import BUCKET, TABLES, _content, _dbname, _run

from pgkeeper.backup.encryption import AGE_MAGIC, Encryptor, header_stanzas
from pgkeeper.backup.errors import VerificationError
from pgkeeper.cli import main as cli
from pgkeeper.errors import ConfigError
from pgkeeper.plan import Plan

# The backup tests' fixtures (a seeded database, a plan writer, moto's S3 with the bucket), by name.
db_url, plan, s3, seeded = backup_tests.db_url, backup_tests.plan, backup_tests.s3, backup_tests.seeded


@pytest.fixture()
def keys(tmp_path):
    """Two identities: the backup is sealed to both public keys; either private key opens it."""
    ids = [pyrage.x25519.Identity.generate() for _ in range(2)]
    files = []
    for n, identity in enumerate(ids):
        path = tmp_path / f"key{n}.txt"
        path.write_text(f"# created: test\n# public key: {identity.to_public()}\n{identity}\n")
        files.append(path)
    return {"recipients": [str(i.to_public()) for i in ids], "files": files, "identities": ids}


@pytest.fixture()
def sealed(seeded, plan, s3, keys):
    plan(encryption="age", age={"recipients": keys["recipients"]})
    return _run()["report"]


def _restore(key_or_latest: list[str], target: str, seeded: str, *extra: str) -> int:
    return cli(["restore", *key_or_latest, "--to", target, "--bucket", BUCKET, "--database", _dbname(seeded),
                *extra])


def test_an_encrypted_backup_holds_no_plaintext_and_is_verified_sealed(sealed, s3, seeded, keys):
    assert sealed["key"].endswith(".pgdump.zst.age")
    verification = sealed["verification"]
    assert verification["sealed"] is True and verification["sha256"] == "match"
    assert verification["bytes_read"] == sealed["bytes_out"]

    stored = s3.get_object(Bucket=BUCKET, Key=sealed["key"])
    raw = stored["Body"].read()
    assert stored["ContentType"] == "application/age"
    assert raw.startswith(AGE_MAGIC) and header_stanzas(raw[:4096]) == 2
    assert not raw.startswith(b"\x28\xb5\x2f\xfd")  # zstd's frame magic: nothing compressed in the clear
    with psycopg.connect(seeded) as conn:  # no row's text, no archive header, no SQL appears
        sample = conn.execute("SELECT email FROM users WHERE id = 1234").fetchone()[0]
    for plaintext in (sample.encode(), b"PGDMP", b"CREATE TABLE"):
        assert plaintext not in raw
    # Decrypted with one of the keys, it is the zstd stream of a pg_dump archive.
    archive = zstandard.ZstdDecompressor().decompressobj().decompress(pyrage.decrypt(raw, [keys["identities"][1]]))
    assert archive.startswith(b"PGDMP") and len(archive) == sealed["bytes_in"]

    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=sealed["manifest_key"])["Body"].read())
    assert manifest["format"] == "pgkeeper-backup/2"
    assert manifest["encryption"] == {"method": "age", "recipients": keys["recipients"]}


def test_an_encrypted_backup_restores_with_the_identity_and_not_without(sealed, seeded, keys, make_database, capsys):
    target = make_database()
    assert _restore(["--latest"], target, seeded) == 2
    assert "is encrypted with age" in capsys.readouterr().err
    stranger = keys["files"][0].parent / "stranger.txt"
    stranger.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    assert _restore(["--latest"], target, seeded, "--identity", str(stranger)) == 2
    assert "none of the given identities can decrypt" in capsys.readouterr().err
    with psycopg.connect(target) as dst:  # nothing was restored by the refused attempts
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0

    for jobs in ("1", "2"):
        target = make_database()
        assert _restore(["--key", sealed["key"]], target, seeded, "--identity", str(keys["files"][jobs == "2"]),
                        "--jobs", jobs) == 0
        assert "every row count match" in capsys.readouterr().err
        with psycopg.connect(seeded) as src, psycopg.connect(target) as dst:
            for table in TABLES:
                assert _content(dst, table) == _content(src, table), table


def test_without_an_identity_the_refusal_names_the_flag(sealed, seeded, make_database, capsys):
    assert _restore(["--latest"], make_database(), seeded) == 2
    err = capsys.readouterr().err
    assert "is encrypted with age for 2 recipient(s)" in err and "--identity" in err


def test_an_altered_encrypted_object_restores_nothing(sealed, s3, seeded, keys, make_database, capsys):
    raw = bytearray(s3.get_object(Bucket=BUCKET, Key=sealed["key"])["Body"].read())
    raw[len(raw) // 2] ^= 0x01
    s3.put_object(Bucket=BUCKET, Key=sealed["key"], Body=bytes(raw))
    target = make_database()
    assert _restore(["--latest"], target, seeded, "--identity", str(keys["files"][0])) == 2
    err = capsys.readouterr().err
    assert "altered or damaged" in err or "SHA-256 of the object is" in err
    with psycopg.connect(target) as dst:
        assert dst.execute("SELECT count(*) FROM pg_class WHERE relname = 'users'").fetchone()[0] == 0


@pytest.mark.skipif(not shutil.which("age"), reason="age(1) is not installed (apt install age)")
def test_the_standard_tools_recipe_with_age_restores_it(sealed, s3, seeded, keys, make_database, tmp_path):
    """OPERATIONS.md's recipe, as a user without pgkeeper runs it: age -d | zstd -d | pg_restore."""
    dump = tmp_path / "backup.pgdump.zst.age"
    dump.write_bytes(s3.get_object(Bucket=BUCKET, Key=sealed["key"])["Body"].read())
    target = make_database()
    recipe = (f"age -d -i {keys['files'][0]} {dump} | zstd -dc | "
              f"pg_restore --no-owner --no-privileges --single-transaction --exit-on-error -d '{target}'")
    subprocess.run(["bash", "-o", "pipefail", "-c", recipe], check=True, capture_output=True)
    with psycopg.connect(seeded) as src, psycopg.connect(target) as dst:
        for table in TABLES:
            assert _content(dst, table) == _content(src, table), table


def test_a_drill_and_a_restore_test_of_encrypted_backups_use_the_identity_env(seeded, plan, s3, keys, monkeypatch):
    plan(encryption="age", age={"recipients": keys["recipients"][:1], "identity_env": "TEST_AGE_IDENTITY"})
    with pytest.raises(ConfigError, match="TEST_AGE_IDENTITY, which is not set"):
        _run({"verify": "restore"})  # refused before anything is dumped
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)

    monkeypatch.setenv("TEST_AGE_IDENTITY", keys["files"][0].read_text())
    backup = _run({"verify": "restore"})["report"]
    assert backup["verification"]["restore"]["rows_match"] is True and "sealed" not in backup["verification"]
    drill = _run({"drill": True})["report"]
    assert drill["key"] == backup["key"] and drill["rows"] == backup["rows"]

    monkeypatch.setenv("TEST_AGE_IDENTITY", str(keys["identities"][1]))  # a key the backup is not sealed to
    with pytest.raises(Exception, match="none of the given identities can decrypt"):
        _run({"drill": True})


def test_a_drill_of_an_encrypted_backup_without_identity_env_says_what_to_set(sealed, plan, keys):
    with pytest.raises(ConfigError, match="backup.age.identity_env"):
        _run({"drill": True})


def test_plan_refuses_age_without_recipients_or_with_a_bad_one():
    with pytest.raises(ValueError, match="encryption: age needs"):
        Plan.model_validate({"version": 1, "backup": {"encryption": "age"}})
    with pytest.raises(ValueError, match="not an age recipient"):
        Plan.model_validate({"version": 1, "backup": {"encryption": "age", "age": {"recipients": ["age1nope"]}}})
    with pytest.raises(ValueError, match="recipients"):
        Plan.model_validate({"version": 1, "backup": {"encryption": "age", "age": {"recipients": []}}})


def test_the_encryptor_streams_in_bounded_chunks_and_round_trips():
    identity = pyrage.x25519.Identity.generate()
    enc = Encryptor([identity.to_public()])
    data = bytes(range(256)) * 40_000  # 10 MB in 1 MB pushes
    out = bytearray()
    for i in range(0, len(data), 1 << 20):
        out += enc.push(data[i:i + (1 << 20)])
    out += enc.finish()
    assert pyrage.decrypt(bytes(out), [identity]) == data


def test_a_sealed_verification_refuses_an_object_altered_before_the_manifest(seeded, plan, s3, keys, monkeypatch):
    """The stored bytes' SHA-256 is what a sealed verification can prove: a part altered in S3 between
    upload and read-back fails the run, and no backup appears."""
    plan(encryption="age", age={"recipients": keys["recipients"]})
    import pgkeeper.backup.verify as verify_mod

    real = verify_mod._verify_sealed

    def tampered(client, bucket, manifest, started):
        raw = bytearray(s3.get_object(Bucket=BUCKET, Key=manifest.key)["Body"].read())
        raw[-10] ^= 0xFF
        s3.put_object(Bucket=BUCKET, Key=manifest.key, Body=bytes(raw))
        return real(client, bucket, manifest, started)

    monkeypatch.setattr(verify_mod, "_verify_sealed", tampered)
    with pytest.raises(VerificationError, match="SHA-256 of the object is"):
        _run()
    assert [k for k in (o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))
            if k.endswith(".manifest.json")] == []


def test_backups_list_details_names_the_recipients_of_each_backup(sealed, seeded, keys, capsys):
    capsys.readouterr()
    assert cli(["backups", "list", "--json", "--details", "--bucket", BUCKET, "--database", _dbname(seeded)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["backups"]
    assert row["key"] == sealed["key"]
    assert row["recipients"] == ", ".join(r[:16] + "…" for r in keys["recipients"])


def test_a_download_failing_under_the_decryptor_is_reported_as_itself_and_stops_its_thread():
    """Not as a damaged backup: the network's error passes through; closing stops the age thread."""
    from pgkeeper.backup.chunks import drain
    from pgkeeper.backup.encryption import DecryptingReader
    from pgkeeper.backup.restore import Prefetcher

    identity = pyrage.x25519.Identity.generate()
    sealed = pyrage.encrypt(b"x" * 3_000_000, [identity.to_public()])

    class Flaky:
        def __init__(self) -> None:
            self.sent = False

        def read(self, size: int = -1) -> bytes:
            if not self.sent:
                self.sent = True
                return sealed[:1_000_000]
            raise ConnectionResetError("the connection to S3 was reset")

    reader = DecryptingReader(Prefetcher(Flaky()), [identity])
    with pytest.raises(ConnectionResetError):
        drain(reader)

    import threading

    stalled = Prefetcher(type("Slow", (), {"read": lambda self, n=-1: threading.Event().wait(30) and b""})())
    blocked = DecryptingReader(stalled, [identity])
    stalled.close()
    blocked.close()
    deadline = time.monotonic() + 5
    while any(t.name == "pgkeeper-age" and t.is_alive() for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "pgkeeper-age" and t.is_alive()]


def test_a_secret_key_pasted_as_a_recipient_is_refused_without_echoing_it():
    secret = str(pyrage.x25519.Identity.generate())
    with pytest.raises(ValueError) as err:
        Plan.model_validate({"version": 1, "backup": {"encryption": "age", "age": {"recipients": [secret]}}})
    assert "that is a secret key" in str(err.value) and secret[15:30] not in str(err.value)


def test_an_altered_age_header_reads_as_an_altered_object_not_as_a_wrong_key(sealed, s3, seeded, keys,
                                                                             make_database, capsys):
    raw = bytearray(s3.get_object(Bucket=BUCKET, Key=sealed["key"])["Body"].read())
    stanza = raw.index(b"-> X25519 ") + len(b"-> X25519 ")
    raw[stanza + 3] = ord("A") if raw[stanza + 3] != ord("A") else ord("B")  # the first recipient's share
    raw[raw.index(b"-> X25519 ", stanza) + 13] ^= 0x01  # and the second's
    s3.put_object(Bucket=BUCKET, Key=sealed["key"], Body=bytes(raw))
    assert _restore(["--latest"], make_database(), seeded, "--identity", str(keys["files"][0])) == 2
    err = capsys.readouterr().err
    assert "SHA-256 of the object is" in err and "altered or damaged" in err, err


def test_a_download_failing_at_its_first_read_is_not_called_a_damaged_backup():
    from pgkeeper.backup.encryption import DecryptingReader
    from pgkeeper.backup.restore import Prefetcher

    class Broken:
        def read(self, size: int = -1) -> bytes:
            raise TimeoutError("S3 read timed out")

    with pytest.raises(TimeoutError, match="S3 read timed out"):
        DecryptingReader(Prefetcher(Broken()), [pyrage.x25519.Identity.generate()]).read()
