"""pg_dump → zstd → S3 multipart upload, in one stream: no temp file, bounded memory.

The producer (the calling thread) reads pg_dump's stdout, feeds zstd (whose worker threads
compress without the GIL), hashes the compressed bytes in order (SHA-256), hands them to the
round-trip decoder (roundtrip.py) and cuts them into parts; a small pool uploads parts
concurrently. At most `concurrency + 1` parts exist in memory at once (the decoder holds
references to up to three more, not copies), whatever the database size. On any failure pg_dump
is killed and the multipart upload is aborted, so no object appears; the caller raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import zstandard

from ..log import logger
from .encryption import Encryptor
from .errors import BackupError
from .roundtrip import RoundTrip

READ_SIZE = 1024 * 1024
PIPE_SIZE = 1024 * 1024
PARTS_PER_SIZE_STEP = 1000
"""Part size doubles every 1000 parts: S3 allows 10,000 parts, so 8 MiB parts reach about 8 TB."""


@dataclass
class Progress:
    bytes_in: int = 0
    bytes_out: int = 0
    parts: int = 0
    started: float = 0.0


@dataclass(frozen=True)
class UploadResult:
    key: str
    bytes_in: int
    bytes_out: int
    sha256: str
    parts: int
    dump_s: float
    part_size: int


class Aborted(BackupError):
    """Raised inside the producer when the upload side has already failed."""


ABORT_WAIT_S = 10.0
"""How long an abort may wait for S3; past it the bucket's lifecycle rule removes the upload."""


class Stalled(BackupError):
    """S3 took no answer within the time the run had left (an endpoint that accepts and never answers)."""


