"""Reading a backup back: stream the object, check its SHA-256, decompress, feed pg_restore.

One pass, no temp file (but for `restore_backup(jobs > 1)`: pg_restore --jobs needs a file, written
only from a verified stream). When the stream restores into a database, pg_restore runs with
--single-transaction and the final decompressed bytes are held back until the whole object's
SHA-256 has matched the manifest: on a mismatch pg_restore is stopped before it can have read
the end of the archive, so its transaction never commits and nothing is restored.
"""

from __future__ import annotations

import builtins
import hashlib
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import zstandard
from psycopg.conninfo import conninfo_to_dict

from ..db import Database
from ..plan.database import DatabaseSettings
from .chunks import drain, empty_then_end, put_unless_stopped
from .encryption import DecryptingReader
from .errors import BackupError, ChecksumMismatchError, RestoreError, VerificationError
from .pgtools import Tool, child_env, fetch_server_version_num, find, libpq_target
from .pipeline import StderrTail

READ_SIZE = 1024 * 1024

if TYPE_CHECKING:  # the manifest module imports the pipeline; restore only reads the model
    from .manifest import Manifest


class HashingReader:
    """A file-like view of the S3 body that hashes and counts the compressed bytes as they pass."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.sha = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._body.read(size if size and size > 0 else READ_SIZE)
        if data:
            self.sha.update(data)
            self.bytes += len(data)
        return data


class Prefetcher:
    """Reads (and hashes) the object in a thread of its own, a few chunks ahead of the decompressor.

    Download, SHA-256 and decompression then overlap instead of taking turns (each releases the GIL
    for its bulk work). At most `depth` chunks wait, so memory stays bounded. `read()` returns the
    next chunk whatever `size` asks (a short read is allowed), b"" at the end, and raises the
    reading thread's error.
    """

    _END = object()

    def __init__(self, body: Any, *, chunk: int = READ_SIZE, depth: int = 8) -> None:
        self._reader = HashingReader(body)
        self._chunk = chunk
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="pgkeeper-read", daemon=True)
        self._thread.start()

    @property
    def sha(self) -> Any:
        return self._reader.sha

    @property
    def bytes(self) -> int:
        return self._reader.bytes

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._reader.read(self._chunk)
                self._put(data or self._END)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop)

    def read(self, size: int = -1) -> builtins.bytes:  # `bytes` here would name the property above
        if self._done:
            return b""
        item = self._queue.get()
        if item is self._END:
            self._done = True
            if not self._stop.is_set():  # closed: the reading thread may hang on the network; never wait for it
                self._thread.join()  # the hash is complete once the thread is done
            return b""
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """Stop the reading thread (it may be blocked on a full queue or on the network), and wake a
        consumer blocked in `read()` on another thread (age's decryptor) with the end."""
        self._stop.set()
        empty_then_end(self._queue, self._END)


class Sink:
    """A pg_restore process fed on stdin. `may_stop_early`: `pg_restore --list` stops reading after
    the table of contents, which is success, not a broken pipe."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, may_stop_early: bool = False,
                 capture_stdout: bool = False, stdout_pipe: bool = False) -> None:
        self.name = name
        self.may_stop_early = may_stop_early
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if capture_stdout or stdout_pipe else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None  # stdin=PIPE
        self.stdin: IO[bytes] = self.proc.stdin
        self.stderr = StderrTail(self.proc.stderr)
        self.stdout_lines: list[str] = []
        self._reader = None
        if capture_stdout:
            self._reader = threading.Thread(target=self._read_stdout, daemon=True)
            self._reader.start()
        self.open = True

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        try:
            self.stdin.write(data)
        except (BrokenPipeError, ValueError):  # ValueError: stdin already closed by kill()
            self.open = False
            if not self.may_stop_early:
                raise BackupError(f"{self.name} stopped reading: {self._failure()}") from None

    def finish(self) -> None:
        """Close stdin, wait, raise with pg_restore's own words if it failed."""
        if self.open:
            try:
                self.stdin.close()
            except BrokenPipeError:
                if not self.may_stop_early:
                    raise BackupError(f"{self.name} stopped reading: {self._failure()}") from None
            self.open = False
        rc = self.proc.wait()
        if self._reader is not None:
            self._reader.join(30)
        if rc != 0:
            raise BackupError(f"{self.name} failed: {self._failure()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.open = False

    def _failure(self) -> str:
        rc = self.proc.wait()
        text = self.stderr.text()
        how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        return f"{how}" + (f": {text[-2000:]}" if text else "")


class FileSink:
    """The decompressed archive written to a local file (for `pg_restore --jobs`, which needs to seek);
    removed again when the stream fails, so a tampered object leaves nothing to restore from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = path.open("wb")
        self.open = True

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.open = False

    def kill(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


@dataclass
class StreamStats:
    sha256: str
    bytes_compressed: int
    bytes_decompressed: int
    seconds: float


def stream_archive(
    body: Any,
    sinks: Sequence[Sink | ScriptSink | FileSink],
    *,
    expected_sha256: str | None,
    hold_back: bool,
    decode_all: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    identities: Sequence[Any] | None = None,
) -> StreamStats:
    """Feed the decompressed object to every sink; check the SHA-256 before the last bytes go out.

    `identities`: the object is age-encrypted; it is decrypted with them before it is decompressed
    (the SHA-256 covers the stored, encrypted bytes).

    `decode_all=False`: stop decompressing once every sink has stopped reading (pg_restore --list
    after the table of contents); the rest of the object is still read and hashed.
    On any failure every sink is killed (an unfinished pg_restore --single-transaction commits
    nothing) and the error is raised.
    """
    started = time.monotonic()
    reader = Prefetcher(body)
    plain: Prefetcher | DecryptingReader = reader if identities is None else DecryptingReader(reader, identities)
    decompressed = 0
    pending: bytes | None = None
    try:
        try:
            # zstandard's stubs ask for IO[bytes]; any object with read() is accepted.
            with zstandard.ZstdDecompressor().stream_reader(plain, read_size=READ_SIZE,  # type: ignore[arg-type]
                                                           read_across_frames=True, closefd=False) as zr:
                while True:
                    chunk = zr.read(READ_SIZE)
                    if not chunk:
                        break
                    decompressed += len(chunk)
                    if hold_back:
                        if pending is not None:
                            _feed(sinks, pending)
                        pending = chunk
                    else:
                        _feed(sinks, chunk)
                    if on_progress is not None:
                        on_progress(reader.bytes, decompressed)
                    if not decode_all and not any(sink.open for sink in sinks):
                        break
        except zstandard.ZstdError as exc:
            raise ChecksumMismatchError(f"the object cannot be decompressed ({exc}): it was altered or damaged "
                                        "after upload") from exc
        except (RestoreError, ChecksumMismatchError) as exc:
            if identities is not None and expected_sha256 is not None:
                _raise_if_altered(reader, expected_sha256, exc)  # a damaged header reads as "no matching key"
            raise
        drain(plain)  # bytes after the zstd data would still count in the object's checksum
        drain(reader)
        digest = reader.sha.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ChecksumMismatchError(
                f"SHA-256 of the object is {digest}, the manifest says {expected_sha256}: the object was altered "
                "or damaged after upload; nothing was restored from it"
            )
        if pending is not None:
            _feed(sinks, pending)
        for sink in sinks:
            sink.finish()
    except BaseException:
        for sink in sinks:
            sink.kill()
        raise
    finally:
        if plain is not reader:
            plain.close()
        reader.close()
    return StreamStats(digest, reader.bytes, decompressed, time.monotonic() - started)


def _raise_if_altered(reader: Prefetcher, expected_sha256: str, exc: BaseException) -> None:
    """After a decryption failure: read the rest of the object and, if its SHA-256 is not the
    manifest's, say that (the object was altered) rather than what the decryptor made of it."""
    try:
        drain(reader)
    except Exception:
        return  # the download itself fails: the decryptor's error stands
    digest = reader.sha.hexdigest()
    if digest != expected_sha256:
        raise ChecksumMismatchError(f"SHA-256 of the object is {digest}, the manifest says {expected_sha256}: the "
                                    "object was altered or damaged after upload; nothing was restored from it") from exc


def _feed(sinks: Sequence[Sink | ScriptSink | FileSink], data: bytes) -> None:
    for sink in sinks:
        sink.write(data)


def list_sink(tool: Tool) -> Sink:
    return Sink("pg_restore --list", [tool.path, "--list"], child_env(tool, {}), may_stop_early=True,
                capture_stdout=True)


def restore_sink(tool: Tool, conninfo: str, *, server_version_num: int, with_owners: bool = False,
                 purpose: str = "restore", script: bool | None = None) -> Sink | ScriptSink:
    """pg_restore into `conninfo`, all or nothing (one transaction; the first error stops it).

    pg_restore 17+ starts every session with `SET transaction_timeout = 0`, which servers before 17
    reject, and --single-transaction makes that first error fatal. For such a pair pg_restore writes
    the SQL script instead, the one header line is dropped and psql runs the script.
    """
    argv = [tool.path, "--single-transaction"]
    if not with_owners:
        # Another environment rarely has the same roles; owners and grants would fail the restore.
        argv += ["--no-owner", "--no-privileges"]
    target, env = libpq_target(conninfo, f"pgkeeper/{purpose}")
    if script is None:
        script = tool.major >= 17 and server_version_num < 170000
    if script:
        psql = find("psql")
        writer = Sink("pg_restore", [*argv, "--file", "-"], child_env(tool, {}), stdout_pipe=True)
        runner = Sink("psql", [psql.path, "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1", "--dbname", target],
                      child_env(psql, env))
        return ScriptSink(writer, runner)
    return Sink("pg_restore", [*argv, "--exit-on-error", "--dbname", target], child_env(tool, env))


# The script's preamble: comments, psql meta-commands (\restrict), BEGIN and the session settings.
_HEADER_LINE = re.compile(rb"^(--.*|\\.*|BEGIN;|SET .*|SELECT pg_catalog\.set_config\(.*|)\n$")
_DROP = b"SET transaction_timeout = 0;\n"


def copy_script(src: Any, dst: Any) -> None:
    """Copy pg_restore's SQL script from `src` to `dst` without the preamble's
    `SET transaction_timeout = 0;`; everything after the preamble (data included) is copied as is."""
    while line := src.readline():
        if not _HEADER_LINE.match(line):
            dst.write(line)
            break
        if line != _DROP:
            dst.write(line)
    while chunk := src.read(READ_SIZE):
        dst.write(chunk)


class ScriptSink:
    """pg_restore --file - | (without its transaction_timeout line) | psql, as one sink.

    The script is wrapped in BEGIN/COMMIT by pg_restore itself (--single-transaction), so psql
    commits only when pg_restore wrote the whole script; a psql that is killed, or reaches EOF
    early, leaves the transaction open and the server rolls it back.
    """

    def __init__(self, script: Sink, runner: Sink) -> None:
        self.name = "pg_restore | psql"
        self.may_stop_early = False
        self.script = script
        self.runner = runner
        self.stdout_lines: list[str] = []
        self.error: BaseException | None = None
        self._pump = threading.Thread(target=self._pump_script, daemon=True)
        self._pump.start()

    @property
    def open(self) -> bool:
        return self.script.open

    def _pump_script(self) -> None:
        dst = self.runner.stdin
        try:
            copy_script(self.script.proc.stdout, dst)
            dst.close()
        except BrokenPipeError as exc:
            # psql stopped (ON_ERROR_STOP): stop pg_restore too, the failure is psql's to tell.
            self.error = exc
            self.script.kill()

    def write(self, data: bytes) -> None:
        try:
            self.script.write(data)
        except BackupError:
            if self.error is not None or self.runner.proc.poll() not in (None, 0):
                raise BackupError(f"psql failed: {self.runner._failure()}") from None
            raise

    def finish(self) -> None:
        try:
            self.script.finish()
        except BackupError:
            if self.error is not None:
                raise BackupError(f"psql failed: {self.runner._failure()}") from None
            raise
        self._pump.join()
        if self.error is not None:
            raise BackupError(f"psql failed: {self.runner._failure()}")
        self.runner.open = False
        rc = self.runner.proc.wait()
        if rc != 0:
            raise BackupError(f"psql failed: {self.runner._failure()}")

    def kill(self) -> None:
        # psql first: with its connection gone the open transaction is rolled back, whatever
        # pg_restore had written so far.
        self.runner.kill()
        self.script.kill()


def table_data_entries(toc_lines: list[str]) -> list[str]:
    """`SCHEMA NAME OWNER` of every TABLE DATA entry in `pg_restore --list` output."""
    out = []
    for line in toc_lines:
        if line.startswith(";") or "; " not in line:
            continue
        rest = line.split("; ", 1)[1].split(" ", 2)
        if len(rest) == 3 and rest[2].startswith("TABLE DATA "):
            out.append(rest[2].removeprefix("TABLE DATA "))
    return out


def target_database(target: str, settings: DatabaseSettings | None = None) -> Database:
    """The database a backup is restored into, reached like every pgkeeper connection: `settings`
    (the plan's `database`, else their defaults) give the timeouts; `pgkeeper/restore/...`."""
    return Database.for_url(target, settings or DatabaseSettings(), "restore")


def user_tables(conninfo: str, settings: DatabaseSettings | None = None) -> int:
    """How many tables the target database already has outside the system schemas."""
    with target_database(conninfo, settings).connect(autocommit=True, purpose="check") as conn:
        row = conn.execute(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
            "AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema']) AND n.nspname !~ '^pg_'"
        ).fetchone()
    assert row is not None  # an aggregate without GROUP BY: always one row
    return int(row[0])


def dbname(conninfo: str) -> str:
    return str(conninfo_to_dict(conninfo).get("dbname") or "")


def restore_backup(
    store: Any,
    ref: Any,
    target: str,
    tool: Tool,
    *,
    manifest: Manifest,
    with_owners: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    script: bool | None = None,
    settings: DatabaseSettings | None = None,
    jobs: int = 1,
    workdir: Path | None = None,
    identities: Sequence[Any] | None = None,
) -> dict:
    """Restore backup `ref` into the database `target` and compare its row counts with the manifest.

    The SHA-256 is checked in the same pass, before pg_restore may commit (see the module doc).
    pgkeeper's own connections to `target` use `settings` (see `target_database`).
    Returns {"tables", "rows", "mismatches": [...], "seconds", ...}; raises on any failure.

    `jobs` > 1: pg_restore --jobs needs a seekable archive and cannot run in one transaction, so the
    object is first decompressed into a file in `workdir` (its SHA-256 checked before pg_restore
    starts: a tampered object restores nothing), then restored in parallel; a failure then can
    leave a partial restore in the target, which the error says. Falls back to one stream when the
    pair pg_restore/server needs the script path (`parallel_blocker`).
    """
    from .snapshot import compare, measure_tables

    identities = require_identities(manifest, identities, ref.key)
    db = target_database(target, settings)
    with db.connect(autocommit=True, purpose="check") as conn:
        version_num = fetch_server_version_num(conn)
    if manifest.shards is not None:
        stats = restore_parts(store.s3, store.bucket, manifest, target, tool, server_version_num=version_num,
                              with_owners=with_owners, identities=identities, jobs=jobs, script=script,
                              on_progress=on_progress)
        jobs = max(1, jobs)
    elif jobs > 1 and not parallel_blocker(tool, version_num):
        body = store.s3.get_object(Bucket=store.bucket, Key=ref.key)["Body"]
        stats = _restore_parallel(body, target, tool, manifest=manifest, jobs=jobs, with_owners=with_owners,
                                  on_progress=on_progress, workdir=workdir, identities=identities)
    else:
        jobs = 1
        body = store.s3.get_object(Bucket=store.bucket, Key=ref.key)["Body"]
        sink = restore_sink(tool, target, server_version_num=version_num, with_owners=with_owners, script=script)
        stats = stream_archive(body, [sink], expected_sha256=manifest.sha256, hold_back=True,
                               on_progress=on_progress, identities=identities)
    checksums = manifest.has_checksums()
    with db.connect(autocommit=True, purpose="count") as conn:
        restored = measure_tables(conn, manifest.table_names(), checksums=checksums)
    mismatches = [{"schema": d.schema, "name": d.name, "what": d.what, "manifest": d.manifest, "restored": d.restored}
                  for d in compare(manifest.table_counts(), restored)]
    return {
        "key": ref.key,
        "tables": len(manifest.tables),
        "rows": sum(m.rows for m in restored.values()),
        "checksums": checksums,
        "mismatches": mismatches,
        "sha256": stats.sha256,
        "bytes_compressed": stats.bytes_compressed,
        "bytes_restored": stats.bytes_decompressed,
        "seconds": round(stats.seconds, 3),
        "jobs": jobs,
    }


def restore_parts(s3: Any, bucket: str, manifest: Manifest, target: str, tool: Tool, *, server_version_num: int,
                  with_owners: bool = False, identities: Sequence[Any] | None = None, jobs: int = 1,
                  script: bool | None = None, purpose: str = "restore",
                  on_progress: Callable[[int, int], None] | None = None) -> StreamStats:
    """A sharded backup into `target`: pre-data, then the data parts (`jobs` at once), then post-data.
    Each part is one stream, its SHA-256 checked before its pg_restore may commit; a failure stops
    there and leaves what earlier parts restored (the error says so)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    assert manifest.shards is not None

    started = time.monotonic()
    totals = [0, 0]
    lock = threading.Lock()
    committed: list[str] = []
    running: set[Sink | ScriptSink] = set()
    stopping = threading.Event()

    def one(part: Any) -> None:
        if stopping.is_set():
            return
        body = s3.get_object(Bucket=bucket, Key=part.key)["Body"]
        sink = restore_sink(tool, target, server_version_num=server_version_num, with_owners=with_owners,
                            purpose=purpose, script=script)
        with lock:
            running.add(sink)
            if stopping.is_set():  # the restore failed while this part was starting: it never commits
                running.discard(sink)
                sink.kill()
                return
        try:
            stats = stream_archive(body, [sink], expected_sha256=part.sha256, hold_back=True, identities=identities)
        finally:
            with lock:
                running.discard(sink)
        with lock:
            committed.append(part.name)
            totals[0] += stats.bytes_compressed
            totals[1] += stats.bytes_decompressed
            if on_progress is not None:
                on_progress(totals[0], totals[1])

    sections = {s: [p for p in manifest.shards if p.section == s] for s in ("pre-data", "data", "post-data")}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="pgkeeper-restore")
    try:
        for part in sections["pre-data"]:
            one(part)
        futures = [pool.submit(one, part) for part in sections["data"]]
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # the first failure, raised
        for future in futures:
            future.result()
        for part in sections["post-data"]:
            one(part)
    except BaseException as exc:
        # Stop everything: no part still queued starts, and a part restoring now is killed before it
        # can commit (its pg_restore runs in one transaction).
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for sink in list(running):
                sink.kill()
        pool.shutdown(wait=True)
        held = ", ".join(sorted(committed)) or "nothing"
        note = (f"; a sharded backup restores part by part: the target holds the parts {held}; drop and "
                "recreate it before trying again")
        if isinstance(exc, VerificationError):
            raise type(exc)(f"{exc}{note}") from exc  # a checksum mismatch keeps its own reason
        if isinstance(exc, Exception):  # S3, pg_restore, anything: the target's state is what matters
            raise RestoreError(f"{exc}{note}") from exc
        raise
    finally:
        pool.shutdown(wait=True)
    return StreamStats(manifest.sha256, totals[0], totals[1], time.monotonic() - started)


def require_identities(manifest: Manifest, identities: Sequence[Any] | None, key: str) -> Sequence[Any] | None:
    """The identities to decrypt with: required for an encrypted backup, refused for a plain one."""
    if manifest.encryption is None:
        return None
    if not identities:
        raise RestoreError(f"{key} is encrypted with age for {len(manifest.encryption.recipients)} recipient(s) "
                           f"({', '.join(r[:16] + '…' for r in manifest.encryption.recipients)}): pass an identity "
                           "file (pgkeeper restore --identity key.txt)")
    return identities


def parallel_blocker(tool: Tool, server_version_num: int) -> str | None:
    """Why `--jobs` cannot be used with this pg_restore and server (None: it can)."""
    if tool.major >= 17 and server_version_num < 170000:
        return (f"pg_restore {tool.major} sets transaction_timeout, which this server ({server_version_num // 10000}) "
                "rejects: the restore runs as one script through psql instead")
    return None


def _restore_parallel(body: Any, target: str, tool: Tool, *, manifest: Manifest, jobs: int, with_owners: bool,
                      on_progress: Callable[[int, int], None] | None, workdir: Path | None,
                      identities: Sequence[Any] | None) -> StreamStats:
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="pgkeeper-restore-", dir=workdir))
    try:
        free = shutil.disk_usage(where).free
        if free < manifest.bytes_in * 1.05:
            raise RestoreError(f"--jobs needs the decompressed archive on disk ({manifest.bytes_in / 1e6:.0f} MB) and "
                               f"{where} has {free / 1e6:.0f} MB free: use --jobs 1 (one stream, no file) or "
                               "TMPDIR on a larger disk")
        archive = FileSink(where / "archive.pgdump")
        stats = stream_archive(body, [archive], expected_sha256=manifest.sha256, hold_back=False,
                               on_progress=on_progress, identities=identities)
        argv = [tool.path, f"--jobs={jobs}", "--exit-on-error"]
        if not with_owners:
            argv += ["--no-owner", "--no-privileges"]
        libpq, env = libpq_target(target, "pgkeeper/restore")
        started = time.monotonic()
        proc = subprocess.run([*argv, "--dbname", libpq, str(archive.path)], env=child_env(tool, env),
                              capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise RestoreError(f"pg_restore --jobs={jobs} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}; the target may hold a partial restore: drop and "
                               "recreate it before trying again")
        return StreamStats(stats.sha256, stats.bytes_compressed, stats.bytes_decompressed,
                           stats.seconds + time.monotonic() - started)
    finally:
        shutil.rmtree(where, ignore_errors=True)
