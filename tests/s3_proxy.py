"""An HTTP proxy in front of moto that slows part uploads: one upload stream capped, as one Lambda
stream is (about 12 MB/s in the best published report). Used by the sharded-backup tests and bench."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from quiet_http import QuietHandler, QuietServer


class SlowPartsProxy:
    """Forwards every request to `upstream`; a part upload (PUT ...&partNumber=) first waits
    `delay_for(its size in bytes)` seconds."""

    def __init__(self, upstream: str, delay_for: Callable[[int], float]) -> None:
        target = urlsplit(upstream)

        class Handler(QuietHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "PUT" and "partNumber=" in self.path:
                    time.sleep(delay_for(length))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def max_overlap(intervals: list[tuple]) -> int:
    """The most [start, end] intervals open at one instant (an end and a start at the same instant do
    not overlap): how many runs really ran at once, from their own recorded times."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak
