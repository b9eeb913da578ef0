"""A stalled S3 (the endpoint accepts connections and then answers nothing) must not outrun the
deadline: every wait of the upload is bounded by the time the run has left, the run fails in time
and no object appears. A TCP proxy in front of moto plays the stalled endpoint."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from pgkeeper.backup.pipeline import MultipartUpload, Stalled

BUCKET = "pgk-stall"


class FreezingProxy:
    """Forwards TCP to `upstream` until `freeze()`; after that it reads nothing and answers nothing."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self.frozen.is_set():
                src.settimeout(0.05)
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data or self.frozen.is_set():
                    return
                dst.sendall(data)

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture()
def proxy(aws: str) -> Iterator[FreezingProxy]:
    p = FreezingProxy(aws)
    yield p
    p.close()


def test_a_stalled_s3_fails_the_upload_within_the_time_left_and_nothing_appears(proxy: FreezingProxy, aws: str):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    # The client a run builds (store.s3_client): botocore alone would wait 120 s per call, with retries.
    stalled = boto3.client("s3", endpoint_url=proxy.url, config=Config(retries={"mode": "standard"},
                                                                        read_timeout=120, connect_timeout=10))
    deadline = time.monotonic() + 3.0
    upload = MultipartUpload(stalled, BUCKET, "db/x.dump.zst", concurrency=2, metadata={},
                             time_left=lambda: deadline - time.monotonic(), abort_wait_s=1.0)
    upload.start()
    proxy.freeze()  # from here S3 accepts bytes and never answers
    started = time.monotonic()
    with pytest.raises(Stalled, match="could not be handed over"):
        for number in range(1, 10):
            upload.submit(number, b"x" * (5 * 1024 * 1024))
    assert time.monotonic() - started < 5, "the wait for a free slot must end with the time left"
    warning = upload.abort()
    assert "lifecycle rule removes it" in (warning or "")
    assert time.monotonic() - started < 5 + 2 * 1.0 + 1  # the abort's own waits are bounded too

    healthy = boto3.client("s3")
    assert healthy.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # no object, ever