class MultipartUpload:
    """One S3 multipart upload with a bounded number of parts in flight.

    Every wait on S3 is bounded by `time_left()` (seconds; default unbounded): handing over a part
    while all slots are taken, creating and completing the upload. A stalled S3 (accepting but not
    answering, so botocore's own read timeout and retries would take minutes) then fails the run in
    time to abort the upload and record the failure, instead of running into Lambda's hard timeout.
    """

    def __init__(self, s3: Any, bucket: str, key: str, *, concurrency: int, metadata: dict[str, str],
                 time_left: Callable[[], float] | None = None, abort_wait_s: float = ABORT_WAIT_S,
                 content_type: str = "application/zstd") -> None:
        self.s3 = s3
        self._content_type = content_type
        self._abort_wait_s = abort_wait_s
        self.bucket = bucket
        self.key = key
        self.upload_id: str | None = None
        self._metadata = metadata
        self._time_left = time_left or (lambda: float("inf"))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pgkeeper-upload")
        self._slots = threading.BoundedSemaphore(concurrency)
        self._futures: list[Future] = []
        self._etags: dict[int, str] = {}
        self._error: BaseException | None = None

    def _limit(self) -> float | None:
        left = self._time_left()
        return None if left == float("inf") else max(0.0, left)

    def start(self) -> None:
        resp = _bounded(lambda: self.s3.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, ContentType=self._content_type, Metadata=self._metadata,
        ), self._limit(), "creating the multipart upload")
        self.upload_id = resp["UploadId"]

    def submit(self, number: int, data: bytes) -> None:
        """Queue part `number`; blocks while `concurrency` parts are in flight (backpressure), never
        longer than the time left."""
        self._raise_if_failed()
        limit = self._limit()
        if not self._slots.acquire(timeout=limit):
            in_flight = sum(not f.done() for f in self._futures)
            raise Stalled(f"S3 took none of the {in_flight} part(s) in flight within the {limit:.0f} s the "
                          f"run had left, so part {number} could not be handed over (a stalled endpoint?)")
        self._raise_if_failed(release=True)
        self._futures.append(self._pool.submit(self._upload, number, data))

    def _upload(self, number: int, data: bytes) -> None:
        try:
            resp = self.s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
            )
            self._etags[number] = resp["ETag"]
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            raise
        finally:
            self._slots.release()

    def _raise_if_failed(self, release: bool = False) -> None:
        if self._error is not None:
            if release:
                self._slots.release()
            raise Aborted(f"uploading a part of s3://{self.bucket}/{self.key} failed: {_describe(self._error)}")

    def complete(self) -> None:
        limit = self._limit()
        _done, pending = wait(self._futures, timeout=limit)  # the first error is in self._error
        if pending:
            raise Stalled(f"S3 did not finish {len(pending)} of {len(self._futures)} parts within the "
                          f"{limit:.0f} s the run had left (a stalled endpoint?)")
        self._pool.shutdown(wait=True)
        self._raise_if_failed()
        parts = [{"PartNumber": n, "ETag": e} for n, e in sorted(self._etags.items())]
        _bounded(lambda: self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts},
        ), self._limit(), "completing the multipart upload")

    def abort(self) -> str | None:
        """Stop uploading and abort; returns a warning when S3 could not be told (the bucket's
        lifecycle rule then removes the incomplete upload). Waits at most `abort_wait_s` twice (parts
        in flight, then the abort): a part stuck on a stalled S3 is abandoned (it can only fail)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait(self._futures, timeout=self._abort_wait_s)  # parts in flight end first: none lands after the abort
        if self.upload_id is None:
            return None
        upload_id = self.upload_id
        try:
            _bounded(lambda: self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id),
                     self._abort_wait_s, "aborting the multipart upload")
        except Exception as exc:  # the abort is best effort; the original failure is what we raise
            if _error_code(exc) == "NoSuchUpload":
                return None  # already gone (aborted by someone else or by the lifecycle rule)
            code = _describe(exc)
            logger.warning("could not abort the multipart upload", extra={"key": self.key, "error": code})
            return f"the incomplete upload could not be aborted ({code}); the bucket's lifecycle rule removes it"
        return None


def _bounded(call: Callable[[], Any], limit: float | None, what: str) -> Any:
    """`call()` on a daemon thread, waited for at most `limit` seconds (None: as long as it takes)."""
    if limit is None:
        return call()
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="pgkeeper-s3-call", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise Stalled(f"S3 did not answer {what} within {limit:.0f} s (a stalled endpoint?)")
    if error:
        raise error[0]
    return result[0]


def _error_code(exc: BaseException) -> str | None:
    """S3's error code (`NoSuchUpload`) from a botocore ClientError's parsed response, if any."""
    err = getattr(exc, "response", None)
    if isinstance(err, dict) and isinstance(err.get("Error"), dict):
        return str(err["Error"].get("Code") or "") or None
    return None


def _describe(exc: BaseException) -> str:
    code = _error_code(exc)
    if code is not None:
        return f"{code}: {getattr(exc, 'response', {})['Error'].get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class StderrTail:
    """Keeps the last lines a child writes to stderr (for the error message), never the whole."""

    def __init__(self, stream: Any, lines: int = 20) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self._lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def text(self, wait_s: float = 5.0) -> str:
        self._thread.join(wait_s)
        return "\n".join(line for line in self._lines if line)


def _grow_pipe(fd: int) -> None:
    """Fewer, larger reads from pg_dump (Linux only; harmless elsewhere)."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _take(buf: bytearray, size: int) -> bytes:
    """The first `size` bytes of `buf` as one copy (slicing a bytearray would copy twice), removed."""
    with memoryview(buf) as view:
        part = bytes(view[:size])
    del buf[:size]
    return part


class PipeChunks:
    """Iterate over a pipe in chunks of up to `size` bytes, each a view of the same buffer.

    pg_dump writes a few KB at a time; one zstd call per few KB costs measurably more CPU on a
    small Lambda, so each chunk is filled until it is full or the pipe is at EOF. A chunk is valid
    only until the next one is read: the compressor copies what it keeps.
    """

    def __init__(self, stream: Any, size: int) -> None:
        self._stream = stream
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)

    def __iter__(self) -> Iterator[memoryview]:
        view, size = self._view, len(self._buf)
        while True:
            filled = 0
            while filled < size:
                got = self._stream.readinto(view[filled:])
                if not got:
                    break
                filled += got
            if not filled:
                return
            yield view[:filled]
            if filled < size:
                return


