"""`heartbeat:` pings to a service people already watch (healthchecks.io, Cronitor), per silence window."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field

from ..metric_names import AlarmWindow
from .base import Model


class HeartbeatPlan(Model):
    style: Literal["healthchecks", "cronitor"] = Field(
        "healthchecks",
        description="healthchecks: POST <url>/start, <url> (body: summary), <url>/fail (body: error); "
                    "cronitor: GET <url>?state=run|complete|fail&message=...",
    )
    timeout_s: float = Field(3.0, gt=0, le=30, description="per ping; a ping never delays a job longer")
    urls: dict[AlarmWindow, AnyHttpUrl] = Field(
        default_factory=dict,
        description="ping URL per silence window: refresh, cleanup, vacuum (the weekly VACUUM), analyze (the "
                    "hourly ANALYZE), backup; windows without one are not pinged",
    )
