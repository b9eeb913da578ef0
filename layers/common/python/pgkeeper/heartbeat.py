"""Heartbeat pings: start, success and failure of the runs that prove a silence window alive, sent
the way healthchecks.io and Cronitor expect, with a short timeout.

For teams already watching their crons with one of those services: the same run that emits the
dead-man's-switch metric (metric_names.WORK_PROVEN) pings, so a run that stops happening shows there
too. A ping that fails or hangs never fails or delays the job beyond `timeout_s`; its outcome is in
the run's report (`heartbeat`).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Literal

from .log import logger
from .metric_names import AlarmWindow
from .plan.heartbeat import HeartbeatPlan

Event = Literal["start", "success", "fail"]
_HEALTHCHECKS_SUFFIX = {"start": "/start", "success": "", "fail": "/fail"}
_CRONITOR_STATE = {"start": "run", "success": "complete", "fail": "fail"}
BODY_LIMIT = 10_000
"""Characters of summary or error sent (healthchecks.io keeps 100 kB; a report line is far shorter)."""


@dataclass
class Heartbeat:
    url: str
    style: Literal["healthchecks", "cronitor"]
    timeout_s: float
    outcomes: dict[str, str] = field(default_factory=dict)
    """event -> "ok" or what went wrong, for the run's report."""

    def request(self, event: Event, message: str) -> urllib.request.Request:
        """The ping as the service expects it; the plan admits only http(s) URLs (AnyHttpUrl)."""
        message = message[:BODY_LIMIT]
        if self.style == "cronitor":
            params = {"state": _CRONITOR_STATE[event], **({"message": message} if message else {})}
            sep = "&" if urllib.parse.urlsplit(self.url).query else "?"
            return urllib.request.Request(f"{self.url}{sep}{urllib.parse.urlencode(params)}",  # noqa: S310
                                          method="GET")
        return urllib.request.Request(self.url.rstrip("/") + _HEALTHCHECKS_SUFFIX[event],  # noqa: S310
                                      data=message.encode(), method="POST",
                                      headers={"Content-Type": "text/plain; charset=utf-8"})

    def ping(self, event: Event, message: str = "", *, seconds_left: float | None = None) -> None:
        """Send one ping; never raises. `seconds_left`: the run's remaining budget caps the timeout."""
        timeout = self.timeout_s if seconds_left is None else max(0.1, min(self.timeout_s, seconds_left))
        try:
            with urllib.request.urlopen(self.request(event, message), timeout=timeout) as resp:  # noqa: S310
                resp.read(1024)
            self.outcomes[event] = "ok"
        except urllib.error.HTTPError as exc:
            self.outcomes[event] = f"HTTP {exc.code}"
        except Exception as exc:  # a ping is best effort: any failure is reported, none is raised
            self.outcomes[event] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if self.outcomes[event] != "ok":
            logger.warning(f"heartbeat {event} ping failed", extra={"error": self.outcomes[event]})


def for_window(plan: HeartbeatPlan, window: AlarmWindow | None) -> Heartbeat | None:
    """The window's heartbeat, when the plan names a URL for it."""
    if window is None or window not in plan.urls:
        return None
    return Heartbeat(url=str(plan.urls[window]), style=plan.style, timeout_s=plan.timeout_s)
