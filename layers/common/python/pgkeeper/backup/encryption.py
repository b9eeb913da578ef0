"""age encryption of the stored stream, through pyrage (a binding of rage, age's reference Rust port).

The backup function holds only recipients (public keys), so it can write backups it cannot read;
whoever restores holds an identity (a private key). The stored object is `age(zstd(pg_dump))`: the
standard recipe is `age -d -i key.txt | zstd -d | pg_restore`.

pyrage's streaming calls pull from a reader and push to a writer until EOF, on the calling thread.
The backup pipeline pushes compressed chunks and the restore pulls plaintext, so each side runs
pyrage on a thread of its own between two bounded queues: memory stays a few chunks whatever the size.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .chunks import ChunkReader, empty_then_end, put_unless_stopped
from .errors import BackupError, ChecksumMismatchError, RestoreError

AGE_MAGIC = b"age-encryption.org/v1\n"
_RECIPIENT_STANZAS = (b"-> X25519 ", b"-> ssh-ed25519 ", b"-> ssh-rsa ")
_END = object()
READ_SIZE = 1024 * 1024
_WAIT_S = 0.5


def _pyrage() -> Any:
    try:
        import pyrage  # type: ignore[import-untyped]
    except ImportError as exc:  # the layer ships it; a source checkout without it says what to install
        raise ConfigError("age encryption needs the pyrage package (pip install pyrage)") from exc
    return pyrage


def parse_recipients(texts: Sequence[str]) -> list[Any]:
    """age recipients from their text: `age1...` (X25519) or an SSH public key (`ssh-ed25519 ...`)."""
    pyrage = _pyrage()
    out = []
    for text in texts:
        text = text.strip()
        try:
            if text.startswith("age1"):
                out.append(pyrage.x25519.Recipient.from_str(text))
            elif text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
                out.append(pyrage.ssh.Recipient.from_str(text))
            else:
                raise ValueError("neither an age1… key nor an ssh-ed25519/ssh-rsa public key")
        except (ValueError, pyrage.RecipientError) as exc:
            if text.upper().startswith("AGE-SECRET-KEY"):
                raise ConfigError("not an age recipient: that is a secret key (an identity); give its public key "
                                  "(age-keygen -y key.txt) and keep the secret key out of the plan") from None
            raise ConfigError(f"not an age recipient: {text[:12]!r}…: {exc}") from None
    return out


def check_recipient(text: str) -> str:
    """The plan's validator: the recipient parses (pyrage), or a ValueError naming it."""
    try:
        parse_recipients([text])
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return text.strip()