def part_size_for(number: int, base: int) -> int:
    return base * (2 ** ((number - 1) // PARTS_PER_SIZE_STEP))


def dump_to_s3(
    argv: list[str],
    env: dict[str, str],
    upload: MultipartUpload,
    *,
    level: int,
    threads: int,
    part_size: int,
    deadline: Callable[[Progress], bool] | None = None,
    on_part: Callable[[Progress], None] | None = None,
    encryptor: Encryptor | None = None,
) -> UploadResult:
    """Run pg_dump (`argv`) and stream its output, compressed (then, with `encryptor`, encrypted),
    into `upload`. The round-trip decode checks the compressed stream; the SHA-256 covers what is stored.

    `deadline(progress)` returning True stops the dump (the Lambda is about to run out of time).
    `on_part(progress)` is called after each part is handed to the uploader.
    """
    progress = Progress(started=time.monotonic())
    sha = hashlib.sha256()
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    comp = cctx.compressobj()
    buf = bytearray()
    number = 1
    proc: subprocess.Popen | None = None
    check = RoundTrip()
    try:
        # pg_dump first: its catalog queries overlap the upload's creation (and, on a cold start,
        # the S3 client's), while the pipe holds what it writes meanwhile.
        # Unbuffered: the reads below fill one reusable buffer straight from the pipe (no new 1 MiB
        # object per read, no second copy in a buffered reader).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, bufsize=0)
        stderr = StderrTail(proc.stderr)
        assert proc.stdout is not None  # stdout=PIPE
        _grow_pipe(proc.stdout.fileno())
        chunks = PipeChunks(proc.stdout, READ_SIZE)
        upload.start()

        def stored(data: bytes) -> bytes:
            """What goes to S3 for compressed `data` (the decoder sees the compressed stream)."""
            if encryptor is None:
                return data
            check.feed(data)
            return encryptor.push(data)

        def emit(data: bytes) -> None:
            nonlocal number
            sha.update(data)
            if encryptor is None:
                check.feed(data)
            upload.submit(number, data)
            progress.parts = number
            progress.bytes_out += len(data)
            number += 1
            if on_part is not None:
                on_part(progress)

        for chunk in chunks:
            progress.bytes_in += len(chunk)
            out = comp.compress(chunk)
            if out and (out := stored(out)):
                buf += out
                while len(buf) >= (size := part_size_for(number, part_size)):
                    emit(_take(buf, size))
            if deadline is not None and deadline(progress):
                raise BackupError(
                    f"out of time after dumping {progress.bytes_in / 1e6:.0f} MB: raise the function's timeout "
                    "(or memory, which brings more CPU) or exclude large tables' data"
                )
        rc = proc.wait()
        if rc != 0:
            how = f"was killed by signal {-rc}" if rc < 0 else f"failed (exit {rc})"
            detail = stderr.text()
            raise BackupError(f"pg_dump {how}" + (f": {detail[-2000:]}" if detail else ""))
        buf += stored(comp.flush())
        if encryptor is not None:
            buf += encryptor.finish()
        while buf:
            emit(_take(buf, part_size_for(number, part_size)))
        check.finish(progress.bytes_in)  # before complete(): a stream that does not decode never appears
        upload.complete()
    except BaseException as exc:
        check.cancel()
        if encryptor is not None:
            encryptor.cancel()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        warning = upload.abort()
        if warning and isinstance(exc, BackupError):
            raise BackupError(f"{exc}; {warning}") from exc
        if isinstance(exc, BackupError | KeyboardInterrupt):
            raise
        raise BackupError(f"backup upload failed: {_describe(exc)}" + (f"; {warning}" if warning else "")) from exc
    finally:
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
    return UploadResult(
        key=upload.key,
        bytes_in=progress.bytes_in,
        bytes_out=progress.bytes_out,
        sha256=sha.hexdigest(),
        parts=progress.parts,
        dump_s=time.monotonic() - progress.started,
        part_size=part_size,
    )
