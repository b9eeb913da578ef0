"""The `fleet:` section: several databases kept by one deployment.

Each member is named and may override any section of the plan for its database (deep-merged over the
plan: mappings merge, lists and values replace), most often `database:` (its own secret or URL env).
A scheduled run without a database fans out one invocation per member (fleet.py at the top level).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import Model

MEMBER_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
OVERRIDABLE = ("database", "refresh", "cleanup", "vacuum", "backup", "cache", "heartbeat")
"""Sections a member may override; `signing` belongs to the deployment (one function URL)."""


class FleetMember(Model):
    name: str = Field(pattern=MEMBER_NAME, description="names the database in events, keys, metrics and status")
    database: dict[str, Any] | None = Field(None, description="overrides of `database:` (secret_arn, url_env, ...)")
    refresh: dict[str, Any] | None = None
    cleanup: dict[str, Any] | None = None
    vacuum: dict[str, Any] | None = None
    backup: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None
    heartbeat: dict[str, Any] | None = None

    def overrides(self) -> dict[str, Any]:
        return {name: value for name in OVERRIDABLE if (value := getattr(self, name)) is not None}


class FleetPlan(Model):
    concurrency: int = Field(4, ge=1, le=100, description="at most this many members' runs at once")
    poll_s: float = Field(2.0, ge=0.1, le=60, description="how often the fan-out reads its members' run status")
    databases: list[FleetMember] = Field(min_length=1)

    @field_validator("databases")
    @classmethod
    def _unique(cls, members: list[FleetMember]) -> list[FleetMember]:
        seen: set[str] = set()
        for member in members:
            if member.name in seen:
                raise ValueError(f"database name {member.name!r} appears twice")
            seen.add(member.name)
        return members

    def names(self) -> list[str]:
        return [m.name for m in self.databases]

    def member(self, name: str) -> FleetMember | None:
        return next((m for m in self.databases if m.name == name), None)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