def parse_identities(text: str, where: str) -> list[Any]:
    """Identities from an age identity file (`age-keygen` output: `AGE-SECRET-KEY-1…` lines, `#`
    comments) or an unencrypted OpenSSH private key."""
    pyrage = _pyrage()
    if "-----BEGIN" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(text.encode())]
        except (ValueError, pyrage.IdentityError) as exc:
            raise ConfigError(f"{where}: not a usable SSH private key (a passphrase-protected key cannot be "
                              f"used): {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except (ValueError, pyrage.IdentityError):
            raise ConfigError(f"{where}: line {number} is not an age identity (AGE-SECRET-KEY-1…)") from None
    if not out:
        raise ConfigError(f"{where} holds no age identity")
    return out


def header_stanzas(head: bytes) -> int | None:
    """How many recipient stanzas (X25519 or SSH) the age header at the start of an object has (None:
    not an age header). Other stanzas are not counted: rage adds a random "grease" stanza.

    The backup function cannot decrypt what it wrote; this is what it can check without a key: the
    object is an age file sealed to as many recipients as the plan names."""
    if not head.startswith(AGE_MAGIC):
        return None
    end = head.find(b"\n---")
    if end < 0:
        return None
    return sum(1 for line in head[:end].split(b"\n") if line.startswith(_RECIPIENT_STANZAS))


class _Collector:
    """The writer pyrage pushes ciphertext to, drained by the pipeline's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: collections.deque[bytes] = collections.deque()

    def write(self, data: bytes) -> int:
        with self._lock:
            self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here (pyrage calls it; `drain` hands the ciphertext on)."""

    def drain(self) -> bytes:
        with self._lock:
            out = b"".join(self._parts)
            self._parts.clear()
        return out


class Encryptor:
    """Compressed bytes in (`push`), age ciphertext out (returned by `push` and `finish` as it is ready)."""

    def __init__(self, recipients: Sequence[Any], *, depth: int = 4) -> None:
        self._in: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._out = _Collector()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(list(recipients),), name="pgkeeper-age", daemon=True)
        self._thread.start()

    def _run(self, recipients: list[Any]) -> None:
        try:
            _pyrage().encrypt_io(ChunkReader(self._next_chunk), self._out, recipients)
        except BaseException as exc:
            self._error = exc

    def _next_chunk(self) -> bytes | None:
        item = self._in.get()
        return None if item is _END or self._stop.is_set() else item

    def _put(self, item: object) -> None:
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise BackupError(f"age encryption failed: {self._error or 'the encryptor stopped'}")
            try:
                self._in.put(item, timeout=_WAIT_S)
                return
            except queue.Full:
                continue

    def push(self, data: bytes) -> bytes:
        if data:
            self._put(data)
        return self._out.drain()

    def finish(self) -> bytes:
        self._put(_END)
        self._thread.join()
        if self._error is not None:
            raise BackupError(f"age encryption failed: {self._error}")
        return self._out.drain()

    def cancel(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._in.put_nowait(_END)


class _QueueWriter:
    """The writer pyrage pushes plaintext to (8 KiB at a time), gathered into chunks of `size` on a
    bounded queue (blocks while the consumer is behind)."""

    def __init__(self, sink: queue.Queue, stop: threading.Event, size: int = 256 * 1024) -> None:
        self._sink = sink
        self._stop = stop
        self._size = size
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= self._size:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._buf:
            return
        chunk, self._buf = bytes(self._buf), bytearray()
        if not put_unless_stopped(self._sink, chunk, self._stop, _WAIT_S):
            raise BrokenPipeError("the restore stopped reading")


class DecryptingReader:
    """A file-like reader of the plaintext of an age stream read from `source` (which hashes what
    it reads: the checksum covers the stored, encrypted bytes)."""

    def __init__(self, source: Any, identities: Sequence[Any], *, depth: int = 8) -> None:
        self._out: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(source, list(identities)), name="pgkeeper-age",
                                        daemon=True)
        self._thread.start()

    def _run(self, source: Any, identities: list[Any]) -> None:
        failed: list[BaseException] = []

        def next_chunk() -> bytes:
            try:
                return source.read(READ_SIZE)
            except BaseException as exc:  # pyrage may wrap it (a DecryptError): keep the original
                failed.append(exc)
                raise

        try:
            writer = _QueueWriter(self._out, self._stop)
            _pyrage().decrypt_io(ChunkReader(next_chunk), writer, identities)
            writer.flush()
            item: object = _END
        except BaseException as exc:
            item = failed[0] if failed else exc
        put_unless_stopped(self._out, item, self._stop, _WAIT_S)

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        item = self._out.get()
        if item is _END:
            self._done = True
            return b""
        if isinstance(item, BaseException):
            self._done = True
            raise _decrypt_error(item)
        return item

    def close(self) -> None:
        self._stop.set()
        empty_then_end(self._out, _END)  # a writer blocked on the full queue sees the stop


def _decrypt_error(exc: BaseException) -> BaseException:
    """pyrage's own failures in our terms; anything else (the download failing under it, which pyrage
    passes through) as it was."""
    pyrage = _pyrage()
    text = str(exc)
    if isinstance(exc, pyrage.DecryptError) and "No matching keys" in text:
        return RestoreError("none of the given identities can decrypt this backup: it is sealed to the "
                            "recipients its manifest lists (encryption.recipients)")
    if isinstance(exc, pyrage.DecryptError) or (type(exc) is OSError and text == "decryption error"):
        return ChecksumMismatchError(f"the object does not decrypt ({text}): it was altered or damaged after upload")
    return exc
