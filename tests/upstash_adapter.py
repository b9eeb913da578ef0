"""A local HTTP server speaking Upstash's REST protocol to a real Redis, so the real `upstash-redis`
client runs unchanged in tests, benchmarks and the demo.

What it speaks (https://upstash.com/docs/redis/features/restapi):
- `POST /` with a JSON array body (`["SET", "k", "v"]`) -> `{"result": ...}`; a Redis error ->
  400 `{"error": "ERR ..."}`; also `GET|POST /cmd/arg1/arg2` path commands;
- `POST /pipeline` with an array of commands -> an array of `{"result"}` / `{"error"}`;
- `POST /multi-exec` -> the same, run in MULTI/EXEC; a transaction Redis aborts -> 400 `{"error"}`;
- `Upstash-Encoding: base64` -> every string in a result base64-encoded, except the status "OK";
- `Authorization: Bearer <token>` (or `?_token=`) checked in constant time; else 401 Unauthorized.

Nagle is off on every accepted connection: http.server writes the headers and the body in two
sends, and with Nagle on the second waits for the client's delayed ACK, ~40 ms per call.
"""

from __future__ import annotations

import base64
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from quiet_http import QuietHandler, QuietServer


def encode(value: Any, base64_mode: bool) -> Any:
    """A raw redis-py reply as Upstash puts it in JSON."""
    if isinstance(value, bytes):
        if value == b"OK":
            return "OK"
        return base64.b64encode(value).decode() if base64_mode else value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [encode(v, base64_mode) for v in value]
    if isinstance(value, float):
        return str(value)
    return value  # int, None


def error_text(exc: redis.ResponseError) -> str:
    """Redis' error line as Redis sent it: redis-py strips the generic `ERR ` prefix, put it back."""
    text = str(exc)
    first = text.split(" ", 1)[0]
    return text if first.isupper() and first.isalpha() else f"ERR {text}"


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection, as with Upstash
    server: UpstashAdapter

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve(body=None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(body=self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes | None) -> None:
        url = urlsplit(self.path)
        if not self._authorized(url.query):
            self._reply(401, {"error": "Unauthorized"})
            return
        self.server.count_request()
        b64 = self.headers.get("Upstash-Encoding", "").lower() == "base64"
        path = url.path.rstrip("/")
        try:
            if path in ("/pipeline", "/multi-exec"):
                commands = json.loads(body or b"null")
                if not isinstance(commands, list) or not all(isinstance(c, list) and c for c in commands):
                    raise ValueError("ERR expected a JSON array of command arrays")
                self._reply(200, self._batch(commands, transaction=path == "/multi-exec", b64=b64))
                return
            command = [unquote(p) for p in path.split("/") if p]
            if body and not command:
                command = json.loads(body)
            elif body:
                command.append(body.decode())  # POST /set/key with the value as the body
            if not isinstance(command, list) or not command:
                raise ValueError("ERR expected a JSON array: [command, arg, ...]")
            self._reply(200, {"result": encode(self.server.redis.execute_command(*command), b64)})
        except redis.ResponseError as exc:
            self._reply(400, {"error": error_text(exc)})
        except (ValueError, TypeError) as exc:  # bad JSON or shapes: Upstash answers 400 too
            self._reply(400, {"error": str(exc) if str(exc).startswith("ERR") else f"ERR {exc}"})

    def _batch(self, commands: list[list[Any]], *, transaction: bool, b64: bool) -> list[dict[str, Any]]:
        pipe = self.server.redis.pipeline(transaction=transaction)
        for command in commands:
            pipe.execute_command(*command)
        replies = pipe.execute(raise_on_error=False)
        return [{"error": error_text(r)} if isinstance(r, redis.ResponseError) else {"result": encode(r, b64)}
                for r in replies]

    def _authorized(self, query: str) -> bool:
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else (parse_qs(query).get("_token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class UpstashAdapter(QuietServer):
    """`UpstashAdapter(redis_url, token)`; `.url` is what UPSTASH_REDIS_REST_URL would hold."""

    allow_reuse_address = True

    def __init__(self, redis_url: str, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.token = token
        self.requests = 0
        self._lock = threading.Lock()
        # Raw replies (no response callbacks): the adapter forwards Redis' answer, not redis-py's view of it.
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=30)
        self.redis.response_callbacks.clear()
        self._thread: threading.Thread | None = None

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> UpstashAdapter:
        # A short poll interval: shutdown() waits for the loop to look, 0.5 s by default, at every stop.
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="upstash-adapter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.redis.close()
        if self._thread:
            self._thread.join(timeout=5)


@contextmanager
def running(redis_url: str, token: str = "test-token") -> Iterator[UpstashAdapter]:
    adapter = UpstashAdapter(redis_url, token).start()
    try:
        yield adapter
    finally:
        adapter.stop()
