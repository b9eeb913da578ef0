"""The tests' small HTTP servers (Runtime API, ping services, the Upstash adapter): quiet, threaded."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing: the tests read what was received, not access logs."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return


class QuietServer(ThreadingHTTPServer):
    """Daemon request threads; a client that went away mid-request (a killed function) is no error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
