"""The `signing:` section of the plan: how function URL requests are authenticated.

Secrets never live in the plan: they come from Secrets Manager (`PGKEEPER_WEBHOOK_SECRET_ARN`)
or, for local use, from `PGKEEPER_WEBHOOK_SECRETS`. The plan only says how strict to be.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Model


class SigningPlan(Model):
    tolerance_s: int = Field(
        300, ge=5, le=300,
        description="accepted clock skew of webhook-timestamp, past and future (the library's own cap is 300 s)",
    )
    allow_bearer: bool = Field(
        False,
        description="also accept `Authorization: Bearer <secret>` (weaker: no replay protection, no body binding)",
    )
    replay_store: Literal["postgres", "redis"] = Field(
        "postgres",
        description="where accepted webhook-ids are remembered across Lambda instances; redis: the Redis "
        "the `cache:` section names (Upstash REST or redis://)",
    )
    secret_cache_s: int = Field(
        300, ge=0, le=3600, description="how long a secret read from Secrets Manager is reused before a re-read",
    )
