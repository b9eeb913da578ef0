"""Decoding the compressed stream while it is produced: proof that what is uploaded restores.

The check decodes exactly the bytes that are hashed (SHA-256) and uploaded, in the same order,
and zstd verifies its own content checksum as it goes. After the upload, verification reads the
object back and matches that SHA-256: S3 then holds those very bytes, so the object decodes to
what pg_dump wrote without a second full decompression after the upload. The decoder runs in a
thread of its own (zstd releases the GIL), on CPU the dump leaves idle where there is any; after
the upload it would add its whole time (~0.6 s per GB of archive here) to the end of every run.
"""

from __future__ import annotations

import queue
import threading

import zstandard

from .chunks import ChunkReader, empty_then_end
from .errors import BackupError

READ_SIZE = 1024 * 1024


class RoundTrip:
    """Decode what `feed` is given, in a thread; `finish` says whether it came out whole.

    At most `depth` chunks wait for the decoder (they are the same objects the uploader holds, so
    waiting costs no copies); a decoder that falls behind slows the producer instead of growing.
    """

    def __init__(self, *, depth: int = 2) -> None:
        self._chunks: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self.decoded = 0
        self._thread = threading.Thread(target=self._run, name="pgkeeper-roundtrip", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(READ_SIZE)
        source = ChunkReader(self._chunks.get, copy=False)  # None in the queue is the end
        try:
            # zstandard's stubs ask for IO[bytes]; any object with read() is accepted.
            with zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_SIZE,  # type: ignore[arg-type]
                                                           read_across_frames=True) as reader:
                while n := reader.readinto(buf):
                    self.decoded += n
        except BaseException as exc:  # reported by feed()/finish() in the producer's thread
            self._error = exc
            source.drain()

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._failure()
        self._chunks.put(data)

    def finish(self, expected: int) -> None:
        """Wait for the decoder; raise unless the stream decoded to exactly `expected` bytes."""
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._failure()
        if self.decoded != expected:
            raise BackupError(f"the compressed stream decodes to {self.decoded} bytes; pg_dump wrote {expected}: "
                              "nothing was kept")

    def cancel(self) -> None:
        """Stop the decoder without waiting for it (the run is failing for another reason)."""
        if not self._cancelled:
            self._cancelled = True
            empty_then_end(self._chunks, None)

    def _failure(self) -> BackupError:
        exc = self._error
        return BackupError(f"the compressed stream does not decode ({type(exc).__name__}: {exc}): nothing was kept")
