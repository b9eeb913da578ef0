"""Streams between threads: a file-like reader over chunks, for libraries that pull (zstd's stream
reader, pyrage's streams) from data that arrives pushed (a queue, a download), and the bounded-queue
moves every stage of the pipeline and of a restore makes."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

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
        drain(self)


def drain(stream: Any) -> None:
    """Read `stream` to its end, dropping what it returns (what is left still counts in its hash)."""
    while stream.read(READ_SIZE):
        continue


def put_unless_stopped(box: queue.Queue, item: object, stop: threading.Event, wait_s: float = 0.5) -> bool:
    """Put `item` on a bounded queue, waiting while it is full; False when `stop` is set first (the
    other side has gone: waiting on would hang the thread for ever)."""
    while not stop.is_set():
        try:
            box.put(item, timeout=wait_s)
            return True
        except queue.Full:
            continue
    return False


def empty_then_end(box: queue.Queue, end: object) -> None:
    """Drop what waits in `box` and leave `end` in it: a producer blocked on the full queue goes on,
    and a consumer blocked on the empty one wakes to the end."""
    with contextlib.suppress(queue.Empty):
        while True:
            box.get_nowait()
    with contextlib.suppress(queue.Full):
        box.put_nowait(end)
