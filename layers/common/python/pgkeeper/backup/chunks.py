"""A file-like reader over a sequence of chunks, for libraries that pull (zstd's stream reader,
pyrage's streams) from data that arrives pushed (a queue, a download)."""

from __future__ import annotations

from collections.abc import Callable

READ_SIZE = 1024 * 1024


class ChunkReader:
    """`read(size)` served from the chunks `next_chunk()` returns (None or empty at the end), in the
    sizes asked for. `copy=False` returns views of the chunks (for a reader that copies what it
    keeps, as zstd does); otherwise bytes."""

    def __init__(self, next_chunk: Callable[[], bytes | memoryview | None], *, copy: bool = True) -> None:
        self._next = next_chunk
        self._copy = copy
        self._chunk = memoryview(b"")
        self._done = False

    def read(self, size: int = -1) -> bytes | memoryview:
        while not self._chunk:
            if self._done:
                return b""
            data = self._next()
            if not data:
                self._done = True
                return b""
            self._chunk = memoryview(data)
        size = len(self._chunk) if size is None or size < 0 else size
        out, self._chunk = self._chunk[:size], self._chunk[size:]
        return bytes(out) if self._copy else out

    def drain(self) -> None:
        """Take and drop chunks until the end, so a producer blocked on a full queue can go on."""
        while self.read(READ_SIZE):
            continue
